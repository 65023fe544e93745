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

Who seals: every transaction that recorded events, once, right after it commits (`transaction.on_commit`):
on PostgreSQL the hook only wakes this process's background sealer thread (`BackgroundSealer`, its own
connection), so the writer's commit returns at once and one thread seals what many commits left, in batches;
on SQLite, where writes serialise on the file anyway, the hook seals synchronously. Then the beat task
`fleet.audit.seal` every FLEETGATE_AUDIT_SEAL_INTERVAL seconds as a safety net; and every reader of the chain
first, synchronously (verify, export, archive, the list, notifications' fan-out).

No lost wake-up: a writer's attempt that found the head locked ran after that writer committed, while the
other sealer held the lock; that sealer looks for pending events again *after* letting the head go, so it
sees the writer's event and seals it (or finds the head taken by a third sealer, which does the same).
The background thread clears its wake-up flag before it seals, so a commit that wakes it while it seals
makes it look once more.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
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
    """`record()`'s on-commit hook: wake this process's background sealer (PostgreSQL), or seal here
    (SQLite, or FLEETGATE_AUDIT_SEAL_BACKGROUND=0); never fail the request or task that has committed.
    Inside `sealing_deferred()`, once when the block ends instead."""
    if _deferral.depth:
        _deferral.wanted = True
        return
    if _background_enabled() and BackgroundSealer.wake():
        return
    _seal_logged()


class _Deferral(threading.local):
    depth = 0
    wanted = False


_deferral = _Deferral()


@contextmanager
def sealing_deferred() -> Iterator[None]:
    """One seal for a few short transactions in a row: inside the block, the commit hooks of the transactions
    that recorded events only note it, and the block's end seals once (as the hook would have, in this thread
    or by waking the background sealer). For a unit of work that commits several times in quick succession
    (a rollout slice's claim, finish and advance: three seals on SQLite become one). The events stay pending
    meanwhile, committed; readers seal first, so none reads them unsealed, and if the process dies in the
    block the beat task or the next reader seals them. Nested blocks join the outer one."""
    if _deferral.depth:
        _deferral.depth += 1
        try:
            yield
        finally:
            _deferral.depth -= 1
        return
    _deferral.depth, _deferral.wanted = 1, False
    try:
        yield
    finally:
        _deferral.depth = 0
        if _deferral.wanted:
            _deferral.wanted = False
            seal_after_commit()


def _seal_logged() -> None:
    try:
        seal()
    except Exception:  # the beat task and the next reader seal what this left pending
        log.exception("sealing audit events after commit failed; they stay pending until the next seal")


def _background_enabled() -> bool:
    return connection.vendor == "postgresql" and getattr(settings, "FLEETGATE_AUDIT_SEAL_BACKGROUND", True)


class BackgroundSealer:
    """One thread per process that seals what this process's commits left pending, woken by their hooks.

    Started lazily by the first wake-up in each process (keyed on the PID: a thread started before a fork,
    by Celery's prefork pool or gunicorn, does not exist in the child, which starts its own). The thread has
    its own database connection (Django's are per thread), kept while it is busy and closed after
    `IDLE_CLOSE` seconds without a wake-up, on an error, and when it stops. It loops while pending events
    exist (`seal()` looks again after letting the sealer lock go), and the wake-up flag is cleared before each
    round, so no commit's wake-up is lost. At process exit (atexit, multiprocessing's and Celery's pool
    process shutdown) `stop()` asks it for a last round and waits at most `EXIT_TIMEOUT` seconds; what it
    cannot seal by then the beat task and the next reader seal.
    """

    IDLE_CLOSE = 5.0
    EXIT_TIMEOUT = 5.0
    ERROR_PAUSE = 1.0

    _lock = threading.Lock()
    _current: BackgroundSealer | None = None

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fleetgate-audit-sealer", daemon=True)

    @classmethod
    def wake(cls) -> bool:
        """Wake this process's sealer, starting it if needed; False when it is stopping (seal yourself)."""
        sealer = cls._current
        if sealer is None or sealer.pid != os.getpid() or sealer.ended():
            with cls._lock:
                sealer = cls._current
                if sealer is None or sealer.pid != os.getpid() or sealer.ended():
                    sealer = cls()
                    sealer.thread.start()
                    cls._current = sealer
                    _register_exit(sealer)
        if sealer.stopping.is_set() or not sealer.thread.is_alive():
            return False
        sealer.wakeup.set()
        return True

    def ended(self) -> bool:
        """The thread is gone without being asked to stop (started again by the next wake-up)."""
        return not self.stopping.is_set() and self.thread.ident is not None and not self.thread.is_alive()

    @classmethod
    def running(cls) -> BackgroundSealer | None:
        """This process's sealer, if one is running."""
        sealer = cls._current
        if sealer is None or sealer.pid != os.getpid() or not sealer.thread.is_alive():
            return None
        return sealer

    @classmethod
    def stop(cls, timeout: float | None = None) -> None:
        """Ask this process's sealer for a last round and wait for it (bounded); a no-op in other processes
        and when none runs. The next wake-up starts a new one."""
        sealer = cls._current
        if sealer is None or sealer.pid != os.getpid():
            return
        sealer.stopping.set()
        sealer.wakeup.set()
        if sealer.thread is not threading.current_thread():
            sealer.thread.join(cls.EXIT_TIMEOUT if timeout is None else timeout)
        with cls._lock:
            if cls._current is sealer:
                cls._current = None

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                if not self.wakeup.wait(self.IDLE_CLOSE):
                    self._close()  # idle: no connection held between bursts
                    continue
                self.wakeup.clear()  # before sealing: a commit during the round makes another round
                self._round()
            self._round()  # the last round at exit
        finally:
            self._close()

    @staticmethod
    def _close() -> None:
        try:
            connection.close()
        except Exception:
            log.exception("closing the audit sealer's database connection failed")

    def _round(self) -> None:
        try:
            seal()
        except Exception:
            log.exception("background sealing of audit events failed; retrying, beat seals meanwhile")
            self._close()  # a broken connection is opened again next round
            if not self.stopping.wait(self.ERROR_PAUSE):
                self.wakeup.set()


_exit_hook_pid: int | None = None


def _register_exit(sealer: BackgroundSealer) -> None:
    """Once per process: stop the sealer at exit (atexit). Forked multiprocessing children leave through
    os._exit, after their own finalizers, so one of those too; Celery's pool processes send
    worker_process_shutdown (fleet/audit/apps.py)."""
    global _exit_hook_pid
    if _exit_hook_pid == sealer.pid:
        return
    import multiprocessing.util

    _exit_hook_pid = sealer.pid
    multiprocessing.util.Finalize(None, BackgroundSealer.stop, exitpriority=10)


def _after_fork_in_child() -> None:
    """The parent's sealer thread does not exist here; neither may its lock be held (another thread of the
    parent could have held it at the fork)."""
    BackgroundSealer._lock = threading.Lock()
    BackgroundSealer._current = None


atexit.register(BackgroundSealer.stop)
os.register_at_fork(after_in_child=_after_fork_in_child)


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
    exactly this update through), executemany on SQLite. The ORM's update() refuses audit events.

    On PostgreSQL the batch goes as four arrays (`unnest`), so the statement's text is the same for every
    batch size: psycopg does not parse a query of 4 × 1,000 placeholders on every seal (a fifth of the
    sealer's client time with `VALUES` lists, profiled for issue 19)."""
    quote = connection.ops.quote_name
    table = quote(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            ids, sequences, prevs, digests = (list(column) for column in zip(*updates, strict=True))
            cursor.execute(
                f"UPDATE {table} AS e SET {quote('sequence')} = v.seq, {quote('prev_hash')} = v.prev, "  # noqa: S608 (quoted names, placeholders)
                f"{quote('hash')} = v.digest "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) AS v(id, seq, prev, digest) "
                f"WHERE e.{quote('id')} = v.id AND e.{quote('sequence')} IS NULL",
                [ids, sequences, prevs, digests],
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
