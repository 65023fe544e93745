"""Recording and verifying audit events. Every write in Fleetgate calls `record()` once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from fleet.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from fleet.audit.redact import redact, snapshot
from fleet.core import context

HASHED_FIELDS = (
    "sequence",
    "time",
    "actor_id",
    "actor_name",
    "change_context",
    "request_id",
    "source_address",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "scope_group_id",
    "scope_group_name",
    "cluster_name",
    "repository_name",
    "before",
    "after",
    "message",
    "prev_hash",
)


def _time_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: dict[str, Any]) -> str:
    content = {name: fields.get(name) for name in HASHED_FIELDS}
    content["time"] = _time_text(content["time"])
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256((fields["prev_hash"] + canonical(fields)).encode()).hexdigest()


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
    """Append one event to the chain, in the caller's transaction, as the current actor.

    `before`/`after` are redacted again here, whatever the caller passed.
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
        "actor_name": (user.get_username() if user else "system")[:150],
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
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        fields["sequence"] = head.sequence + 1
        fields["prev_hash"] = head.hash
        fields["hash"] = event_hash(fields)
        event = AuditEvent(**fields)
        event.save()
        head.sequence = fields["sequence"]
        head.hash = fields["hash"]
        head.save(update_fields=["sequence", "hash"])
    return event


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def record_change(action: str, instance: models.Model, before: dict[str, Any] | None, **kwargs: Any) -> AuditEvent:
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


def _fields_of(event: AuditEvent) -> dict[str, Any]:
    fields = {name: getattr(event, name) for name in HASHED_FIELDS}
    fields["prev_hash"] = event.prev_hash
    return fields


def iter_chain(queryset: models.QuerySet | None = None, chunk_size: int = 2000) -> Iterator[AuditEvent]:
    qs = queryset if queryset is not None else AuditEvent.objects.all()
    return qs.order_by("sequence").iterator(chunk_size=chunk_size)


def verify() -> VerifyResult:
    """Walk the whole chain; name the first event whose content or link does not match."""
    head = AuditChainHead.objects.filter(pk=1).first()
    expected_prev = head.base_hash if head else GENESIS_HASH
    expected_seq = (head.base_sequence if head else 0) + 1
    checked = 0
    last_hash = expected_prev
    for event in iter_chain():
        if event.sequence != expected_seq:
            return VerifyResult(False, checked, last_hash, expected_seq, f"event #{expected_seq} is missing")
        if event.prev_hash != expected_prev:
            return VerifyResult(False, checked, last_hash, event.sequence, "link to the previous event is broken")
        if event_hash(_fields_of(event)) != event.hash:
            return VerifyResult(False, checked, last_hash, event.sequence, "content does not match its hash")
        expected_prev = last_hash = event.hash
        expected_seq += 1
        checked += 1
    if head and (head.sequence != expected_seq - 1 or head.hash != last_hash):
        return VerifyResult(
            False, checked, last_hash, expected_seq, f"the chain ends at #{expected_seq - 1} but the head is #{head.sequence}"
        )
    return VerifyResult(True, checked, last_hash)
