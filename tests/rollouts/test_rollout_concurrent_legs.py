"""Legs ending at once do not queue on their rollout's row (issue 18's 1,000 agents, issue 19's fan-out).

A leg's claim and finish lock only the leg's row; the rollout moves on with ``advance_coalesced``, which
does not wait for another advance of the same rollout and cannot miss a leg's end (its "again" flag). The
lock behaviour needs PostgreSQL (SQLite has no row locks: every call advances, serialised by its write
lock); the first test runs on both."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.core.cache import cache
from django.db import close_old_connections, connection, transaction

from fleet.rollouts.choices import RolloutState, SyncState
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.rollouts.services import fanout, sync
from fleet.rollouts.services.common import locked_rollout
from tests.factories import ClusterFactory, ClusterGroupFactory, CommitFactory, PathMappingFactory

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL)"
)


def _syncing_rollout(legs: int) -> tuple[Rollout, list[ClusterSync]]:
    group = ClusterGroupFactory()
    mapping = PathMappingFactory(cluster_group=group)
    commit = CommitFactory(repository=mapping.repository)
    rollout = Rollout.objects.create(mapping=mapping, commit=commit, state=RolloutState.SYNCING,
                                     batch_count=1)
    syncs = [
        ClusterSync.objects.create(rollout=rollout, cluster=ClusterFactory(), state=SyncState.SYNCING,
                                   attempts=1)
        for _ in range(legs)
    ]
    return rollout, syncs


def _finish(cs: ClusterSync) -> str:
    from fleet.rollouts import ports

    outcome = ports.ApplyOutcome(ok=True, results=[], counts={}, inventory=[], applied=[])
    health = ports.HealthOutcome("healthy", "", {})
    return sync._finish(cs.pk, 1, outcome, health, "", False)


@pytest.mark.django_db(transaction=True)
def test_the_last_leg_to_finish_completes_the_rollout() -> None:
    rollout, legs = _syncing_rollout(2)
    for cs in legs:
        assert _finish(cs) == "synced"
        sync.conclude(rollout.pk, rollout.mapping, cs.cluster_id, "synced")
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.SYNCED
    assert not cache.get(fanout._again_key(rollout.pk))


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_leg_finishes_while_another_transaction_holds_the_rollout() -> None:
    """Claim and finish do not wait for the rollout's row lock, and the coalesced advance answers BUSY at
    once instead of queueing, leaving its flag raised for the holder."""
    rollout, legs = _syncing_rollout(1)
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                locked_rollout(rollout.pk)
                held.set()
                release.wait(30)
        finally:
            close_old_connections()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        answers: dict[str, Any] = {}

        def finish() -> None:
            try:
                answers["finish"] = _finish(legs[0])
                answers["advance"] = fanout.advance_coalesced(rollout.pk)
            finally:
                done.set()
                close_old_connections()

        threading.Thread(target=finish).start()
        assert done.wait(10), "the leg's finish waited for the rollout's row lock"
        assert answers == {"finish": "synced", "advance": fanout.BUSY}
        assert cache.get(fanout._again_key(rollout.pk))  # the holder will see it
    finally:
        release.set()
        holder.join(10)


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("holder", ["advance_coalesced", "advance"])
def test_an_advance_that_counted_before_a_leg_ended_runs_again(
    monkeypatch: pytest.MonkeyPatch, holder: str
) -> None:
    """The lost wake-up: advance A counts (leg 2 still syncing); leg 2 ends and its coalesced advance finds
    A holding the lock (BUSY). After A commits it sees the flag and advances again: the rollout completes
    with no other call. A is a leg's coalesced advance, or the plain advance that waits for the lock (the
    advance task: reconcile, a dependency finished, a batch pause ended)."""
    rollout, legs = _syncing_rollout(2)
    assert _finish(legs[0]) == "synced"
    counted, go = threading.Event(), threading.Event()
    real_limits = fanout.strategy.limits

    def limits_then_pause(r: Any) -> Any:  # called by advance after it counted, under the lock
        if not counted.is_set():
            counted.set()
            go.wait(30)
        return real_limits(r)

    answers: dict[str, Any] = {}

    def first_advance() -> None:
        try:
            answers["a"] = getattr(fanout, holder)(rollout.pk)
        finally:
            close_old_connections()

    monkeypatch.setattr(fanout.strategy, "limits", limits_then_pause)
    a = threading.Thread(target=first_advance)
    a.start()
    try:
        assert counted.wait(10)
        assert _finish(legs[1]) == "synced"
        assert fanout.advance_coalesced(rollout.pk) == fanout.BUSY
    finally:
        go.set()
        a.join(30)
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.SYNCED, rollout.reason
    assert answers["a"] == RolloutState.SYNCED
