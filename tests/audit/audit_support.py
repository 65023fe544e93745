"""Helpers for the audit tests: a fast way to grow a long, valid chain, and raw SQL that bypasses the ORM."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from fleet.audit.models import AuditChainHead, AuditEvent
from fleet.audit.services import event_hash, seal


def fill_chain(
    count: int,
    *,
    start: datetime | None = None,
    step: timedelta = timedelta(seconds=1),
    action: str = "test.bulk",
    cluster_name: str = "",
    scope_group: Any = None,
    batch: int = 2000,
) -> list[int]:
    """Append `count` events with correctly chained hashes by bulk insert: what record() and the sealer write,
    faster. Events recorded before are sealed first, so that they keep their place before these."""
    seal()
    start = start or timezone.now() - count * step
    sequences: list[int] = []
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        sequence, prev = head.sequence, head.hash
        pending: list[AuditEvent] = []
        for i in range(count):
            sequence += 1
            fields: dict[str, Any] = {
                "sequence": sequence,
                "time": start + i * step,
                "actor_id": None,
                "actor_name": "bulk",
                "change_context": "command",
                "request_id": f"bulk-{sequence:08d}",
                "source_address": "",
                "action": action,
                "target_type": "cluster",
                "target_id": str(i),
                "target_repr": f"object {i}",
                "scope_group_id": scope_group.pk if scope_group else None,
                "scope_group_name": scope_group.name if scope_group else "",
                "cluster_name": cluster_name,
                "repository_name": "",
                "before": None,
                "after": {"i": i, "note": "ünïcode ✓"},
                "message": f"bulk event {i}",
                "prev_hash": prev,
            }
            fields["hash"] = prev = event_hash(fields)
            pending.append(AuditEvent(**fields))
            sequences.append(sequence)
            if len(pending) >= batch:
                AuditEvent.objects.bulk_create(pending)
                pending = []
        if pending:
            AuditEvent.objects.bulk_create(pending)
        AuditChainHead.objects.filter(pk=1).update(sequence=sequence, hash=prev)
    return sequences


def raw_sql(sql: str, params: list[Any] | None = None, *, allow_delete: bool = False) -> int:
    """Run SQL outside the ORM; `allow_delete` sets the flag that lets the PostgreSQL trigger pass DELETE."""
    with transaction.atomic(), connection.cursor() as cursor:
        if allow_delete and connection.vendor == "postgresql":
            cursor.execute("SET LOCAL fleetgate.audit_archive = 'on'")
        cursor.execute(sql, params or [])
        count = cursor.rowcount
        if allow_delete and connection.vendor == "postgresql":
            cursor.execute("SET LOCAL fleetgate.audit_archive = 'off'")
    return count


def tamper_update(sql: str, params: list[Any]) -> None:
    """Edit audit rows with raw SQL. On PostgreSQL the append-only trigger is disabled (as a superuser
    could) for the statement and enabled again."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_append_only")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_append_only")


def task_callbacks(callbacks: list[Any]) -> list[Any]:
    """The on-commit callbacks a test captured, without the audit log's own (``record()`` registers its
    sealing hook in every transaction that writes an event): what is left are the tasks queued."""
    from fleet.audit.sealing import seal_after_commit

    return [c for c in callbacks if c is not seal_after_commit]
