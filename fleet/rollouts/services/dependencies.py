"""Is a mapping's dependency ready on a cluster? (``dependsOn``; the graph is kept by the sources app,
``fleet.sources.services.dependencies``.)

A dependency D of a mapping is ready on cluster C when D's newest leg on C (its latest rollout that
targets C; legs superseded by a newer rollout do not count) synced, and D's synced state on C is healthy.
Otherwise the dependent's leg on C waits, with the reason per dependency:

* D's newest leg is pending, queued or syncing (its rollout waits for approval, a window, a batch...):
  ``not synced yet (rollout 12 is awaiting_approval)``;
* it failed, was blocked by policy or cancelled: ``failed: <error>`` and so on; the dependent waits until a
  new rollout of D (a commit, "sync now", a rollback) syncs there;
* it synced but is not healthy: ``synced but Degraded``;
* D has no leg on C: ``not targeted on this cluster`` when C is not in D's group (Flux: a missing
  dependency is not ready), else ``not synced on this cluster yet``;
* D does not exist (a fleetgate.yaml names a mapping that is not there): ``does not exist``.

Only direct dependencies are checked: each dependency waits for its own. The check reads a constant number
of queries for any number of clusters and dependencies (``waits``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import Max, Q

from clusters.models import ClusterGroup
from fleet.rollouts.choices import Health, SyncState
from fleet.rollouts.models import ClusterSync, SyncedState
from fleet.sources.models import PathMapping
from fleet.sources.services.dependencies import label, resolve_label

WAITING = "waiting for dependencies: "


@dataclass(frozen=True)
class Wait:
    """One dependency not ready on one cluster."""

    mapping: str  # repository/mapping
    mapping_id: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"mapping": self.mapping, "mapping_id": self.mapping_id, "reason": self.reason}


def dependencies_of(mapping: PathMapping) -> tuple[list[PathMapping], list[str]]:
    """The mappings ``mapping`` depends on (set and declared in fleetgate.yaml), and the declared labels
    that name no mapping. One query."""
    repo_name = mapping.repository.name
    declared = [resolve_label(str(d), repo_name) for d in mapping.declared_depends_on or []]
    q = Q(dependents=mapping)
    for text in declared:
        repo, _, name = text.partition("/")
        q |= Q(repository__name=repo, name=name)
    found = list(PathMapping.objects.filter(q).select_related("repository").distinct().order_by("pk"))
    known = {label(m.repository.name, m.name) for m in found}
    missing = sorted({d for d in declared if d not in known})
    return found, missing


def waits(
    mapping: PathMapping,
    cluster_ids: Iterable[int],
    known: tuple[list[PathMapping], list[str]] | None = None,
) -> dict[int, list[Wait]]:
    """For each cluster in ``cluster_ids``, the dependencies of ``mapping`` not ready there (empty: ready).
    ``known``: ``dependencies_of(mapping)`` when the caller has it. At most five queries, whatever the
    number of clusters and dependencies."""
    clusters = sorted(set(cluster_ids))
    deps, missing = known if known is not None else dependencies_of(mapping)
    out: dict[int, list[Wait]] = {c: [Wait(m, None, "does not exist") for m in missing] for c in clusters}
    if not deps or not clusters:
        return out
    dep_ids = [d.pk for d in deps]
    newest = {
        (row["rollout__mapping_id"], row["cluster_id"]): row["last"]
        for row in ClusterSync.objects.filter(rollout__mapping__in=dep_ids, cluster__in=clusters)
        .exclude(state=SyncState.SUPERSEDED)
        .values("rollout__mapping_id", "cluster_id")
        .annotate(last=Max("rollout_id"))
    }
    legs = {
        (row["rollout__mapping_id"], row["cluster_id"]): row
        for row in ClusterSync.objects.filter(
            rollout_id__in=set(newest.values()), cluster__in=clusters
        ).values("rollout_id", "rollout__mapping_id", "rollout__state", "cluster_id", "state", "error")
        if newest.get((row["rollout__mapping_id"], row["cluster_id"])) == row["rollout_id"]
    }
    health = {
        (row["mapping_id"], row["cluster_id"]): row["health"]
        for row in SyncedState.objects.filter(mapping__in=dep_ids, cluster__in=clusters).values(
            "mapping_id", "cluster_id", "health"
        )
    }
    members = set(
        ClusterGroup.members.through.objects.filter(
            clustergroup_id__in={d.cluster_group_id for d in deps}, cluster_id__in=clusters
        ).values_list("clustergroup_id", "cluster_id")
    )
    for c in clusters:
        for dep in deps:
            reason = _not_ready(legs.get((dep.pk, c)), health.get((dep.pk, c)),
                                (dep.cluster_group_id, c) in members)
            if reason:
                out[c].append(Wait(label(dep.repository.name, dep.name), dep.pk, reason))
    return out


def _not_ready(leg: Mapping[str, Any] | None, health: str | None, targeted: bool) -> str:
    """Why a dependency is not ready on a cluster, or "" when it is."""
    if leg is None:
        if health == Health.HEALTHY:
            return ""  # synced before its rollouts were kept (or they were deleted): what is there counts
        return "not synced on this cluster yet" if targeted else "not targeted on this cluster"
    state = leg["state"]
    if state == SyncState.SYNCED:
        if health == Health.HEALTHY:
            return ""
        return f"synced but {health or 'health unknown'}"
    if state == SyncState.FAILED:
        return f"failed: {leg['error'] or 'no detail'}"[:500]
    if state == SyncState.BLOCKED:
        return f"blocked by policy (rollout {leg['rollout_id']})"
    if state == SyncState.CANCELLED:
        return f"cancelled (rollout {leg['rollout_id']} is {leg['rollout__state']})"
    if state == SyncState.WAITING:
        return f"waiting for its own dependencies (rollout {leg['rollout_id']})"
    return f"not synced yet (rollout {leg['rollout_id']} is {leg['rollout__state']}, this cluster {state})"


def describe(waits_here: list[Wait], cluster_name: str) -> str:
    """``waiting for dependencies: infra/crds on prod-1 (failed: ...)``."""
    parts = [f"{w.mapping} on {cluster_name} ({w.reason})" for w in waits_here]
    return WAITING + "; ".join(parts)


def waits_for(waiting_for: list[dict[str, Any]] | None, mapping: PathMapping) -> list[dict[str, Any]]:
    """The entries of a leg's ``waiting_for`` that name ``mapping``: by id, or by its label (a dependency
    declared in fleetgate.yaml before the mapping existed)."""
    own = label(mapping.repository.name, mapping.name)
    return [w for w in waiting_for or [] if w.get("mapping_id") == mapping.pk or w.get("mapping") == own]


def wake_dependents(mapping: PathMapping, *cluster_ids: int) -> list[int]:
    """The rollouts with a leg on one of ``cluster_ids`` waiting for ``mapping``: ``advance`` is queued for
    each (legs of ``mapping`` there just finished). One query however many clusters; nothing polls."""
    from fleet.rollouts import dispatch, tasks
    from fleet.rollouts.choices import RolloutState

    rows = ClusterSync.objects.filter(
        state=SyncState.WAITING,
        cluster_id__in=cluster_ids,
        rollout__state__in=(RolloutState.QUEUED, RolloutState.SYNCING),
        rollout__paused=False,
    ).order_by().values_list("rollout_id", "waiting_for")  # no join of the clusters for the model's ordering
    woken = sorted({rollout_id for rollout_id, waiting_for in rows if waits_for(waiting_for, mapping)})
    for rollout_id in woken:
        dispatch.send(tasks.advance, rollout_id)
    return woken
