"""Shared pieces of the rollout services: state transitions with their audit events, leases, errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fleet.audit.services import record
from fleet.core.errors import DomainError, ErrorKind
from fleet.core.fields import secret_field_names
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.models import Repository


class RolloutError(DomainError):
    """A request the rollout's state or rules refuse; the message says why and ``kind`` what it is (API:
    400 invalid, 403 forbidden, 409 conflict). ``conflict=True`` is short for ``kind=ErrorKind.CONFLICT``."""

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind = ErrorKind.INVALID,
        field: str | None = None,
        conflict: bool = False,
    ) -> None:
        super().__init__(message, kind=ErrorKind.CONFLICT if conflict else kind, field=field)


def lease_seconds() -> float:
    """How long a worker owns a queued or syncing leg without a heartbeat (FLEETGATE_SYNC_LEASE_SECONDS)."""
    return max(1.0, float(settings.FLEETGATE_SYNC_LEASE_SECONDS))


def max_attempts() -> int:
    """Attempts per leg on transient failures (FLEETGATE_SYNC_MAX_ATTEMPTS)."""
    return max(1, int(settings.FLEETGATE_SYNC_MAX_ATTEMPTS))


def backoff(attempt: int, base: float) -> float:
    """Exponential backoff: base, 2 base, 4 base ... at most 60 s."""
    return float(min(60.0, base * (2 ** max(0, attempt - 1))))


def retry_delay(attempt: int) -> float:
    """The pause before task-level attempt ``attempt + 1`` on transient failures (FLEETGATE_SYNC_RETRY_BASE:
    2, 4, 8 ... at most 60 s)."""
    return backoff(attempt, float(settings.FLEETGATE_SYNC_RETRY_BASE))


def lease_from_now(extra: float = 0.0) -> Any:
    return timezone.now() + timedelta(seconds=lease_seconds() + extra)


# What the rollout services read with a rollout: its mapping's group and repository, its commit.
_RELATED = ("mapping__cluster_group", "mapping__repository", "commit__repository")
# ... without the repositories' credentials: nothing a rollout step does reads them (a render from git loads
# them when it needs them), and each would be decrypted on every read of the rollout, several per slice.
_DEFERRED = tuple(
    f"{path}__{name}"
    for path in ("mapping__repository", "commit__repository")
    for name in sorted(secret_field_names(Repository))
)


def locked_rollout(rollout_id: int) -> Rollout:
    """The rollout row, locked for the current transaction (callers run inside transaction.atomic).

    FOR NO KEY UPDATE, not FOR UPDATE: nothing here changes a rollout's key, and a leg's finish that writes
    a row referring to the rollout (its synced state) takes the key-share lock of that reference; FOR
    UPDATE would make it wait for every advance."""
    return (
        Rollout.objects.select_for_update(of=("self",), no_key=True)
        .select_related(*_RELATED).defer(*_DEFERRED)
        .get(pk=rollout_id)
    )


def locked_rollout_unless_busy(rollout_id: int) -> Rollout | None:
    """The rollout row locked for the current transaction, or None at once when another transaction holds
    its lock (SKIP LOCKED; on SQLite, which has no row locks, always the row). Unordered: one row by its
    key (``first()`` would compile the model's ordering on every leg's end)."""
    rows = list(
        Rollout.objects.select_for_update(of=("self",), skip_locked=True, no_key=True)
        .select_related(*_RELATED).defer(*_DEFERRED).filter(pk=rollout_id).order_by()
    )
    return rows[0] if rows else None


def current_rollout(rollout_id: int) -> Rollout:
    """The rollout row as committed now, not locked: what a leg's claim and finish read. They lock only
    their leg's row, so a thousand legs finishing at once do not queue on one rollout row; a change of the
    rollout (cancel, pause, halt) that commits while a leg is claimed or finished is ordered after it, as
    if the leg had been claimed a moment earlier (cancel and pause let legs in flight finish). The group's
    allow-list comes in the same query (the leg's apply checks it; one query per leg otherwise)."""
    return (
        Rollout.objects.select_related(*_RELATED, "mapping__cluster_group__allow_list").defer(*_DEFERRED)
        .get(pk=rollout_id)
    )


def transition(rollout: Rollout, state: str, reason: str = "", action: str = "", **fields: Any) -> None:
    """Move the rollout to ``state`` and record it (``rollout.<state>`` unless ``action`` says otherwise)."""
    before = {"state": rollout.state, "reason": rollout.reason}
    rollout.state = state
    rollout.reason = reason
    for name, value in fields.items():
        setattr(rollout, name, value)
    if (
        state in ("synced", "failed", "cancelled", "superseded", "blocked", "rejected")
        and not rollout.finished_at
    ):
        rollout.finished_at = timezone.now()
    rollout.save(update_fields=["state", "reason", "finished_at", "updated", *fields])
    record(
        action or f"rollout.{state}",
        rollout,
        before=before,
        after={"state": state, "reason": reason, "commit": rollout.commit.sha},
        message=reason,
        repository=rollout.mapping.repository,
    )


def note(rollout: Rollout, action: str, message: str, **after: Any) -> None:
    """An audit event about a rollout that is not a state change (pause, batch start, approval...)."""
    record(
        action,
        rollout,
        after={"state": rollout.state, **after},
        message=message,
        repository=rollout.mapping.repository,
    )


def sync_event(cs: ClusterSync, action: str, message: str = "", **after: Any) -> None:
    record(
        action,
        cs,
        after={"state": cs.state, "rollout": cs.rollout_id, "commit": cs.rollout.commit.sha, **after},
        message=message,
        scope=cs.rollout.mapping.cluster_group,
        cluster=cs.cluster,
        repository=cs.rollout.mapping.repository,
    )


def atomic() -> Any:
    return transaction.atomic()
