"""Receiving a webhook delivery for one repository (the view only throttles, reads the body and answers).

In order: the repository (404), the size (413), the signature (401/403), the payload (400), replays (409:
a delivery id or body already received within the replay window, or a GitHub push older than it), then
what the event asks for.  Rejections are audited at most once per repository, reason and window
(``hook_guard.rejection_to_audit``); the rows in between are counted into the next one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from fleet.audit.services import record
from fleet.sources.choices import FetchTrigger
from fleet.sources.models import Repository
from fleet.sources.services.hook_guard import (
    Claim,
    Replay,
    claim_delivery,
    rejection_audit_window,
    rejection_to_audit,
)
from fleet.sources.services.repositories import enqueue_fetch
from fleet.sources.webhooks import WebhookResult, WebhookStatus, detect_provider, handle_webhook

REJECTED_STATUS = {
    WebhookStatus.UNSIGNED: 401,
    WebhookStatus.FORGED: 403,
    WebhookStatus.MALFORMED: 400,
    WebhookStatus.UNKNOWN_PROVIDER: 400,
    WebhookStatus.TOO_LARGE: 413,
}
REPLAY_STATUS = 409


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
    suppressed = rejection_to_audit(repo, str(reason))
    if suppressed is not None:
        window = rejection_audit_window()
        message = f"webhook rejected ({provider or 'unknown provider'}): {reason}"
        if suppressed:
            message += (f"; {suppressed} more rejected for this reason since the last row (one row per "
                        f"{window} seconds)")
        record("webhook.rejected", repo,
               after={"provider": provider or "unknown", "reason": str(reason), "detail": detail,
                      "delivery": delivery, "suppressed": suppressed, "window_seconds": window},
               message=message)
    return WebhookOutcome(http_status, "rejected", detail, provider)


def receive_webhook(repository_id: int, headers: Mapping[str, Any], body: bytes | None,
                    *, too_large: bool = False, max_bytes: int = 0) -> WebhookOutcome:
    """Verify a delivery with the repository's secret; queue a fetch for a push to its branch."""
    repo = Repository.objects.filter(pk=repository_id).first()
    if repo is None:
        return WebhookOutcome(404, "not_found", "Not found.")
    provider = detect_provider(headers)
    claim: Claim | Replay | None = None
    try:
        with transaction.atomic():
            if too_large or body is None:
                return _reject(repo, provider, WebhookStatus.TOO_LARGE,
                               f"body larger than {max_bytes} bytes", 413)
            result = handle_webhook(headers, body, secret=repo.webhook_secret or None)
            if result.status in REJECTED_STATUS:
                return _reject(repo, result.provider or provider, result.status, result.detail,
                               REJECTED_STATUS[result.status], result.delivery_id)
            # Verified: a delivery already received (or a push older than the window) is refused.
            pushed_at = result.event.pushed_at if result.event is not None else None
            claim = claim_delivery(repo, result.provider or "", result.delivery_id, body, pushed_at)
            if isinstance(claim, Replay):
                return _reject(repo, result.provider, claim.reason, claim.detail, REPLAY_STATUS,
                               result.delivery_id)
            return _act(repo, result)
    except BaseException:
        if isinstance(claim, Claim):
            claim.release()  # not processed (nor its fetch queued): a redelivery may try again
        raise


def _act(repo: Repository, result: WebhookResult) -> WebhookOutcome:
    """A verified, new delivery: answer a ping, ignore what is not a push to the followed branch, or
    queue a fetch once the caller's transaction commits."""
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
