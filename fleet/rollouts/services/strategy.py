"""A rollout's batches and limits: its group's settings, or, for a mapping whose fleet.yaml declares a
``rolloutStrategy``, what Rancher Fleet's strategy means in Fleetgate's terms (for that mapping's rollouts
only; the group is not changed).

* ``Rollout.strategy`` holds ``{"source": "fleet.yaml", "file", "spec", "notes"}`` from the rollout's render
  (``lifecycle._render``), and, once queued, the plan (``fleet.sources.render.fleetrollout.plan_batches``):
  ``batches`` ([{name, clusters, max_unavailable}] or None: the group's batches), ``unmatched`` (clusters no
  partition holds: not rolled out, as in Fleet), ``max_unavailable`` (the bundle's limit as a count, or None)
  and ``max_unavailable_partitions``.
* ``limits(rollout)`` is what the coordinator (``fanout.advance``) obeys: the halt threshold, parallelism,
  each batch's own limit and how many batches may pass theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.render import ClusterContext
from fleet.sources.render.fleetrollout import BatchPlan, plan_batches

FROM_FLEET = "fleet.yaml"


def declared(rollout: Rollout) -> dict[str, Any] | None:
    """The rollout's fleet.yaml strategy spec, or None (the group's settings)."""
    data = rollout.strategy or {}
    if data.get("source") != FROM_FLEET or not data.get("spec"):
        return None
    return dict(data["spec"])


def plan(rollout: Rollout, syncs: Sequence[ClusterSync]) -> BatchPlan | None:
    """Fleet's partitions of the rollout's clusters (``syncs``, in rollout order), or None."""
    spec = declared(rollout)
    if spec is None:
        return None
    group = rollout.mapping.cluster_group
    contexts = [
        ClusterContext(
            name=cs.cluster.name,
            labels=dict(cs.cluster.labels or {}),
            group=group.name,
            group_labels=dict(group.labels or {}),
        )
        for cs in syncs
    ]
    return plan_batches(spec, contexts)


@dataclass(frozen=True)
class Limits:
    """What the coordinator obeys for one rollout."""

    failure_threshold: int
    max_parallel: int
    source: str = "group"  # "group", or the fleet.yaml file
    max_unavailable: int | None = None  # fleet.yaml maxUnavailable as a count: failed + in flight stay below
    batch_max: dict[int, int] = field(default_factory=dict)  # a batch's own limit (fleet.yaml partitions)
    batch_names: dict[int, str] = field(default_factory=dict)
    max_unavailable_partitions: int = 0

    @property
    def from_fleet(self) -> bool:
        return self.source != "group"


def limits(rollout: Rollout) -> Limits:
    group = rollout.mapping.cluster_group
    data = rollout.strategy or {}
    if data.get("source") != FROM_FLEET or not data.get("spec"):
        return Limits(failure_threshold=group.failure_threshold, max_parallel=group.max_parallel)
    threshold, parallel = group.failure_threshold, group.max_parallel
    most = data.get("max_unavailable")
    if isinstance(most, int):
        most = max(1, most)
        threshold = most - 1  # Fleet updates no further cluster once this many are unavailable
        parallel = min(parallel, most)
    batches = data.get("batches") or []
    return Limits(
        failure_threshold=threshold,
        max_parallel=max(1, parallel),
        source=str(data.get("file") or FROM_FLEET),
        max_unavailable=most if isinstance(most, int) else None,
        batch_max={i: int(b.get("max_unavailable") or 0) for i, b in enumerate(batches)},
        batch_names={i: str(b.get("name") or "") for i, b in enumerate(batches)},
        max_unavailable_partitions=int(data.get("max_unavailable_partitions") or 0),
    )


def describe(rollout: Rollout) -> str:
    """One line for the rollout's audit trail and page: where its batches come from."""
    data = rollout.strategy or {}
    if data.get("source") != FROM_FLEET or not data.get("spec"):
        return ""
    parts = []
    batches = data.get("batches")
    if batches is not None:
        parts.append(f"{len(batches)} batch(es) from partitions: "
                     + ", ".join(f"{b['name']} ({len(b['clusters'])})" for b in batches))
    if data.get("max_unavailable") is not None:
        parts.append(f"halts once {data['max_unavailable']} cluster(s) failed (maxUnavailable)")
    if data.get("unmatched"):
        parts.append(f"{len(data['unmatched'])} cluster(s) in no partition, not rolled out")
    return f"fleet.yaml rolloutStrategy ({data.get('file')}): " + ("; ".join(parts) or "the group's batches")
