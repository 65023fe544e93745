"""What a webhook endpoint must remember between deliveries, kept in the shared Django cache (``default``):

* replays: each verified delivery's id and its body's digest, per repository, for
  ``FLEETGATE_WEBHOOK_REPLAY_WINDOW`` seconds; a second delivery with either is refused.  A push whose
  signed time (GitHub's ``repository.pushed_at``) is older than the window is refused too, so that a
  captured GitHub push cannot be replayed once the cache has forgotten it.
* rejections: the audit log gets one ``webhook.rejected`` row per repository and reason per
  ``FLEETGATE_WEBHOOK_REJECTION_AUDIT_WINDOW`` seconds; the others are counted, and the count is written
  into the next row, so that a flood of forged deliveries cannot grow the audit log without bound.

The state belongs to one repository row (its id and creation time), so a repository deleted and created
again under the same id starts afresh.  Nothing here holds a secret or a body: ids and digests only.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from fleet.sources.models import Repository

PREFIX = "fleetgate:webhook"
COUNTER_TTL = 30 * 24 * 3600  # an unread count of rejections is kept this long


def replay_window() -> int:
    return max(int(settings.FLEETGATE_WEBHOOK_REPLAY_WINDOW), 1)


def rejection_audit_window() -> int:
    return max(int(settings.FLEETGATE_WEBHOOK_REJECTION_AUDIT_WINDOW), 1)


def _scope(repo: Repository) -> str:
    created = int(repo.created.timestamp() * 1_000_000) if repo.created else 0
    return f"{repo.pk}.{created}"


def _digest(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Claim:
    """A delivery taken as new; ``release`` forgets it again (when its processing failed)."""

    keys: tuple[str, ...]

    def release(self) -> None:
        cache.delete_many(list(self.keys))


@dataclass(frozen=True)
class Replay:
    reason: str  # "replayed" | "stale"
    detail: str


def claim_delivery(repo: Repository, provider: str, delivery_id: str, body: bytes,
                   pushed_at: float | None = None, *, now: float | None = None) -> Claim | Replay:
    """Remember a verified delivery, or say why it is a replay.  Call only after the signature checked
    out: a forged request must not use up a delivery id."""
    window = replay_window()
    now = time.time() if now is None else now
    if pushed_at is not None and now - pushed_at > window:
        age = int(now - pushed_at)
        return Replay("stale", f"the push is {age} seconds old; deliveries older than {window} seconds "
                               f"are refused as replays")
    scope = _scope(repo)
    keys = [f"{PREFIX}:body:{scope}:{_digest(body)}"]
    if delivery_id:
        keys.insert(0, f"{PREFIX}:delivery:{scope}:{provider}:{_digest(delivery_id)}")
    claimed: list[str] = []
    for key in keys:
        if cache.add(key, int(now), timeout=window):
            claimed.append(key)
            continue
        cache.delete_many(claimed)
        what = f"delivery {delivery_id!r}" if ":delivery:" in key else "a delivery with this exact body"
        return Replay("replayed", f"{what} was already received; a delivery is accepted once within "
                                  f"{window} seconds")
    return Claim(tuple(claimed))


def _opens_window(key: str, window: int, now: float) -> bool:
    """True for the first call in a window (atomic through ``cache.add``).  The key holds the window's start,
    so a window shortened by a new setting ends by that setting, not by the expiry set before."""
    if cache.add(key, now, timeout=window):
        return True
    started = cache.get(key)
    if isinstance(started, int | float) and now - started < window:
        return False
    cache.set(key, now, timeout=window)  # two processes may both get here: at most one row more
    return True


def rejection_to_audit(repo: Repository, reason: str, *, now: float | None = None) -> int | None:
    """Whether to audit this rejection: None when one for this repository and reason was audited within
    the window (it is counted instead), else how many were counted since the last audited one."""
    scope = _scope(repo)
    window_key = f"{PREFIX}:rejected:{scope}:{reason}"
    counter_key = f"{PREFIX}:rejected-count:{scope}:{reason}"
    if _opens_window(window_key, rejection_audit_window(), time.time() if now is None else now):
        suppressed = int(cache.get(counter_key) or 0)
        if suppressed:
            try:
                cache.decr(counter_key, suppressed)  # keeps what other processes counted meanwhile
                cache.touch(counter_key, COUNTER_TTL)
            except ValueError:
                pass
        return suppressed
    cache.add(counter_key, 0, timeout=COUNTER_TTL)
    try:
        cache.incr(counter_key)
        cache.touch(counter_key, COUNTER_TTL)  # some backends' incr resets the expiry to the default
    except ValueError:  # expired between add and incr
        cache.set(counter_key, 1, timeout=COUNTER_TTL)
    return None
