"""Sealing: committed pending audit events get their place in the hash chain, a batch per lock (group commit).

`services.record()` inserts an event *pending* (no sequence, empty hashes) in the transaction of the change it
records, without touching the chain head, so writers never wait for each other on the audit log. `seal()`
then, in a short transaction of its own:

1. becomes the one sealer and locks the chain head row. On PostgreSQL, outside a transaction (a commit
   hook), one round trip tries a session advisory lock and returns at once when another
   session is the sealer; inside a transaction, `SELECT … FOR UPDATE SKIP LOCKED` on the head does the
   same; readers that must see everything sealed (`wait=True`) wait for the head instead. SQLite's
   IMMEDIATE transactions serialise sealers anyway.
2. reads up to `SEAL_BATCH` committed pending events in id order,
3. gives each the next sequence, the previous event's hash as `prev_hash`, and its own hash
   (`chain.event_hash` over the stored values, exactly what `verify()` recomputes), in one UPDATE,
4. moves the head and commits.

Who seals: every transaction that recorded events, once, right after it commits (`transaction.on_commit`);
the beat task `fleet.audit.seal` every FLEETGATE_AUDIT_SEAL_INTERVAL seconds as a safety net; and every reader
of the chain first (verify, export, archive, the list, notifications' fan-out).

No lost wake-up: a writer's attempt that found the head locked ran after that writer committed, while the
other sealer held the lock; that sealer looks for pending events again *after* letting the head go, so it
sees the writer's event and seals it (or finds the head taken by a third sealer, which does the same).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction
from django.db.models import F

from fleet.audit.chain import HASHED_FIELDS, event_hash
from fleet.audit.models import AuditChainHead, AuditEvent

log = logging.getLogger(__name__)

SEAL_BATCH = 1000
# The PostgreSQL advisory lock key that makes one session the sealer ("FGAS", Fleetgate audit sealer).
SEALER_LOCK = 0x46474153
_CONTENT_FIELDS = tuple(name for name in HASHED_FIELDS if name not in ("sequence", "prev_hash"))


class SealError(Exception):
    """The chain head or a pending event changed under the sealer's lock: nothing was sealed."""


def seal(*, wait: bool = False, batch: int = SEAL_BATCH) -> int:
    """Seal every pending event this connection can see (committed ones, and its own transaction's); return
    how many this call sealed.

    Returns without sealing when another sealer holds the head, unless `wait` (readers that must see every
    committed event sealed, such as a notification about one, wait for the head instead).
    """
    if not wait and connection.vendor == "postgresql" and not connection.in_atomic_block:
        return _seal_as_the_sealer(batch)
    total = 0
    took_lock = False
    while AuditEvent.objects.pending().exists():
        sealed = _seal_batch(batch, wait=wait)
        if sealed is None:  # another sealer has the head; it looks again after letting it go
            break
        took_lock = True
        total += sealed  # then look again: writers that found the head locked meanwhile rely on it
    if took_lock and connection.in_atomic_block:
        # Called inside a longer transaction: the head stays locked until it ends, so writers that skip
        # meanwhile rely on us to look again once it has.
        transaction.on_commit(seal_after_commit, robust=True)
    return total


def _seal_as_the_sealer(batch: int) -> int:
    """PostgreSQL, outside a transaction (a writer's commit hook, the beat task): become *the* sealer with one
    round trip (a session advisory lock, `pg_try_advisory_lock`), or leave at once when another process is
    it. The sealer seals batch after batch, lets the lock go, then looks for pending events again: a writer
    whose try failed had committed before it tried, so that look sees its event."""
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [SEALER_LOCK])
            if not cursor.fetchone()[0]:
                return total
        try:
            while True:
                # The head lock too: readers (verify) and archive hold the head, not the advisory lock.
                sealed = _seal_batch(batch, wait=True) or 0
                total += sealed
                if sealed < batch:
                    break
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [SEALER_LOCK])
        if not AuditEvent.objects.pending().exists():
            return total


def seal_after_commit() -> None:
    """`record()`'s on-commit hook: seal, and never fail the request or task that has already committed."""
    try:
        seal()
    except Exception:  # the beat task and the next reader seal what this left pending
        log.exception("sealing audit events after commit failed; they stay pending until the next seal")


def schedule_seal() -> None:
    """Seal once after the current transaction commits (at once outside one); one hook per transaction."""
    if connection.in_atomic_block and any(
        entry[1] is seal_after_commit for entry in connection.run_on_commit
    ):
        return
    transaction.on_commit(seal_after_commit, robust=True)


def _lock_head(*, wait: bool) -> AuditChainHead | None:
    """The head, locked for this transaction; None when another sealer holds it (and not `wait`)."""
    rows = AuditChainHead.objects.filter(pk=1)
    if not connection.features.has_select_for_update:  # SQLite: the IMMEDIATE transaction is the lock
        return AuditChainHead.objects.get_or_create(pk=1)[0]
    head = (rows.select_for_update() if wait else rows.select_for_update(skip_locked=True)).first()
    if head is not None:
        return head
    if rows.exists():
        return None  # locked by another sealer
    AuditChainHead.objects.get_or_create(pk=1)
    return rows.select_for_update().first()


def _seal_batch(limit: int, *, wait: bool) -> int | None:
    with transaction.atomic():
        head = _lock_head(wait=wait)
        if head is None:
            return None
        return _seal_under_lock(head, limit)


def _seal_under_lock(head: AuditChainHead, limit: int) -> int:
    rows = list(AuditEvent.objects.pending().order_by(F("id").asc()).values("id", *_CONTENT_FIELDS)[:limit])
    if not rows:
        return 0
    sequence, prev = head.sequence, head.hash
    updates: list[tuple[int, int, str, str]] = []
    for row in rows:
        sequence += 1
        row["sequence"] = sequence
        row["prev_hash"] = prev
        digest = event_hash(row)
        updates.append((row["id"], sequence, prev, digest))
        prev = digest
    _write(updates)
    moved = AuditChainHead.objects.filter(pk=1, sequence=head.sequence, hash=head.hash).update(
        sequence=sequence, hash=prev
    )
    if moved != 1:
        raise SealError("the audit chain head moved while it was locked; nothing was sealed")
    return len(rows)


def _write(updates: list[tuple[int, int, str, str]]) -> None:
    """Set sequence, prev_hash and hash of still-pending events: one statement on PostgreSQL (the trigger lets
    exactly this update through), executemany on SQLite. The ORM's update() refuses audit events."""
    quote = connection.ops.quote_name
    table = quote(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            values = ", ".join(["(%s::bigint, %s::bigint, %s, %s)"] * len(updates))
            cursor.execute(
                f"UPDATE {table} AS e SET {quote('sequence')} = v.seq, {quote('prev_hash')} = v.prev, "  # noqa: S608 (quoted names, placeholders)
                f"{quote('hash')} = v.digest FROM (VALUES {values}) AS v(id, seq, prev, digest) "
                f"WHERE e.{quote('id')} = v.id AND e.{quote('sequence')} IS NULL",
                [value for update in updates for value in update],
            )
        else:
            cursor.executemany(
                f"UPDATE {table} SET {quote('sequence')} = %s, {quote('prev_hash')} = %s, "  # noqa: S608
                f"{quote('hash')} = %s WHERE {quote('id')} = %s AND {quote('sequence')} IS NULL",
                [(seq, prev, digest, pk) for pk, seq, prev, digest in updates],
            )
        if cursor.rowcount != len(updates):
            raise SealError(
                f"expected to seal {len(updates)} pending events, {cursor.rowcount} were still pending"
            )


@contextmanager
def chain_locked() -> Iterator[AuditChainHead]:
    """Seal what is pending, then hold the chain still (no sealer moves the head) while the caller reads it,
    so that the head and the events read agree.

    On PostgreSQL the head is locked FOR SHARE: sealers skip it (writers are never blocked: their events wait
    as pending) and several readers can hold it together. Once the reader's transaction ends, pending events
    are sealed (sealers that skipped meanwhile rely on that). On SQLite the reads are not isolated from a
    seal committing in between, as before sealing existed.
    """
    seal(wait=True)
    if not connection.features.has_select_for_update:
        yield AuditChainHead.objects.get_or_create(pk=1)[0]
        return
    with transaction.atomic():
        AuditChainHead.objects.get_or_create(pk=1)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {connection.ops.quote_name(AuditChainHead._meta.db_table)} "  # noqa: S608
                "WHERE id = 1 FOR SHARE"
            )
        yield AuditChainHead.objects.get(pk=1)
    if connection.in_atomic_block:
        transaction.on_commit(seal_after_commit, robust=True)
    else:
        seal()
