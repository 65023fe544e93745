"""Queries of a rollout's prepare (issue 19): the render lookup, the gate (live reads, one bound Rego policy,
the evaluations stored and audited), the plan where one is shown, and the queueing (batches assigned), run in
process on the production code path for one rollout to 3 and to 9 sandbox clusters. Prepare's queries must
not grow with N: the counts at both sizes are asserted exactly, equal (docs/benchmarks.md, "Prepare for
10,000 clusters (issue 19)").

Past FLEETGATE_PREPARE_SLICE legs the gate runs in a task per slice (docs/rollouts.md, "Prepare in slices"):
with slices of 3, a rollout to 6 and to 9 clusters (two and three slices); the prepare task's queries, each
slice's and the deciding slice's (the last, which also queues the rollout or stores that it waits) are
asserted exactly, the same at both sizes.

Only the prepare task's own connection is counted: the live reads and plans run in a thread pool that asks
the database nothing (the clusters' credentials are columns of the rows prepare read). The audit seal: in
the commit hooks on SQLite (counted), in the background sealer on PostgreSQL (not on this connection), as in
test_rollout_query_counts.py.

Run with ``-s`` to see the queries by kind."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet.rollouts import dispatch
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.services import fetch_repository
from policies.models import Evaluation, PolicyBinding
from policies.services.definitions import PolicyDefinition, save_policy
from tests.rollouts.conftest import (
    NAMESPACE,
    RUNNERS,
    GitRepo,
    configmap,
    deployment,
    make_group,
    make_mapping,
    make_repository,
)
from tests.rollouts.test_rollout_query_counts import kind, sealed

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = """package main

deny[msg] {
    input.kind == "Deployment"
    endswith(input.spec.template.spec.containers[_].image, ":latest")
    msg := "no latest tags"
}
"""

# Prepare's queries per rollout, whatever its size (the same at 3 and at 9 clusters), by database and the
# group's sync mode: "automatic" queues the rollout; "manual" also stores a plan per leg and waits for a sync
# request. SQLite's include the audit seal in the commit hooks (32 of them: four transactions with events).
PREPARE = {"sqlite": {"automatic": 79, "manual": 77}, "postgresql": {"automatic": 47, "manual": 45}}
# In slices: (the prepare task: render and queue the slices, a slice's task, the deciding slice's task).
SLICED = {
    "sqlite": {"automatic": (35, 27, 56), "manual": (35, 27, 54)},
    "postgresql": {"automatic": (19, 19, 32), "manual": (19, 19, 30)},
}


def prepare(n: int, git_repo: GitRepo, make_fleet: Any, tasks: Any, tag: str, mode: str) -> dict[str, Any]:
    """One rollout to ``n`` clusters: the fetch creates it (not counted), its prepare task is counted, and
    the slice tasks it queues (past FLEETGATE_PREPARE_SLICE legs) each on its own, in the order queued."""
    make_fleet({f"c{i}": {"env": tag} for i in range(n)})
    group = make_group(tag, tag, max_parallel=4, batch_percent=50, sync_mode=mode)  # two batches
    repo = make_repository(git_repo, name=tag)
    mapping = make_mapping(repo, "web", f"apps/{tag}", group)
    git_repo.commit(
        {
            f"apps/{tag}/ns.yaml": NAMESPACE,
            f"apps/{tag}/cm.yaml": configmap("web", {"color": "blue"}),
            f"apps/{tag}/deploy.yaml": deployment("web", "nginx:1"),
        },
        tag,
    )
    assert fetch_repository(repo).ok
    items = [q for q in tasks.items if q.name == dispatch.PREPARE]
    assert len(items) == 1, tasks.items
    tasks.items.clear()
    with CaptureQueriesContext(connection) as ctx:
        RUNNERS[dispatch.PREPARE](*items[0].args)
    slices = []
    while tasks.items and tasks.items[0].name == dispatch.EVALUATE_SLICE:
        item = tasks.items.pop(0)
        with CaptureQueriesContext(connection) as one:
            RUNNERS[item.name](*item.args)
        slices.append(len(one.captured_queries))
    rollout = Rollout.objects.get(mapping=mapping)
    legs = list(ClusterSync.objects.filter(rollout=rollout))
    assert len(legs) == n
    assert all(leg.desired and leg.decision == "passed" for leg in legs)
    assert Evaluation.objects.filter(mapping=mapping).count() == n
    if mode == "automatic":
        assert rollout.state == "queued", rollout.reason
        size = (n + 1) // 2
        assert sorted(leg.batch for leg in legs) == [0] * size + [1] * (n - size)
        assert [q.name for q in tasks.items] == [dispatch.ADVANCE]
    else:
        assert rollout.state == "evaluated" and rollout.manual, rollout.reason
        assert all(leg.plan.get("counts") and not leg.plan.get("error") for leg in legs), legs[0].plan
    sealed(limit=60)
    kinds = Counter(kind(q["sql"]) for q in ctx.captured_queries)
    return {"total": len(ctx.captured_queries), "kinds": kinds, "slices": slices}


@pytest.mark.parametrize("mode", ["automatic", "manual"])
def test_prepare_costs_the_same_queries_at_3_and_9_clusters(
    tmp_path: Any, make_fleet: Any, tasks: Any, settings: Any, mode: str
) -> None:
    settings.FLEETGATE_AUDIT_SEAL_BACKGROUND = True  # as deployed (the suite seals in the test thread)
    policy = save_policy(
        "no-latest", PolicyDefinition(style="conftest", modules=(("p.rego", POLICY),))
    ).policy
    PolicyBinding.objects.create(policy=policy, enforcement="deny")
    small = prepare(3, GitRepo(tmp_path / "small"), make_fleet, tasks, f"psmall{mode}", mode)
    big = prepare(9, GitRepo(tmp_path / "big"), make_fleet, tasks, f"pbig{mode}", mode)
    for n, result in ((3, small), (9, big)):
        print(f"\nN={n} ({mode}): {result['total']} queries in prepare")
        for k, count in sorted(result["kinds"].items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {count:3d}  {k}")
    expected = PREPARE[connection.vendor][mode]
    assert (small["total"], big["total"]) == (expected, expected), (small, big)


@pytest.mark.parametrize("mode", ["automatic", "manual"])
def test_prepare_in_slices_costs_the_same_queries_per_slice_at_6_and_9_clusters(
    tmp_path: Any, make_fleet: Any, tasks: Any, settings: Any, mode: str
) -> None:
    settings.FLEETGATE_AUDIT_SEAL_BACKGROUND = True
    settings.FLEETGATE_PREPARE_SLICE = 3
    policy = save_policy(
        "no-latest", PolicyDefinition(style="conftest", modules=(("p.rego", POLICY),))
    ).policy
    PolicyBinding.objects.create(policy=policy, enforcement="deny")
    six = prepare(6, GitRepo(tmp_path / "six"), make_fleet, tasks, f"psix{mode}", mode)
    nine = prepare(9, GitRepo(tmp_path / "nine"), make_fleet, tasks, f"pnine{mode}", mode)
    for n, result in ((6, six), (9, nine)):
        print(f"\nN={n} ({mode}, slices of 3): prepare {result['total']} queries, slices {result['slices']}")
    assert len(six["slices"]) == 2 and len(nine["slices"]) == 3
    expected = SLICED[connection.vendor][mode]
    for result in (six, nine):
        *each, last = result["slices"]
        assert (result["total"], *set(each), last) == expected, result
