"""The push fan-out in slices (issue 19): the coordinator queues a task per slice of FLEETGATE_SYNC_SLICE
legs; the task claims them together, applies to their clusters in parallel threads, finishes them together and
advances once; it goes on with the next slice itself for up to FLEETGATE_SYNC_CHAIN_SECONDS. Each leg keeps
its own attempt, lease, outcome and audit events: a failing cluster fails alone, and a leg whose lease
another attempt took is not recorded by the slice. The query counts are in test_rollout_query_counts.py."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fleet.audit.models import AuditEvent
from fleet.rollouts import dispatch, ports
from fleet.rollouts.models import ClusterSync
from fleet.rollouts.services import fanout, sync
from tests.rollouts.test_rollout_rules import World

pytestmark = pytest.mark.django_db(transaction=True)


def test_slices_are_as_even_as_can_be(settings: Any) -> None:
    settings.FLEETGATE_SYNC_SLICE = 8
    assert fanout.slices([]) == []
    assert [len(s) for s in fanout.slices(list(range(8)))] == [8]
    assert [len(s) for s in fanout.slices(list(range(10)))] == [5, 5]
    assert [len(s) for s in fanout.slices(list(range(17)))] == [6, 6, 5]
    assert [i for s in fanout.slices(list(range(17))) for i in s] == list(range(17))  # each once, in order
    settings.FLEETGATE_SYNC_SLICE = 1
    assert fanout.slices([4, 5]) == [[4], [5]]


def test_a_slice_applies_in_parallel_threads_and_a_failing_cluster_fails_alone(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.FLEETGATE_SYNC_SLICE = 4
    settings.FLEETGATE_SYNC_MAX_ATTEMPTS = 2
    w = World(git_repo, make_fleet, ["a", "b", "c", "d"], max_parallel=4, failure_threshold=1)
    w.fleet.sandbox("b").faults.down = True
    threads: dict[str, str] = {}
    real_apply = ports.apply
    # The three healthy legs' applies meet here: they pass only when all three are in flight at once (each on
    # a thread of its own), so the test does not depend on which idle thread the pool hands a leg to.
    together = threading.Barrier(3, timeout=60)

    def apply(cluster: Any, *args: Any, **kwargs: Any) -> Any:  # a spy: notes the thread, applies for real
        short = cluster.name.split("-", 1)[1]
        threads[short] = threading.current_thread().name
        if short != "b":
            together.wait()
        return real_apply(cluster, *args, **kwargs)

    monkeypatch.setattr(ports, "apply", apply)
    rollout = w.rollout(w.push(color="blue"))
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert [name for name, _, _ in tasks.ran].count(dispatch.SYNC_SLICE) == 1
    assert w.legs(rollout) == {"a": "synced", "b": "failed", "c": "synced", "d": "synced"}
    assert rollout.state == "failed", rollout.reason
    first = {threads[n] for n in ("a", "c", "d")}
    assert len(first) == 3 and all(name.startswith("leg") for name in first), threads
    for short in ("a", "c", "d"):
        live = w.fleet.sandbox(short).get_object("v1", "ConfigMap", "web", "apps")
        assert live["data"] == {"color": "blue"}
    # Each leg still has its own events, in one insert per step of the slice.
    b = ClusterSync.objects.get(rollout=rollout, cluster=w.fleet.clusters["b"])
    assert list(AuditEvent.objects.filter(target_type="clustersync", target_id=str(b.pk))
                .order_by("sequence").values_list("action", flat=True)) == [
        "sync.queued", "sync.started", "sync.retrying", "sync.started", "sync.failed"]
    for short in ("a", "c", "d"):
        leg = ClusterSync.objects.get(rollout=rollout, cluster=w.fleet.clusters[short])
        assert leg.attempts == 1 and leg.error == ""
        assert list(AuditEvent.objects.filter(target_type="clustersync", target_id=str(leg.pk))
                    .order_by("sequence").values_list("action", flat=True)) == [
            "sync.queued", "sync.started", "sync.succeeded"]


@pytest.mark.parametrize("chain_seconds, slice_tasks", [(60, 0), (0, 3)])
def test_a_slice_task_goes_on_with_the_next_slice_itself(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any, chain_seconds: float, slice_tasks: int
) -> None:
    """max_parallel 2, slices of 2, 6 clusters: with the chain, the advance task that queues the first slice
    syncs it and goes on with the other two itself (no hop through the broker, no slice task at all);
    without it, every slice is a task of its own. The legs kept are queued, leased and audited as the
    others."""
    settings.FLEETGATE_SYNC_SLICE = 2
    w = World(git_repo, make_fleet, ["a", "b", "c", "d", "e", "f"], max_parallel=2)
    rollout = w.rollout(w.push(color="green"))
    settings.FLEETGATE_SYNC_CHAIN_SECONDS = chain_seconds  # (the tasks fixture turns the chain off)
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    assert set(w.legs(rollout).values()) == {"synced"}
    assert [name for name, _, _ in tasks.ran].count(dispatch.SYNC_SLICE) == slice_tasks
    legs = [str(pk) for pk in rollout.syncs.values_list("pk", flat=True)]
    queued = AuditEvent.objects.filter(action="sync.queued", target_type="clustersync", target_id__in=legs)
    assert queued.count() == 6


def test_a_leg_whose_lease_another_attempt_took_is_not_recorded_by_the_slice(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any
) -> None:
    settings.FLEETGATE_SYNC_SLICE = 3
    w = World(git_repo, make_fleet, ["a", "b", "c"], max_parallel=3)
    rollout = w.rollout(w.push(color="red"))
    tasks.drain(until=lambda: any(q.name == dispatch.SYNC_SLICE for q in tasks.items))
    (item,) = [q for q in tasks.items if q.name == dispatch.SYNC_SLICE]
    claimed = sync._claim_many(item.args)
    assert [why for _, why in claimed.values()] == ["claimed"] * 3
    legs = [cs for cs, _ in claimed.values() if cs is not None]
    taken = legs[1]
    # Its lease expired and another worker claimed it meanwhile (attempt 2).
    ClusterSync.objects.filter(pk=taken.pk).update(attempts=2)
    found = [(cs.pk, cs.attempts, None, None, "", False) for cs in legs]
    out = sync._finish_many(found, rollout=legs[0].rollout)
    assert out[taken.pk] == "lost the lease; another attempt owns the outcome"
    assert [out[cs.pk] for cs in legs if cs is not taken] == ["synced", "synced"]
    taken.refresh_from_db()
    assert (taken.state, taken.attempts) == ("syncing", 2)  # left to the attempt that owns it
    assert not AuditEvent.objects.filter(action="sync.succeeded", target_id=str(taken.pk)).exists()
    assert rollout.pk == legs[0].rollout_id
