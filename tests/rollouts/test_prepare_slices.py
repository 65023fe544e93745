"""Prepare in slices (issue 19): a rendered rollout with more legs than FLEETGATE_PREPARE_SLICE is gated in a
task per slice of legs (``fleet.rollouts.evaluate_slice``), and the slice that ends last decides the rollout.
Real parts: git, sandbox clusters over HTTP, the Rego engine, a cluster nobody listens for; the queued tasks
run in this process (the ``tasks`` fixture), so a test can lose, repeat or hold back a slice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from clusters.models import Cluster, ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.rollouts import dispatch, services
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.services import fetch_repository
from policies.engine.opa_server import free_port
from policies.models import Evaluation, PolicyBinding
from policies.services.definitions import PolicyDefinition, save_policy
from tests.rollouts.conftest import NAMESPACE, deployment, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)

CRITICAL = """package main

deny[msg] {
    input.kind == "Deployment"
    data.fleetgate.context.cluster.labels.tier == "critical"
    input.spec.replicas < 2
    msg := sprintf("%s: critical clusters need at least 2 replicas", [input.metadata.name])
}
"""

EDGE = """package main

deny[msg] {
    input.kind == "Deployment"
    data.fleetgate.context.cluster.labels.tier == "edge"
    msg := sprintf("%s: edge clusters are best effort", [input.metadata.name])
}
"""

LATEST = """package main

deny[msg] {
    input.kind == "Deployment"
    endswith(input.spec.template.spec.containers[_].image, ":latest")
    msg := "no latest tags"
}
"""

TIERS = ["standard", "critical", "edge", "standard", "critical", "edge", "standard"]


def _bind(name: str, source: str, group: ClusterGroup, enforcement: str) -> None:
    policy = save_policy(name, PolicyDefinition(style="conftest", modules=(("p.rego", source),))).policy
    PolicyBinding.objects.create(policy=policy, cluster_group=group, enforcement=enforcement)


def _mixed_fleet(make_fleet: Any, env: str, **group: Any) -> ClusterGroup:
    """Seven sandbox clusters (two critical: blocked; two edge: warned) and one nobody listens for (cannot
    be reviewed: blocked), in one group with a deny and a warn policy."""
    make_fleet({f"c{i}": {"env": env, "tier": tier} for i, tier in enumerate(TIERS)})
    Cluster.objects.create(
        name=f"{env}-dead",
        api_url=f"http://127.0.0.1:{free_port()}",
        auth_method="token",
        token="tok-dead-secret",
        labels={"env": env, "tier": "standard"},
    )
    made = ClusterGroup.objects.create(name=env, selector={"matchLabels": {"env": env}}, **group)
    _bind(f"{env}-critical", CRITICAL, made, "deny")
    _bind(f"{env}-edge", EDGE, made, "warn")
    return made


def _commit(git_repo: Any, paths: list[str], image: str = "nginx:1.27") -> None:
    files: dict[str, str] = {}
    for path in paths:
        files[f"{path}/ns.yaml"] = NAMESPACE
        files[f"{path}/web.yaml"] = deployment("web", image)
    git_repo.commit(files, "web")


def _prepare(tasks: Any, settings: Any, rollout: Rollout, size: int) -> list[Any]:
    """Run the rollout's queued prepare with slices of ``size`` legs; returns the slice tasks it queued
    (left in the queue)."""
    settings.FLEETGATE_PREPARE_SLICE = size
    item = next(q for q in tasks.items if q.name == dispatch.PREPARE and q.args == [rollout.pk])
    tasks.items.remove(item)
    services.prepare(rollout.pk)
    return [q for q in tasks.items if q.name == dispatch.EVALUATE_SLICE]


def _outcomes(rollout: Rollout) -> dict[str, tuple[Any, ...]]:
    """Per cluster: the leg's decision, state, gate outcome, its deny/warn messages and whether it has a
    plan; and the stored Evaluation's decision."""
    stored = Evaluation.objects.filter(commit=rollout.commit, mapping=rollout.mapping)
    evaluations = {e.cluster_id: e.decision for e in stored}
    assert stored.count() == len(evaluations)  # one per cluster
    out = {}
    for cs in ClusterSync.objects.filter(rollout=rollout).select_related("cluster"):
        messages = sorted(
            (v.get("enforcement"), v.get("message")) for v in cs.evaluation.get("violations") or []
        )
        out[cs.cluster.name] = (
            cs.decision,
            cs.state,
            cs.evaluation.get("outcome"),
            messages,
            bool(cs.plan.get("counts")),
            evaluations.get(cs.cluster_id),
        )
    return out


def _gate_reason(rollout: Rollout) -> str:
    """The reason the rollout's gate gave (its ``rollout.evaluated`` event; the rollout moved on since)."""
    return AuditEvent.objects.get(action="rollout.evaluated", target_id=str(rollout.pk)).message


def test_slices_decide_as_the_inline_gate_does(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any
) -> None:
    """Two mappings of one commit to the same mixed fleet: one gated inline (one slice of 100), one in
    slices of 2 (four tasks). Same decisions, states, gate outcomes, violations and evaluations; the same
    rollout reason; both queued, the blocked legs held."""
    group = _mixed_fleet(make_fleet, "mixed")
    repo = make_repository(git_repo)
    inline = make_mapping(repo, "inline", "apps/inline", group)
    sliced = make_mapping(repo, "sliced", "apps/sliced", group)
    _commit(git_repo, ["apps/inline", "apps/sliced"])
    assert fetch_repository(repo).ok
    one = Rollout.objects.get(mapping=inline)
    two = Rollout.objects.get(mapping=sliced)

    assert _prepare(tasks, settings, one, 100) == []
    assert [q.name for q in tasks.items] == [dispatch.PREPARE, dispatch.ADVANCE]  # one is queued
    tasks.items.pop()
    slices = _prepare(tasks, settings, two, 2)
    assert sorted(len(q.args) - 1 for q in slices) == [2, 2, 2, 2]
    two.refresh_from_db()
    assert two.state == "rendered"
    tasks.drain(until=lambda: not any(q.name == dispatch.EVALUATE_SLICE for q in tasks.items))
    one.refresh_from_db()
    two.refresh_from_db()

    assert (one.state, two.state) == ("queued", "queued"), (one.reason, two.reason)
    assert one.decision == two.decision == "blocked"
    reasons = [_gate_reason(r) for r in (one, two)]
    assert reasons[0] == reasons[1]
    assert reasons[1].startswith("blocked by policy on 3 cluster(s): ")
    assert "mixed-dead (cannot review: the live state of mixed-dead could not be read" in reasons[1]
    assert reasons[1].endswith("; the other 5 cluster(s) proceed")
    first, second = _outcomes(one), _outcomes(two)
    assert first == second
    assert sorted(o[:3] for o in second.values()) == sorted(
        [("blocked", "blocked", "blocked")] * 2
        + [("blocked", "blocked", "cannot_review")]
        + [("warned", "pending", "warned")] * 2
        + [("passed", "pending", "passed")] * 3
    )
    # Audit: one gate event per slice, each naming its clusters; the rollout's transition summarises the gate.
    decisions = AuditEvent.objects.filter(action="policy.decision", after__mapping="sliced")
    assert sorted(len(e.after["clusters"]) for e in decisions) == [2, 2, 2, 2]
    assert AuditEvent.objects.filter(action="rollout.gate_sliced", target_id=str(two.pk)).count() == 1
    assert AuditEvent.objects.filter(action="rollout.evaluated", target_id=str(two.pk)).count() == 1


def test_all_blocked_across_slices_blocks_the_rollout(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any
) -> None:
    make_fleet({f"c{i}": {"env": "latest"} for i in range(5)})
    group = ClusterGroup.objects.create(name="latest", selector={"matchLabels": {"env": "latest"}})
    _bind("latest", LATEST, group, "deny")
    mapping = make_mapping(make_repository(git_repo), "web", "apps/web", group)
    _commit(git_repo, ["apps/web"], image="nginx:latest")
    assert fetch_repository(mapping.repository).ok
    rollout = Rollout.objects.get(mapping=mapping)
    assert len(_prepare(tasks, settings, rollout, 2)) == 3
    tasks.drain()

    rollout.refresh_from_db()
    assert (rollout.state, rollout.decision) == ("blocked", "blocked")
    assert rollout.reason.startswith("blocked by policy on 5 cluster(s): ")
    assert rollout.reason.count("no latest tags") == 5
    assert set(rollout.syncs.values_list("state", flat=True)) == {"blocked"}
    assert not [q for q in tasks.ran if q[0] == dispatch.ADVANCE]


def test_each_slice_stores_the_plans_an_approval_shows(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any
) -> None:
    group = _mixed_fleet(make_fleet, "approve", approval_required=True, approvals_required=1)
    mapping = make_mapping(make_repository(git_repo), "web", "apps/web", group)
    _commit(git_repo, ["apps/web"])
    assert fetch_repository(mapping.repository).ok
    rollout = Rollout.objects.get(mapping=mapping)
    assert len(_prepare(tasks, settings, rollout, 3)) == 3
    tasks.drain()

    rollout.refresh_from_db()
    assert rollout.state == "awaiting_approval", rollout.reason
    legs = list(rollout.syncs.select_related("cluster"))
    planned = {cs.cluster.name for cs in legs if cs.plan.get("counts")}
    let_through = {cs.cluster.name for cs in legs if cs.decision != "blocked"}
    assert planned == let_through and len(planned) == 5
    assert all(cs.plan["counts"].get("create") == 2 for cs in legs if cs.cluster.name in planned)


def test_a_lost_slice_is_gated_again_by_reconcile(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any
) -> None:
    """Of three slices, two are lost with their worker and one runs twice: the rollout waits (rendered);
    reconcile's prepare queues slices for the legs not gated yet only; every leg ends with one decision
    and one Evaluation."""
    group = _mixed_fleet(make_fleet, "lost")
    mapping = make_mapping(make_repository(git_repo), "web", "apps/web", group)
    _commit(git_repo, ["apps/web"])
    assert fetch_repository(mapping.repository).ok
    rollout = Rollout.objects.get(mapping=mapping)
    slices = _prepare(tasks, settings, rollout, 3)
    assert sorted(len(q.args) - 1 for q in slices) == [2, 3, 3]
    kept = slices[0]
    for lost in slices[1:]:
        tasks.items.remove(lost)
    tasks.items.append(kept)  # delivered twice
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "rendered"
    gated = set(ClusterSync.objects.filter(rollout=rollout).exclude(decision="").values_list("pk", flat=True))
    assert gated == set(kept.args[1:])

    old = timezone.now() - timedelta(seconds=settings.FLEETGATE_SYNC_LEASE_SECONDS + 5)
    Rollout.objects.filter(pk=rollout.pk).update(updated=old)
    assert services.reconcile()["prepare"] == 1
    settings.FLEETGATE_PREPARE_SLICE = 3
    [prepare] = [q for q in tasks.items if q.name == dispatch.PREPARE]
    tasks.items.remove(prepare)
    services.prepare(rollout.pk)
    again = [q for q in tasks.items if q.name == dispatch.EVALUATE_SLICE]
    assert sorted(pk for q in again for pk in q.args[1:]) == sorted(
        pk for q in slices[1:] for pk in q.args[1:]
    )
    tasks.drain(until=lambda: not any(q.name == dispatch.EVALUATE_SLICE for q in tasks.items))

    rollout.refresh_from_db()
    assert rollout.state == "queued", rollout.reason
    assert not ClusterSync.objects.filter(rollout=rollout, decision="").exists()
    assert Evaluation.objects.filter(commit=rollout.commit, mapping=mapping).count() == 8
    assert AuditEvent.objects.filter(action="rollout.evaluated", target_id=str(rollout.pk)).count() == 1


def test_a_slice_of_a_cancelled_rollout_does_nothing(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any, admin_user: Any
) -> None:
    make_fleet({f"c{i}": {"env": "gone"} for i in range(4)})
    group = ClusterGroup.objects.create(name="gone", selector={"matchLabels": {"env": "gone"}})
    mapping = make_mapping(make_repository(git_repo), "web", "apps/web", group)
    _commit(git_repo, ["apps/web"])
    assert fetch_repository(mapping.repository).ok
    rollout = Rollout.objects.get(mapping=mapping)
    slices = _prepare(tasks, settings, rollout, 2)
    assert len(slices) == 2
    tasks.items.remove(slices[1])
    tasks.drain()  # the first slice gates its legs
    services.cancel(rollout, admin_user)
    tasks.items.append(slices[1])
    tasks.drain()

    rollout.refresh_from_db()
    assert rollout.state == "cancelled"
    assert tasks.ran[-1] == (dispatch.EVALUATE_SLICE, slices[1].args, "cancelled")
    late = ClusterSync.objects.filter(pk__in=slices[1].args[1:])
    assert set(late.values_list("decision", "state")) == {("", "cancelled")}
    assert Evaluation.objects.filter(commit=rollout.commit, mapping=mapping).count() == 2
    assert not AuditEvent.objects.filter(
        action__in=["rollout.evaluated", "rollout.blocked"], target_id=str(rollout.pk)
    ).exists()


@pytest.mark.integration
def test_a_worker_killed_during_the_gate_slices_loses_no_leg(
    tmp_path: Any, git_repo: Any, make_fleet: Any
) -> None:
    """Real Celery workers: a rollout to six slow clusters gated in slices of two; the worker is killed
    (SIGKILL) when some legs are gated and others not; the next worker's reconcile (at its start, and again
    when the gate would count as stalled) sends prepare, which queues the slices of the legs not gated yet.
    Every cluster ends synced with one Evaluation, and the rollout was decided once."""
    from tests.workers import Worker, wait_for

    env = {"FLEETGATE_PREPARE_SLICE": "2", "FLEETGATE_SYNC_LEASE_SECONDS": "3", "FLEETGATE_KUBE_RETRIES": "2"}
    fleet = make_fleet({f"c{i}": {"env": "killgate"} for i in range(6)})
    for box in fleet.sandboxes.values():
        box.faults.latency = 0.2  # a live read takes a second or so: the kill lands between slices
    group = ClusterGroup.objects.create(name="killgate", selector={"matchLabels": {"env": "killgate"}})
    mapping = make_mapping(make_repository(git_repo), "web", "apps/web", group)
    _commit(git_repo, ["apps/web"])
    first = Worker(tmp_path / "worker-1.log", concurrency=1, **env)
    second = None
    try:
        assert fetch_repository(mapping.repository).ok
        rollout = wait_for(
            lambda: Rollout.objects.filter(mapping=mapping).first(), timeout=30, what="rollout"
        )

        def some_gated() -> bool:
            return ClusterSync.objects.filter(rollout=rollout).exclude(decision="").exists()

        wait_for(some_gated, timeout=120, interval=0.05, what="a slice gated")
        first.kill()
        left = ClusterSync.objects.filter(rollout=rollout, decision="").count()
        assert 0 < left < 6 and Rollout.objects.get(pk=rollout.pk).state == "rendered"
        second = Worker(tmp_path / "worker-2.log", concurrency=2, **env)
        wait_for(
            lambda: Rollout.objects.get(pk=rollout.pk).state in ("synced", "failed", "halted", "blocked"),
            timeout=180,
            what="the rollout to finish on the new worker",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    assert set(rollout.syncs.values_list("decision", "state")) == {("passed", "synced")}
    assert Evaluation.objects.filter(commit=rollout.commit, mapping=mapping).count() == 6
    assert AuditEvent.objects.filter(action="rollout.evaluated", target_id=str(rollout.pk)).count() == 1
