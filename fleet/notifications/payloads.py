"""The bodies sent to each channel, and the signature of a generic webhook. Django-free: plain data in,
bytes or text out.

A generic webhook is signed like Stripe's and Slack's own webhooks: the receiver computes
``HMAC-SHA256(secret, f"{timestamp}.{body}")`` over the raw body and compares it with the
``X-Fleetgate-Signature`` header (``v1=<hex>``), and refuses a timestamp too far from its clock (replays);
docs/operations.md shows a receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_HEADER = "X-Fleetgate-Signature"
TIMESTAMP_HEADER = "X-Fleetgate-Timestamp"
EVENT_HEADER = "X-Fleetgate-Event"
DELIVERY_HEADER = "X-Fleetgate-Delivery"
SIGNATURE_VERSION = "v1"
PAYLOAD_VERSION = 1


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _lines(payload: dict[str, Any]) -> list[str]:
    where = [f"{k}: {payload[k]}" for k in ("group", "mapping", "repository", "commit") if payload.get(k)]
    lines = [payload.get("summary", "")] if payload.get("summary") else []
    if where:
        lines.append(" · ".join(where))
    for cluster, info in sorted((payload.get("clusters") or {}).items())[:10]:
        text = ", ".join(f"{k}={v}" for k, v in info.items() if v not in (None, "", [], {}))
        lines.append(f"{cluster}: {text}"[:300])
    return lines


def slack(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (also accepted by Mattermost and Rocket.Chat)."""
    link = payload.get("url", "")
    title = f"<{link}|{payload['title']}>" if link else payload["title"]
    text = "\n".join([f"*{title}*", *_lines(payload)])
    return {
        "text": f"{payload['title']}",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}],
    }


def teams(payload: dict[str, Any]) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook (Workflows) message with an Adaptive Card."""
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": payload["title"],
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            *({"type": "TextBlock", "text": line, "wrap": True} for line in _lines(payload)),
        ],
    }
    if payload.get("url"):
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in Fleetgate", "url": payload["url"]}]
    return {
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    }


def email(payload: dict[str, Any]) -> tuple[str, str]:
    """Subject and plain-text body."""
    lines = [*_lines(payload)]
    if payload.get("url"):
        lines += ["", payload["url"]]
    lines += [
        "",
        f"Event {payload['event']} (audit event #{payload['audit_sequence']}) at {payload['time']}.",
    ]
    return f"[Fleetgate] {payload['title']}"[:250], "\n".join(lines) + "\n"
