"""A repository laid out for Rancher Fleet, through the real flow (git, fetch, render, gate, sandbox clusters
over HTTP): its fleet.yaml's rolloutStrategy partitions become the rollout's batches, in order; a cluster in
no partition is not rolled out; a partition with more failed clusters than its maxUnavailable is
unavailable, and more unavailable partitions than maxUnavailablePartitions halt the rollout before the next
batch, whichever leg failed last; and a clusterGroupSelector matches the cluster group's own labels."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from django.test import Client

from fleet.audit.models import AuditEvent
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.models import Commit
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)

LABELS = {
    "a": {"env": "t", "region": "us"},
    "b": {"env": "t", "region": "eu"},
    "c": {"env": "t", "region": "eu"},
    "d": {"env": "t", "region": "us"},
    "e": {"env": "t"},
}


def fleet_yaml(prefix: str, canary_max: int | None = None) -> str:
    limit = f"\n    maxUnavailable: {canary_max}" if canary_max is not None else ""
    return f"""\
namespace: gold-apps
targetCustomizations:
- name: gold
  clusterGroupSelector: {{matchLabels: {{tier: gold}}}}
  namespaceLabels: {{tier: gold}}
rolloutStrategy:
  partitions:
  - name: canary
    clusterName: {prefix}-a{limit}
  - name: europe
    clusterSelector: {{matchLabels: {{region: eu}}}}
  - name: gold-us
    clusterGroupSelector: {{matchLabels: {{tier: gold}}}}
    clusterSelector: {{matchLabels: {{region: us}}}}
"""


class World:
    def __init__(self, git_repo: Any, make_fleet: Any, labels: dict[str, dict[str, str]] | None = None,
                 **group: Any) -> None:
        self.git_repo = git_repo
        self.fleet = make_fleet(labels or LABELS)
        self.group = make_group(f"{self.fleet.prefix}-g", "t", labels={"tier": "gold"}, **group)
        self.repo = make_repository(git_repo, name=f"{self.fleet.prefix}-repo")
        self.mapping = make_mapping(self.repo, "web", "apps/web", self.group)

    def push(self, fleet: str, color: str = "blue") -> Rollout:
        self.git_repo.commit({"apps/web/cm.yaml": configmap("web", {"color": color}),
                              "apps/web/fleet.yaml": fleet}, f"web {color}")
        assert fetch_repository(self.repo).ok
        commit = Commit.objects.get(repository=self.repo, sha=self.git_repo.git("rev-parse", "HEAD"))
        return Rollout.objects.get(mapping=self.mapping, commit=commit)

    def legs(self, rollout: Rollout) -> dict[str, tuple[int, str]]:
        return {
            name.split("-", 1)[1]: (batch, state)
            for name, batch, state in ClusterSync.objects.filter(rollout=rollout).values_list(
                "cluster__name", "batch", "state"
            )
        }


def test_partitions_are_the_batches_in_order_and_unpartitioned_clusters_are_left_out(
    git_repo: Any, make_fleet: Any, tasks: Any, admin_client: Any, admin_user: Any
) -> None:
    w = World(git_repo, make_fleet, batch_size=10, canary_selector={"matchLabels": {"region": "eu"}})
    rollout = w.push(fleet_yaml(w.fleet.prefix))
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    assert rollout.reason == "4 cluster(s) synced, 1 in no fleet.yaml partition (not rolled out)"
    # the partitions, not the group's canary selector and batch size, made the batches
    assert w.legs(rollout) == {
        "a": (0, "synced"), "b": (1, "synced"), "c": (1, "synced"), "d": (2, "synced"), "e": (3, "cancelled"),
    }
    assert rollout.batch_count == 3
    legs = {cs.cluster.name.split("-", 1)[1]: cs for cs in ClusterSync.objects.filter(rollout=rollout)}
    assert legs["a"].finished_at <= min(legs["b"].started_at, legs["c"].started_at)
    assert max(legs["b"].finished_at, legs["c"].finished_at) <= legs["d"].started_at
    assert "in no partition of apps/web/fleet.yaml" in legs["e"].error
    # what was synced: the gold group's customization (clusterGroupSelector on the group's labels)
    cm = w.fleet.sandbox("b").get_object("v1", "ConfigMap", "web", "gold-apps")
    assert cm is not None and cm["data"]["color"] == "blue"
    ns = w.fleet.sandbox("b").get_object("v1", "Namespace", "gold-apps")
    assert ns is not None and ns["metadata"]["labels"]["tier"] == "gold"
    assert w.fleet.sandbox("e").get_object("v1", "ConfigMap", "web", "gold-apps") is None

    # shown as coming from fleet.yaml: API, page, audit trail
    body = admin_client.get(f"/api/rollouts/{rollout.pk}/").json()
    strategy = body["strategy"]
    assert strategy["source"] == "fleet.yaml" and strategy["file"] == "apps/web/fleet.yaml"
    assert [(b["name"], len(b["clusters"])) for b in strategy["batches"]] == [
        ("canary", 1), ("europe", 2), ("gold-us", 1)]
    assert strategy["unmatched"] == [w.fleet.clusters["e"].name]
    browser = Client()
    browser.force_login(admin_user)
    page = browser.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "fleet.yaml rolloutStrategy" in page and "europe" in page and "not rolled out" in page
    assert AuditEvent.objects.filter(action="rollout.strategy", target_id=str(rollout.pk)).exists()


def test_a_partition_past_its_max_unavailable_halts_before_the_next_batch(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    w = World(git_repo, make_fleet, failure_threshold=5)
    w.fleet.sandbox("a").faults.down = True
    rollout = w.push(fleet_yaml(w.fleet.prefix, canary_max=0))
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "halted", rollout.reason
    assert "batch 2 does not start" in rollout.reason
    assert "canary (1 failed, maxUnavailable 0)" in rollout.reason
    assert w.legs(rollout)["a"] == (0, "failed")
    assert {w.legs(rollout)[n][1] for n in "bcd"} == {"pending"}
    assert w.fleet.sandbox("b").get_object("v1", "ConfigMap", "web", "gold-apps") is None


def test_max_unavailable_is_the_halt_threshold_and_the_parallelism(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    w = World(git_repo, make_fleet, failure_threshold=5, max_parallel=10)
    w.fleet.sandbox("b").faults.down = True
    rollout = w.push("namespace: gold-apps\nrolloutStrategy: {maxUnavailable: 1}\n")
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "halted", rollout.reason
    assert rollout.reason.startswith(
        "1 cluster(s) failed, as many as the fleet.yaml rolloutStrategy maxUnavailable of 1 "
        "(apps/web/fleet.yaml) lets be unavailable")
    # one at a time, in the group's single batch: a synced, b failed, the rest never started
    legs = w.legs(rollout)
    assert legs["a"] == (0, "synced") and legs["b"] == (0, "failed")
    assert {legs[n] for n in "cde"} == {(0, "pending")}
    assert rollout.strategy["batches"] is None and rollout.strategy["max_unavailable"] == 1


WAVES = {n: {"env": "t", "wave": "1" if n in "abc" else "2"} for n in "abcde"}


def waves_yaml(max_partitions: int) -> str:
    return f"""\
namespace: gold-apps
rolloutStrategy:
  maxUnavailablePartitions: {max_partitions}
  partitions:
  - name: first
    clusterSelector: {{matchLabels: {{wave: "1"}}}}
    maxUnavailable: 1
  - name: rest
    clusterSelector: {{matchLabels: {{wave: "2"}}}}
"""


@pytest.mark.parametrize(("down", "max_partitions", "halts"), [
    ("a", 0, False),   # 1 of 3 failed, limit 1: the partition is available; first leg or ...
    ("c", 0, False),   # ... the batch's last leg, the same
    ("ab", 0, True),   # 2 failed: unavailable, more than maxUnavailablePartitions 0
    ("bc", 0, True),   # the same when the batch's last leg is one of them
    ("ab", 1, False),  # maxUnavailablePartitions 1 lets the next batch start
])
def test_a_partition_is_unavailable_past_its_max_unavailable_whichever_leg_fails_last(
    git_repo: Any, make_fleet: Any, tasks: Any, down: str, max_partitions: int, halts: bool
) -> None:
    w = World(git_repo, make_fleet, labels=WAVES, failure_threshold=5, max_parallel=10)
    for name in down:
        w.fleet.sandbox(name).faults.down = True
    rollout = w.push(waves_yaml(max_partitions))
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    legs = w.legs(rollout)
    # the first batch ran to its end, one leg at a time (its maxUnavailable 1), failures or not
    assert {legs[n] for n in "abc"} == {(0, "failed" if n in down else "synced") for n in "abc"}
    first = sorted(ClusterSync.objects.filter(rollout=rollout, batch=0), key=lambda cs: cs.started_at)
    assert all(a.finished_at <= b.started_at for a, b in pairwise(first))
    if halts:
        assert rollout.state == "halted", rollout.reason
        assert "batch 2 does not start" in rollout.reason
        assert "first (2 failed, maxUnavailable 1)" in rollout.reason
        assert {legs[n] for n in "de"} == {(1, "pending")}
    else:
        assert rollout.state == "failed", rollout.reason
        assert {legs[n] for n in "de"} == {(1, "synced")}
