"""Receiving a webhook delivery for one repository (the view only reads the body and answers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from fleet.audit.services import record
from fleet.sources.choices import FetchTrigger
from fleet.sources.models import Repository
from fleet.sources.services.repositories import enqueue_fetch
from fleet.sources.webhooks import WebhookStatus, detect_provider, handle_webhook

REJECTED_STATUS = {
    WebhookStatus.UNSIGNED: 401,
    WebhookStatus.FORGED: 403,
    WebhookStatus.MALFORMED: 400,
    WebhookStatus.UNKNOWN_PROVIDER: 400,
    WebhookStatus.TOO_LARGE: 413,
}


@dataclass(frozen=True)
class WebhookOutcome:
    http_status: int
    status: str  # queued | ping | ignored | rejected | not_found
    detail: str = ""
    provider: str | None = None
    queued: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "provider": self.provider, **self.extra}


def _reject(repo: Repository, provider: str | None, reason: str, detail: str, http_status: int,
            delivery: str = "") -> WebhookOutcome:
    # Never the secret, the signature header or the body: provider, reason and a fixed description.
    record("webhook.rejected", repo,
           after={"provider": provider or "unknown", "reason": reason, "detail": detail,
                  "delivery": delivery},
           message=f"webhook rejected ({provider or 'unknown provider'}): {reason}")
    return WebhookOutcome(http_status, "rejected", detail, provider)


def receive_webhook(repository_id: int, headers: Mapping[str, Any], body: bytes | None,
                    *, too_large: bool = False, max_bytes: int = 0) -> WebhookOutcome:
    """Verify a delivery with the repository's secret; queue a fetch for a push to its branch."""
    repo = Repository.objects.filter(pk=repository_id).first()
    if repo is None:
        return WebhookOutcome(404, "not_found", "Not found.")
    provider = detect_provider(headers)
    with transaction.atomic():
        if too_large or body is None:
            return _reject(repo, provider, WebhookStatus.TOO_LARGE,
                           f"body larger than {max_bytes} bytes", 413)
        result = handle_webhook(headers, body, secret=repo.webhook_secret or None)
        if result.status in REJECTED_STATUS:
            return _reject(repo, result.provider or provider, result.status, result.detail,
                           REJECTED_STATUS[result.status], result.delivery_id)
        if result.status is WebhookStatus.PING:
            return WebhookOutcome(200, "ping", "pong", result.provider)
        if result.status is WebhookStatus.IGNORED or result.event is None:
            return WebhookOutcome(202, "ignored", result.detail or "not a push", result.provider)
        event = result.event
        if not repo.enabled:
            return WebhookOutcome(202, "ignored", "the repository is disabled", result.provider)
        if event.branch != repo.branch:
            what = f"branch {event.branch!r}" if event.branch else f"ref {event.ref!r}"
            return WebhookOutcome(202, "ignored", f"{what} is not the followed branch {repo.branch!r}",
                                  result.provider)
        if event.deleted:
            return WebhookOutcome(202, "ignored", "the branch was deleted", result.provider)
        record("webhook.received", repo,
               after={"provider": result.provider, "branch": event.branch, "after": event.after,
                      "forced": event.forced, "commits": event.commit_count, "pusher": event.pusher[:100],
                      "delivery": result.delivery_id},
               message=f"push to {event.branch} by {event.pusher or 'unknown'} ({result.provider}): "
                       f"fetch queued")
        enqueue_fetch(repo, FetchTrigger.WEBHOOK)
    return WebhookOutcome(202, "queued", "fetch queued", result.provider, queued=True,
                          extra={"after": event.after})
