"""Recording and verifying audit events. Every write in Fleetgate calls `record()` once.

`record()` writes the event pending in the caller's transaction; `sealing.seal()` chains it after the commit
(see fleet/audit/sealing.py). Readers of the chain (`verify()`, `chain_rows()`) read sealed events only, and
`verify()` seals first.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import F
from django.db.models.signals import post_save
from django.utils import timezone

from fleet.audit.chain import GENESIS_HASH, HASHED_FIELDS, canonical, check_chain, event_hash, time_text
from fleet.audit.models import AuditChainHead, AuditEvent
from fleet.audit.redact import redact, snapshot
from fleet.audit.sealing import chain_locked, schedule_seal, seal
from fleet.core import context
from fleet.observability import metrics


def _scope_of(target: Any, scope: Any) -> tuple[int | None, str]:
    if scope is None and target is not None:
        scope = getattr(target, "audit_scope", None)
        if callable(scope):
            scope = scope()
        if scope is None and type(target).__name__ == "ClusterGroup":
            scope = target
    if scope is None:
        return None, ""
    return scope.pk, scope.name


def record(
    action: str,
    target: models.Model | None = None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    message: str = "",
    scope: Any = None,
    cluster: Any = None,
    repository: Any = None,
    target_type: str = "",
    target_id: str = "",
    target_repr: str = "",
) -> AuditEvent:
    """Record one event in the caller's transaction (rolled back with it), as the current actor.

    The event is pending: it has no sequence or hash yet and takes no lock, so writers do not wait for each
    other. It is sealed into the chain right after the caller's transaction commits (`sealing.seal()`, one
    lock per batch of events), or by the next reader or the beat task. `before`/`after` are redacted again
    here, whatever the caller passed.
    """
    ctx = context.current()
    user = ctx.user if ctx.user is not None and getattr(ctx.user, "pk", None) else None
    scope_id, scope_name = _scope_of(target, scope)
    if target is not None:
        target_type = target_type or target._meta.model_name or ""
        target_id = target_id or str(target.pk or "")
        target_repr = target_repr or str(target)[:200]
    if cluster is None and target is not None and type(target).__name__ == "Cluster":
        cluster = target
    if repository is None and target is not None and type(target).__name__ == "Repository":
        repository = target
    fields: dict[str, Any] = {
        "time": timezone.now(),
        "actor_id": user.pk if user else None,
        "actor_name": (user.get_username() if user else ctx.operator or "system")[:150],
        "change_context": ctx.change_context,
        "request_id": ctx.request_id,
        "source_address": ctx.source_address,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "target_repr": target_repr[:200],
        "scope_group_id": scope_id,
        "scope_group_name": scope_name,
        "cluster_name": getattr(cluster, "name", cluster or "") or "",
        "repository_name": getattr(repository, "name", repository or "") or "",
        "before": _jsonable(redact(before)) if before is not None else None,
        "after": _jsonable(redact(after)) if after is not None else None,
        "message": message,
    }
    event = AuditEvent(**fields)
    pending = _batch.events
    if pending is not None:
        pending.append(event)  # inserted with the rest of the batch when it ends (`batched()`)
        return event
    event.save()
    schedule_seal()
    return event


class _Batch(threading.local):
    events: list[AuditEvent] | None = None


_batch = _Batch()


@contextmanager
def batched() -> Iterator[list[AuditEvent]]:
    """Batched appends: inside the block, `record()` collects its events (same fields, same actor and
    context) and the block's end inserts them all with one statement, in the order recorded, then schedules
    one seal. For loops that record an event per item in one transaction (a slice of a rollout's legs):
    one insert instead of one per event, each event still its own row with its own detail. Use it inside
    the transaction (events are written when the block ends; an exception inside writes none, as the
    transaction rolls back anyway). Nested blocks join the outer one. Yields the list of collected events
    (their ids are set once the block has ended)."""
    if _batch.events is not None:
        yield _batch.events
        return
    events: list[AuditEvent] = []
    _batch.events = events
    try:
        yield events
    finally:
        _batch.events = None
    if events:
        AuditEvent.objects.bulk_create(events, batch_size=BULK_BATCH)
        for event in events:  # what each event's save() would have signalled (the notifications' hook)
            post_save.send(sender=AuditEvent, instance=event, created=True, update_fields=None, raw=False,
                           using=event._state.db)
        schedule_seal()


# Rows per INSERT statement in `batched()` (SQLite's limit of bound variables: 20 fields per row).
BULK_BATCH = 1000


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def record_change(
    action: str, instance: models.Model, before: dict[str, Any] | None, **kwargs: Any
) -> AuditEvent:
    """Record a create/update/delete of a model instance with its redacted before/after snapshots."""
    after = snapshot(instance) if not action.endswith(".delete") else None
    return record(action, instance, before=before, after=after, **kwargs)


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    head_hash: str
    first_bad_sequence: int | None = None
    reason: str = ""
    first_bad_id: int | None = None


def iter_chain(queryset: models.QuerySet | None = None, chunk_size: int = 2000) -> Iterator[AuditEvent]:
    """Sealed events in sequence order (pending ones are not in the chain yet; `seal()` first)."""
    qs = queryset if queryset is not None else AuditEvent.objects.all()
    return qs.filter(sequence__isnull=False).order_by(F("sequence").asc()).iterator(chunk_size=chunk_size)


def chain_rows(queryset: models.QuerySet | None = None, chunk_size: int = 2000) -> Iterator[dict[str, Any]]:
    """The sealed events as plain dicts (every hashed field, id and hash), in sequence order, in constant
    memory."""
    qs = queryset if queryset is not None else AuditEvent.objects.all()
    return (
        qs.filter(sequence__isnull=False)
        .order_by(F("sequence").asc())
        .values("id", *HASHED_FIELDS, "hash")
        .iterator(chunk_size=chunk_size)
    )


def _head_mismatch(
    head: AuditChainHead, last_sequence: int, last_hash: str, checked: int
) -> VerifyResult | None:
    """Compare the end of a chain that links up with the head (sequence and hash); name the first event that
    does not agree with it, with a reason that says what the head records."""
    if last_sequence == head.sequence and last_hash == head.hash:
        return None
    if last_sequence == head.sequence:
        # Every link holds, but the last event is not the one the head recorded: it was edited and its own
        # hash recomputed (there is no next event whose link would break).
        edited = AuditEvent.objects.filter(sequence=last_sequence).values("id", "prev_hash").first()
        return VerifyResult(
            False,
            max(checked - 1, 0),
            edited["prev_hash"] if edited else last_hash,
            last_sequence,
            f"content of the last event #{last_sequence} was changed and its hash recomputed "
            f"(the chain head records hash {head.hash[:12]}…, the event now hashes to {last_hash[:12]}…)",
            edited["id"] if edited else None,
        )
    if last_sequence < head.sequence:
        missing = (
            f"event #{head.sequence} is"
            if last_sequence + 1 == head.sequence
            else f"events #{last_sequence + 1} to #{head.sequence} are"
        )
        return VerifyResult(
            False,
            checked,
            last_hash,
            last_sequence + 1,
            f"{missing} missing "
            f"(the chain ends at #{last_sequence}, the chain head records #{head.sequence})",
        )
    extra = AuditEvent.objects.filter(sequence=head.sequence + 1).values_list("id", flat=True).first()
    return VerifyResult(
        False,
        checked - (last_sequence - head.sequence),
        head.hash,
        head.sequence + 1,
        f"event #{head.sequence + 1} was added outside the audit log "
        f"(the chain head records #{head.sequence}, the chain goes on to #{last_sequence})",
        extra,
    )


def verify() -> VerifyResult:
    """Seal what is pending, then walk the whole chain with the head held still; name the first event whose
    content or link does not match (and tell the metrics when and with what result). Events recorded while
    it runs stay pending until it ends; they are not part of what it checked."""
    with chain_locked() as head:
        result = _verify(head)
    metrics.audit_verification(result.ok)
    return result


def _verify(head: AuditChainHead | None) -> VerifyResult:
    base_sequence = head.base_sequence if head else 0
    base_hash = head.base_hash if head else GENESIS_HASH
    result = check_chain(chain_rows(), start_sequence=base_sequence, start_hash=base_hash)
    if not result.ok:
        return VerifyResult(
            False,
            result.checked,
            result.last_hash,
            result.first_bad_sequence,
            result.reason,
            result.first_bad_id,
        )
    if head is not None:
        mismatch = _head_mismatch(head, result.last_sequence, result.last_hash, result.checked)
        if mismatch is not None:
            return mismatch
    return VerifyResult(True, result.checked, result.last_hash)


__all__ = [
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "VerifyResult",
    "canonical",
    "chain_rows",
    "event_hash",
    "iter_chain",
    "record",
    "record_change",
    "seal",
    "time_text",
    "verify",
]
