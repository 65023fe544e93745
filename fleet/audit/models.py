"""The audit log: append-only, hash-chained events.

Each event stores `hash = SHA-256(prev_hash || canonical JSON of its content)`. Changing, removing or
reordering any stored event breaks the chain from that event on, which `manage.py audit_verify` reports.
The ORM refuses updates and deletes; on PostgreSQL a trigger refuses them too (see the migrations).

An event is written *pending* (no sequence, empty `prev_hash`/`hash`) in the transaction of the change it
records; the sealer (`fleet.audit.sealing.seal`) later gives committed pending events their place in the chain
in one short transaction per batch. Sealing is the one update an event ever gets, and the trigger allows only
that one: from no sequence to a sequence, with the content unchanged.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from fleet.access.restrict import RestrictedQuerySet
from fleet.audit.chain import GENESIS_HASH
from fleet.core.choices import ChangeContext

__all__ = ["GENESIS_HASH", "AuditChainHead", "AuditEvent", "AuditEventQuerySet", "AuditImmutable"]


class AuditImmutable(Exception):
    """Audit events cannot be changed or deleted."""


def log_order(fields: tuple[Any, ...]) -> list[Any]:
    """Ordering by `sequence` means the log's order: sealed events by sequence, then pending ones (no sequence
    yet) in the order they were recorded (id), the order the sealer will most likely give them."""
    ordering: list[Any] = []
    for name in fields:
        if name == "sequence":
            ordering += [F("sequence").asc(nulls_last=True), F("id").asc()]
        elif name == "-sequence":
            ordering += [F("sequence").desc(nulls_first=True), F("id").desc()]
        else:
            ordering.append(name)
    return ordering


class AuditEventQuerySet(RestrictedQuerySet):
    def order_by(self, *field_names: Any) -> AuditEventQuerySet:
        return super().order_by(*log_order(field_names))

    def earliest(self, *fields: Any) -> Any:
        return super().earliest(*log_order(fields))

    def latest(self, *fields: Any) -> Any:
        return super().latest(*log_order(fields))

    def sealed(self) -> AuditEventQuerySet:
        """Events that have their place in the chain (pending ones left out)."""
        return self.filter(sequence__isnull=False)

    def pending(self) -> AuditEventQuerySet:
        return self.filter(sequence__isnull=True)

    def update(self, **kwargs: Any) -> NoReturn:
        raise AuditImmutable("audit events are append-only")

    def delete(self) -> NoReturn:  # type: ignore[override]
        raise AuditImmutable("audit events are append-only; use audit_archive for retention")


class AuditEvent(models.Model):
    # None while pending: recorded and committed, not sealed into the chain yet (hash and prev_hash empty).
    sequence = models.BigIntegerField(unique=True, null=True, blank=True, editable=False)
    time = models.DateTimeField(db_index=True, editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
        related_name="+", editable=False,
    )
    actor_name = models.CharField(max_length=150, blank=True, editable=False)
    change_context = models.CharField(max_length=16, choices=ChangeContext.choices, editable=False)
    request_id = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    source_address = models.CharField(max_length=64, blank=True, editable=False)
    action = models.CharField(max_length=64, db_index=True, editable=False)
    target_type = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    target_id = models.CharField(max_length=64, blank=True, editable=False)
    target_repr = models.CharField(max_length=200, blank=True, editable=False)
    scope_group_id = models.BigIntegerField(null=True, blank=True, db_index=True, editable=False)
    scope_group_name = models.CharField(max_length=63, blank=True, editable=False)
    cluster_name = models.CharField(max_length=63, blank=True, db_index=True, editable=False)
    repository_name = models.CharField(max_length=100, blank=True, db_index=True, editable=False)
    before = models.JSONField(null=True, blank=True, editable=False)
    after = models.JSONField(null=True, blank=True, editable=False)
    message = models.TextField(blank=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)

    objects = AuditEventQuerySet.as_manager()
    scope_path = "scope_group_id"

    class Meta:
        ordering = [F("sequence").desc(nulls_first=True), F("id").desc()]  # pending (newest) first
        indexes = [
            models.Index(fields=["action", "time"]),
            # The sealer's queue: only pending rows are in it, so it stays a few entries long.
            models.Index(fields=["id"], condition=Q(sequence__isnull=True), name="audit_event_pending"),
        ]

    def __str__(self) -> str:
        where = "pending" if self.sequence is None else f"#{self.sequence}"
        return f"{where} {self.action} {self.target_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditImmutable("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise AuditImmutable("audit events are append-only")

    @property
    def pending(self) -> bool:
        """Recorded, not sealed into the chain yet."""
        return self.sequence is None


class AuditChainHead(models.Model):
    """One row: the last sequence number and hash, locked by the sealer while it seals a batch."""

    sequence = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)
    # Where the chain continues from after archiving (the hash of the last archived event).
    base_sequence = models.BigIntegerField(default=0)
    base_hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        verbose_name = "audit chain head"

    def __str__(self) -> str:
        return f"head #{self.sequence} {self.hash[:12]} (base #{self.base_sequence})"
