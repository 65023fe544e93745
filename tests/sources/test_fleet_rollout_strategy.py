"""fleet.yaml rolloutStrategy mapped onto Fleetgate's batches (fleet/sources/render/fleetrollout.py), as
Rancher Fleet's target builder partitions a bundle's clusters (internal/cmd/controller/target: rollout.go,
status.go): the same counts, the same rounding, the same clusters left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.sources.render import ClusterContext, RenderError, RenderRequest, SourceTree, render
from fleet.sources.render.fleetbundle import parse_fleet_yaml
from fleet.sources.render.fleetrollout import (
    batch_slots,
    check_strategy,
    limit,
    partition_unavailable,
    plan_batches,
    unavailable_partitions,
)


def clusters(n: int, group: str = "g", group_labels: dict[str, str] | None = None,
             **labels_of: dict[str, str]) -> list[ClusterContext]:
    return [ClusterContext(name=f"c{i:03d}", labels=labels_of.get(f"c{i:03d}", {}), group=group,
                           group_labels=group_labels or {}) for i in range(n)]


@pytest.mark.parametrize(("count", "value", "expected"), [
    (10, None, 10),        # default 100%
    (10, 3, 3),
    (10, 30, 10),          # a number is capped at the count
    (10, -1, 0),
    (10, "25%", 2),        # rounded down
    (3, "10%", 1),         # at least 1
    (10, "0%", 1),
    (7, "50%", 3),
    (200, "25%", 50),
    (10, "4", 4),          # a numeric string is a number
    (0, "50%", 1),         # nothing to limit
])
def test_limit_is_fleets(count: int, value: Any, expected: int) -> None:
    assert limit(count, value) == expected


def test_limit_takes_the_first_value_given() -> None:
    assert limit(10, None, "20%") == 2
    assert limit(10, 1, "20%") == 1


def test_partitions_become_ordered_batches_with_their_limits() -> None:
    spec = {
        "maxUnavailable": "50%",
        "partitions": [
            {"name": "canary", "clusterName": "c003"},
            {"name": "eu", "clusterSelector": {"matchLabels": {"region": "eu"}}, "maxUnavailable": 0},
            {"name": "rest", "clusterGroup": "g"},
        ],
    }
    cs = clusters(6, c001={"region": "eu"}, c003={"region": "eu"}, c004={"region": "eu"})
    plan = plan_batches(spec, cs)
    assert plan.batches is not None
    assert [(b.name, b.clusters, b.max_unavailable) for b in plan.batches] == [
        ("canary", ("c003",), 1),               # 50% of 1, at least 1
        ("eu", ("c001", "c004"), 0),            # c003 went to the first partition that holds it
        ("rest", ("c000", "c002", "c005"), 3),  # the bundle's 50% of the 6 the partition matches
    ]
    assert plan.unmatched == ()
    assert plan.max_unavailable == 3 and plan.max_unavailable_partitions == 0
    assert any("c003 matched an earlier partition" in n for n in plan.notes)
    assert any("partition eu: maxUnavailable 0" in n for n in plan.notes)


def test_clusters_in_no_partition_are_not_rolled_out_as_in_fleet() -> None:
    # Fleet: "If targeted clusters are not part of the manual partitioning, they will not be included in the
    # rollout"; autoPartitionSize does not pick them up (rollout_test.go: "doesn't put unmatched clusters in
    # separate partitions at the end using AutoPartitionSize").
    spec = {"autoPartitionSize": "50%",
            "partitions": [{"name": "first", "clusterSelector": {"matchLabels": {"group": "a"}}}]}
    cs = clusters(4, c000={"group": "a"}, c001={"group": "a"})
    plan = plan_batches(spec, cs)
    assert [b.clusters for b in plan.batches or ()] == [("c000", "c001")]
    assert plan.unmatched == ("c002", "c003")
    assert any("2 cluster(s) match no partition and are not rolled out" in n for n in plan.notes)


def test_partition_by_group_labels_and_by_display_name() -> None:
    spec = {"partitions": [
        {"name": "gold", "clusterGroupSelector": {"matchLabels": {"tier": "gold"}}},
        {"name": "none-criteria"},
    ]}
    gold = clusters(2, group_labels={"tier": "gold"})
    assert [b.clusters for b in plan_batches(spec, gold).batches or ()] == [("c000", "c001")]
    plain = clusters(2)
    plan = plan_batches(spec, plain)
    assert plan.batches == () and plan.unmatched == ("c000", "c001")
    assert any("partition gold matches no cluster" in n for n in plan.notes)
    named = [ClusterContext(name="x1", labels={"management.cattle.io/cluster-display-name": "prod-eu"})]
    assert plan_batches({"partitions": [{"clusterName": "prod-eu"}]}, named).unmatched == ()


def test_automatic_partitions_follow_the_threshold() -> None:
    # below autoPartitionThreshold (default 200): one partition, whatever the size says
    small = plan_batches({"autoPartitionSize": "25%"}, clusters(8))
    assert [len(b.clusters) for b in small.batches or ()] == [8]
    assert any("fewer than autoPartitionThreshold 200" in n for n in small.notes)
    # at or above it: partitions of autoPartitionSize, named as Fleet names them
    spec = {"autoPartitionSize": 3, "autoPartitionThreshold": 5, "maxUnavailable": 1}
    auto = plan_batches(spec, clusters(8))
    assert [(b.name, len(b.clusters), b.max_unavailable) for b in auto.batches or ()] == [
        ("Partition 0 - 3", 3, 1), ("Partition 3 - 6", 3, 1), ("Partition 6 - 8", 2, 1)]
    pct = plan_batches({"autoPartitionSize": "25%", "autoPartitionThreshold": 1}, clusters(10))
    assert [len(b.clusters) for b in pct.batches or ()] == [2, 2, 2, 2, 2]
    # an integer size <= 0 turns automatic partitions off: one partition
    off = plan_batches({"autoPartitionSize": 0, "autoPartitionThreshold": 1}, clusters(5))
    assert [b.name for b in off.batches or ()] == ["All"]


def test_max_unavailable_alone_keeps_the_groups_batches() -> None:
    plan = plan_batches({"maxUnavailable": "20%"}, clusters(10))
    assert plan.batches is None and plan.max_unavailable == 2
    zero = plan_batches({"maxUnavailable": 0}, clusters(3))
    assert zero.max_unavailable == 1 and any("maxUnavailable 0" in n for n in zero.notes)
    assert plan_batches({"maxUnavailablePartitions": 1}, clusters(3)).notes  # said not to apply


def test_default_partition_limits_are_reported_as_not_ordering_fleets_partitions() -> None:
    spec = {"partitions": [{"clusterName": "c000"}, {"clusterName": "c001"}]}
    plan = plan_batches(spec, clusters(2))
    assert any("Fleet would start every partition without waiting" in n for n in plan.notes)
    spec["maxUnavailable"] = 0
    assert not any("without waiting" in n for n in plan_batches(spec, clusters(2)).notes)


@pytest.mark.parametrize(("value", "message"), [
    ("fast", "rolloutStrategy must be a mapping"),
    ({"maxUnavailable": "ten"}, "rolloutStrategy.maxUnavailable: invalid value 'ten'"),
    ({"maxUnavailable": "0"}, "rolloutStrategy.maxUnavailable: invalid value '0'"),
    ({"autoPartitionSize": True}, "rolloutStrategy.autoPartitionSize must be a number or a percentage"),
    ({"autoPartitionThreshold": "5"}, "rolloutStrategy.autoPartitionThreshold must be a number"),
    ({"partitions": {"a": 1}}, "rolloutStrategy.partitions must be a list"),
    ({"partitions": [{"clusterSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}]},
     "rolloutStrategy.partitions[0].clusterSelector.matchExpressions[0].operator"),
    ({"partitions": [{"maxUnavailable": "x%"}]}, "rolloutStrategy.partitions[0].maxUnavailable"),
])
def test_values_fleet_refuses_are_render_errors(value: Any, message: str) -> None:
    with pytest.raises(RenderError) as err:
        check_strategy(value, "fleet.yaml")
    assert message in str(err.value)


def test_what_does_not_fit_is_reported_by_name() -> None:
    notes = check_strategy({"maxNew": 10, "speed": 2, "partitions": [{"clusterName": "a", "weight": 1}]},
                           "fleet.yaml")
    text = "\n".join(notes)
    assert "rolloutStrategy.maxNew is not honoured" in text
    assert "rolloutStrategy.speed: unknown key" in text
    assert "rolloutStrategy.partitions[0].weight: unknown key" in text


def test_a_target_customization_cannot_change_the_strategy(tmp_path: Path) -> None:
    # Fleet's rolloutStrategy is in BundleSpec, not in BundleDeploymentOptions: a target has none.
    (tmp_path / "app").mkdir()
    (tmp_path / "app/cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "app/fleet.yaml").write_text(
        "rolloutStrategy: {maxUnavailable: 1}\n"
        "targetCustomizations:\n"
        "- name: dev\n  clusterSelector: {matchLabels: {env: dev}}\n"
        "  rolloutStrategy: {partitions: [{clusterName: x}]}\n")
    bundle = parse_fleet_yaml({"rolloutStrategy": {"maxUnavailable": 1},
                               "targetCustomizations": [{"name": "dev", "clusterName": "x",
                                                         "rolloutStrategy": {"maxUnavailable": 5}}]},
                              "fleet.yaml")
    assert bundle.rollout_strategy == {"maxUnavailable": 1}
    result = render(SourceTree(tmp_path), RenderRequest(path="app", cluster=ClusterContext(
        name="d1", labels={"env": "dev"})))
    assert any("targetCustomizations[0].rolloutStrategy is ignored" in w for w in result.warnings)
    assert not any("rolloutStrategy is not honoured" in w for w in result.warnings)


# ---------------------------------------------------------------------------------- partitions at run time


def test_a_partitions_max_unavailable_limits_its_updating_legs_and_failures_do_not_stop_the_batch() -> None:
    assert batch_slots(1, 0) == 1 and batch_slots(1, 1) == 0
    assert batch_slots(0, 0) == 1  # a limit of 0: one at a time
    assert batch_slots(3, 1) == 2


@pytest.mark.parametrize(("failed", "unavailable"), [(0, False), (1, False), (2, True), (3, True)])
def test_a_partition_is_unavailable_only_past_its_max_unavailable(failed: int, unavailable: bool) -> None:
    # Fleet's updatePartitionStatus: Unavailable > MaxUnavailable (a batch of 3 with maxUnavailable 1)
    assert partition_unavailable(failed, 1) is unavailable


@pytest.mark.parametrize(("failed", "max_partitions", "halts"), [
    (1, 0, False),  # limit 1, one failure: the partition is available, the next batch starts
    (2, 0, True),   # two failures: unavailable, more than 0 unavailable partitions allowed
    (2, 1, False),  # ... and maxUnavailablePartitions 1 lets the next batch start
    (3, 1, False),
])
def test_the_next_batch_starts_by_the_count_of_unavailable_partitions(
    failed: int, max_partitions: int, halts: bool
) -> None:
    over = unavailable_partitions({0: failed}, {0: 1, 1: 1}, 1, max_partitions)
    assert over == ([0] if halts else [])


def test_two_unavailable_partitions_pass_max_unavailable_partitions_one() -> None:
    batch_max = {0: 1, 1: 0, 2: 1}
    assert unavailable_partitions({0: 2}, batch_max, 2, 1) == []
    assert unavailable_partitions({0: 2, 1: 1}, batch_max, 2, 1) == [0, 1]
    assert unavailable_partitions({0: 2, 1: 1}, batch_max, 1, 1) == []  # only batches before the next count


def test_a_plans_partition_limits_drive_the_run_time_rules() -> None:
    # the mapped plan's own numbers: a batch of 3 with maxUnavailable 1, then the rest
    spec = {"maxUnavailablePartitions": 0, "partitions": [
        {"name": "first", "clusterSelector": {"matchLabels": {"wave": "1"}}, "maxUnavailable": 1},
        {"name": "rest", "clusterSelector": {"matchLabels": {"wave": "2"}}}]}
    wave = {f"c{i:03d}": {"wave": "1" if i < 3 else "2"} for i in range(5)}
    plan = plan_batches(spec, clusters(5, **wave))
    assert plan.batches is not None
    batch_max = {i: b.max_unavailable for i, b in enumerate(plan.batches)}
    assert batch_max == {0: 1, 1: 2}
    assert unavailable_partitions({0: 1}, batch_max, 1, plan.max_unavailable_partitions) == []
    assert unavailable_partitions({0: 2}, batch_max, 1, plan.max_unavailable_partitions) == [0]
