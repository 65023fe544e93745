"""Batched appends (issue 19): inside `batched()`, `record()` collects its events and the block's end inserts
them with one statement; each event is still its own row, sealed into the chain like any other, in the order
recorded. An exception inside the block writes nothing; nested blocks join the outer one."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from fleet.audit import sealing
from fleet.audit.models import AuditEvent
from fleet.audit.sealing import sealing_deferred
from fleet.audit.services import batched, record, seal, verify
from fleet.core.context import acting


class Boom(Exception):
    pass


def _inserts(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries
            if q["sql"].startswith('INSERT INTO "audit_auditevent"')]


@pytest.mark.django_db
def test_a_batch_is_one_insert_of_one_row_per_event_in_the_order_recorded() -> None:
    with acting(change_context="task", operator="slice"), transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            with batched() as events:
                for i in range(30):
                    returned = record("test.batched", target_type="leg", target_id=str(i),
                                      cluster=f"c{i}", after={"i": i, "token": "s3cret"})
                    assert returned is events[-1]
                assert not AuditEvent.objects.filter(action="test.batched").exists()  # not yet written
            assert len(_inserts(queries)) == 1
    seal()
    stored = list(AuditEvent.objects.filter(action="test.batched").order_by("sequence"))
    assert [e.target_id for e in stored] == [str(i) for i in range(30)]
    assert [e.cluster_name for e in stored] == [f"c{i}" for i in range(30)]
    assert {e.actor_name for e in stored} == {"slice"}
    assert {e.change_context for e in stored} == {"task"}
    assert stored[3].after["i"] == 3 and "s3cret" not in str(stored[3].after)  # redacted as record() does
    sequences = [e.sequence for e in stored]
    assert sequences == list(range(sequences[0], sequences[0] + 30))
    assert [e.pk for e in events] == [e.pk for e in stored]  # the ids are set after the block
    assert verify().ok


@pytest.mark.django_db
def test_an_exception_in_the_block_writes_nothing_and_a_nested_block_joins_the_outer() -> None:
    with pytest.raises(Boom), transaction.atomic(), batched():
        record("test.lost", target_type="leg")
        raise Boom
    assert not AuditEvent.objects.filter(action="test.lost").exists()
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            with batched() as outer:
                record("test.outer", target_type="leg")
                with batched() as inner:
                    record("test.inner", target_type="leg")
                    assert inner is outer
                assert not AuditEvent.objects.filter(action="test.inner").exists()
        assert len(_inserts(queries)) == 1
    # after the block, record() writes at once again
    with transaction.atomic():
        event = record("test.after", target_type="leg")
        assert event.pk is not None
    assert seal() == 3
    assert verify().ok


@pytest.mark.django_db
def test_an_empty_batch_writes_nothing(django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks() as hooks, transaction.atomic(), batched():
        pass
    assert hooks == []


@pytest.mark.django_db(transaction=True)
def test_sealing_deferred_seals_once_for_several_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three transactions with events inside the block: their commit hooks only note it; the block's end
    seals once (this thread: the suite turns the background sealer off), every event in order."""
    seals: list[int] = []
    real = sealing._seal_logged

    def counted() -> None:  # a spy: counts the seals, seals for real
        seals.append(AuditEvent.objects.pending().count())
        real()

    monkeypatch.setattr(sealing, "_seal_logged", counted)
    with acting(change_context="task"), sealing_deferred():
        for i in range(3):
            with transaction.atomic():
                record("test.deferred", target_type="leg", target_id=str(i))
        with sealing_deferred():  # nested: joins the outer block
            with transaction.atomic():
                record("test.deferred", target_type="leg", target_id="3")
        assert seals == [] and AuditEvent.objects.pending().count() == 4
    assert seals == [4]
    stored = list(AuditEvent.objects.filter(action="test.deferred").order_by("sequence"))
    assert [e.target_id for e in stored] == ["0", "1", "2", "3"] and not AuditEvent.objects.pending().exists()
    assert verify().ok
    with pytest.raises(Boom), sealing_deferred():  # an error in the block: what committed is sealed anyway
        with transaction.atomic():
            record("test.deferred", target_type="leg", target_id="4")
        raise Boom
    assert seals == [4, 1] and not AuditEvent.objects.pending().exists()


@pytest.mark.django_db
def test_each_batched_event_is_signalled_as_saved_after_the_insert() -> None:
    """The notifications' hook listens for post_save of audit events: a batch signals each, with its id."""
    from django.db.models.signals import post_save

    seen: list[tuple[int | None, bool, str]] = []

    def listener(sender: Any, instance: AuditEvent, created: bool, **_: Any) -> None:
        seen.append((instance.pk, created, instance.target_id))

    post_save.connect(listener, sender=AuditEvent, dispatch_uid="test-batched-listener")
    try:
        with transaction.atomic(), batched() as events:
            record("test.signalled", target_type="leg", target_id="a")
            record("test.signalled", target_type="leg", target_id="b")
            assert seen == []  # nothing inserted, nothing signalled yet
    finally:
        post_save.disconnect(sender=AuditEvent, dispatch_uid="test-batched-listener")
    assert seen == [(events[0].pk, True, "a"), (events[1].pk, True, "b")] and None not in {s[0] for s in seen}
