"""Sealing (issue 19): record() writes a pending event in the caller's transaction without touching the chain
head; the sealer chains committed pending events a batch per lock. Concurrent writers leave one gapless chain
that verifies, a rolled-back writer leaves nothing, and one writer's open transaction does not hold up
another. On PostgreSQL the commit hook only wakes the process's background sealer thread: the committing
thread runs no sealing statement, and a forked child process seals its own events.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from fleet.audit.models import AuditChainHead, AuditEvent
from fleet.audit.sealing import BackgroundSealer, seal_after_commit
from fleet.audit.services import record, seal, verify
from fleet.core.context import acting
from tests.audit.audit_support import raw_sql, tamper_update

postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL)")


class Rollback(Exception):
    pass


def _hooks() -> list[Any]:
    return [entry[1] for entry in connection.run_on_commit if entry[1] is seal_after_commit]


def _wait_until_sealed(*pks: int, limit: float = 60) -> None:
    """Committed events sealed by whoever seals after commit (on PostgreSQL the background sealer thread):
    poll, bounded. Nothing here calls seal()."""
    deadline = time.monotonic() + limit
    events = AuditEvent.objects.filter(pk__in=pks) if pks else AuditEvent.objects.all()
    while events.filter(sequence__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.django_db
def test_an_event_is_pending_until_sealed_and_one_hook_seals_a_whole_transaction() -> None:
    with acting(change_context="command"), transaction.atomic():
        events = [record("test.pending", target_type="thing", target_id=str(i)) for i in range(5)]
        assert all(e.sequence is None and e.prev_hash == e.hash == "" for e in events)
        assert AuditChainHead.objects.filter(pk=1, sequence__gt=0).count() == 0  # the head was not touched
        assert len(_hooks()) == 1  # one seal after commit for the transaction, not one per event
    assert AuditEvent.objects.pending().count() == 5
    assert seal(batch=2) == 5  # three batches of at most two, one lock each
    stored = list(AuditEvent.objects.order_by("sequence"))
    assert [e.sequence for e in stored] == [1, 2, 3, 4, 5]
    assert [e.target_id for e in stored] == ["0", "1", "2", "3", "4"]  # in the order recorded
    assert AuditChainHead.objects.get(pk=1).sequence == 5
    result = verify()
    assert result.ok and result.checked == 5 and result.head_hash == stored[-1].hash
    assert seal() == 0


@pytest.mark.django_db
def test_the_commit_hook_seals_and_a_rolled_back_writer_leaves_no_event(
    django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    """The hook run in the test's own transaction: the synchronous path (SQLite's, or PostgreSQL with
    FLEETGATE_AUDIT_SEAL_BACKGROUND=0); a background thread could not see this uncommitted transaction. The
    background path: test_the_commit_hook_only_wakes_the_background_sealer."""
    settings.FLEETGATE_AUDIT_SEAL_BACKGROUND = False
    with acting(change_context="command"):
        with django_capture_on_commit_callbacks(execute=True) as hooks, transaction.atomic():
            kept = record("test.kept", target_type="thing")
        assert hooks[0] is seal_after_commit  # (the seal inside the test's transaction adds a re-check)
        with pytest.raises(Rollback), transaction.atomic():
            record("test.rolled_back", target_type="thing")
            raise Rollback
    assert AuditEvent.objects.get(pk=kept.pk).sequence == 1
    assert not AuditEvent.objects.filter(action="test.rolled_back").exists()
    assert verify().ok


@pytest.mark.django_db
def test_verify_and_the_list_seal_pending_events_first(admin_client: Any) -> None:
    with acting(change_context="command"):
        for i in range(3):
            record("test.listed", target_type="thing", target_id=str(i))
    rows = admin_client.get("/api/audit/events/", {"action": "test.listed"}).json()["results"]
    assert [row["sequence"] for row in rows] == [3, 2, 1]
    assert all(len(row["hash"]) == 64 for row in rows)
    record("test.later", target_type="thing")
    result = verify()
    assert result.ok and result.checked == 4
    assert not AuditEvent.objects.pending().exists()


@pytest.mark.django_db
def test_tampering_with_a_sealed_event_is_found() -> None:
    """Tampering after sealing is found as before; on PostgreSQL the trigger also guards the short pending
    window (test_postgres_trigger_lets_only_sealing_through)."""
    with acting(change_context="command"):
        record("test.a", target_type="thing")
        record("test.b", target_type="thing")
    seal()
    tamper_update("UPDATE audit_auditevent SET message = %s WHERE sequence = %s", ["rewritten", 1])
    result = verify()
    assert not result.ok and result.first_bad_sequence == 1
    assert result.reason == "content does not match its hash"


@pytest.mark.postgres
@postgres
@pytest.mark.django_db
def test_postgres_trigger_lets_only_sealing_through() -> None:
    with acting(change_context="command"):
        pending = record("test.pending", target_type="thing", message="as recorded")
    # A pending event's content cannot be changed, nor can it be deleted.
    for sql in (
        "UPDATE audit_auditevent SET message = 'edited' WHERE id = %s",
        "UPDATE audit_auditevent SET sequence = 99, prev_hash = 'x', hash = 'y', message = 'edited' "
        "WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            raw_sql(sql, [pending.pk])
    # Nor can sealing carry an edit of any content column along with it.
    content = [
        f"{f.column} = {f.column} || 'x'"
        for f in AuditEvent._meta.concrete_fields
        if f.get_internal_type() in ("CharField", "TextField") and f.name not in ("prev_hash", "hash")
    ]
    content += ["time = time + interval '1 second'", "after = '{\"x\": 1}'::jsonb", "actor_id = 42"]
    content += ["scope_group_id = 42", "before = '{}'::jsonb"]
    for change in content:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            sql = "UPDATE audit_auditevent SET sequence = 1, prev_hash = 'p', hash = 'h', " + change  # noqa: S608 (the test's own column list)
            raw_sql(sql + " WHERE id = %s", [pending.pk])
    assert seal() == 1
    # Once sealed, not even the sealing columns can change again (nor go back to pending).
    for sql in (
        "UPDATE audit_auditevent SET sequence = NULL, prev_hash = '', hash = '' WHERE id = %s",
        "UPDATE audit_auditevent SET sequence = 7 WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            raw_sql(sql, [pending.pk])
    event = AuditEvent.objects.get(pk=pending.pk)
    assert (event.sequence, event.message) == (1, "as recorded")
    assert verify().ok


def _writer(index: int, count: int, errors: list[BaseException], start: threading.Barrier) -> None:
    """A thread with its own database connection: `count` transactions that each record an event and commit
    (the commit hook seals), every fifth rolled back after recording."""
    try:
        start.wait()
        with acting(change_context="task"):
            for i in range(count):
                try:
                    with transaction.atomic():
                        record("test.concurrent", target_type="writer", target_id=f"{index}-{i}")
                        if i % 5 == 4:
                            raise Rollback
                except Rollback:
                    pass
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_leave_one_gapless_chain_with_no_pending_event_behind() -> None:
    """Real threads, each its own connection and transactions, committing while others seal. Nobody calls
    seal() here: the commit hooks alone (on PostgreSQL by waking the background sealer) must seal every event
    (no lost wake-up when a hook finds the head locked or the sealer busy)."""
    writers, per_writer = 8, 25
    errors: list[BaseException] = []
    start = threading.Barrier(writers)
    threads = [threading.Thread(target=_writer, args=(n, per_writer, errors, start)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    _wait_until_sealed()

    kept = writers * per_writer * 4 // 5
    assert AuditEvent.objects.pending().count() == 0
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, kept + 1))  # no gap, no duplicate
    targets = set(AuditEvent.objects.values_list("target_id", flat=True))
    assert targets == {f"{n}-{i}" for n in range(writers) for i in range(per_writer) if i % 5 != 4}
    head = AuditChainHead.objects.get(pk=1)
    assert head.sequence == kept
    result = verify()
    assert result.ok and result.checked == kept and result.head_hash == head.hash


@pytest.mark.postgres
@postgres
@pytest.mark.django_db(transaction=True)
def test_an_open_transaction_with_a_recorded_event_does_not_hold_up_another_writer() -> None:
    """Writer A records an event and keeps its transaction open; writer B, on another connection, records and
    commits with a lock timeout: had B to wait for any lock A holds (as it waited for the chain head before
    sealing existed), it would fail. B's event is sealed at once; A's follows when A commits."""
    recorded, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer_a() -> None:
        try:
            with acting(change_context="task"), transaction.atomic():
                record("test.slow_writer", target_type="writer", target_id="a")
                recorded.set()
                release.wait(timeout=120)
        except BaseException as exc:
            errors.append(exc)
        finally:
            recorded.set()
            connections.close_all()

    thread = threading.Thread(target=writer_a)
    thread.start()
    try:
        recorded.wait(timeout=120)
        assert errors == []
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '500ms'")
        try:
            with acting(change_context="task"), transaction.atomic():
                b = record("test.fast_writer", target_type="writer", target_id="b")
            # Committed; sealed after its commit while A's transaction is still open.
            _wait_until_sealed(b.pk)
            assert AuditEvent.objects.get(pk=b.pk).sequence == 1
            assert not AuditEvent.objects.filter(action="test.slow_writer").exists()  # not committed yet
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
    finally:
        release.set()
        thread.join()
    assert errors == []
    a = AuditEvent.objects.get(action="test.slow_writer")
    _wait_until_sealed(a.pk)
    a.refresh_from_db()
    assert a.sequence == 2  # sealed after A's own commit
    assert verify().ok


@pytest.mark.postgres
@postgres
@pytest.mark.django_db(transaction=True)
def test_the_commit_hook_only_wakes_the_background_sealer(settings: Any) -> None:
    """The committing thread runs no sealing statement (no sealer lock, no head, no update): its commit hook
    wakes this process's sealer thread, which seals the event on its own connection."""
    settings.FLEETGATE_AUDIT_SEAL_BACKGROUND = True  # as deployed (the suite seals in the test thread)
    with CaptureQueriesContext(connection) as queries:
        with acting(change_context="command"), transaction.atomic():
            event = record("test.background", target_type="thing")
    statements = [query["sql"] for query in queries.captured_queries]
    assert not [sql for sql in statements if "advisory" in sql or "audit_auditchainhead" in sql]
    assert not [sql for sql in statements if sql.startswith("UPDATE")]
    sealer = BackgroundSealer.running()
    assert sealer is not None and sealer.thread is not threading.current_thread()
    _wait_until_sealed(event.pk)
    assert AuditEvent.objects.get(pk=event.pk).sequence == 1
    assert verify().ok


def _forked_writer() -> None:
    """In a forked child: the parent's sealer thread is not here; the first commit starts the child's own,
    which seals its event; an event committed just before the child exits is sealed by the last round."""
    with acting(change_context="task"), transaction.atomic():
        first = record("test.forked", target_type="child", target_id="first")
    sealer = BackgroundSealer.running()
    assert sealer is not None and sealer.pid == os.getpid()
    _wait_until_sealed(first.pk)
    assert AuditEvent.objects.get(pk=first.pk).sequence is not None
    with acting(change_context="task"), transaction.atomic():
        record("test.forked", target_type="child", target_id="at-exit")
    connections["default"].close()  # the sealer thread has its own connection


@pytest.mark.postgres
@postgres
@pytest.mark.django_db(transaction=True)
def test_a_forked_child_process_seals_its_own_events(settings: Any) -> None:
    """multiprocessing fork (as Celery's prefork pool and gunicorn fork): the parent's sealer is running, the
    child starts its own. The parent's sealer is woken by the parent's commits only and nobody calls seal(),
    so the child's events are sealed by the child."""
    settings.FLEETGATE_AUDIT_SEAL_BACKGROUND = True  # as deployed (the suite seals in the test thread)
    with acting(change_context="command"), transaction.atomic():
        parent_event = record("test.parent", target_type="parent")
    _wait_until_sealed(parent_event.pk)
    parent_sealer = BackgroundSealer.running()
    assert parent_sealer is not None
    connections.close_all()  # nothing open across fork
    child = multiprocessing.get_context("fork").Process(target=_forked_writer)
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert BackgroundSealer.running() is parent_sealer  # the parent's own sealer is untouched
    forked = list(AuditEvent.objects.filter(action="test.forked").order_by("sequence"))
    assert [(e.target_id, e.sequence) for e in forked] == [("first", 2), ("at-exit", 3)]
    assert not AuditEvent.objects.pending().exists()
    assert verify().ok
