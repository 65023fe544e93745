"""Dependencies between mappings (``dependsOn``): which mappings one waits for, checked when it is saved.

A mapping depends on the mappings set on it (API, admin: ``PathMapping.depends_on``) and on those its
``fleetgate.yaml`` names (``dependsOn``, stored at each render as ``declared_depends_on``, by label
``repository/mapping``). On each cluster it syncs only after every dependency is synced at its newest
rollout and healthy there (``fleet.rollouts.services.dependencies`` decides that per cluster).

Saving refuses, with a ``DependencyError``:

* a cycle, named from the mapping being saved: ``apps/web -> infra/crds -> apps/web``;
* a dependency the user may not see (403, like every other scope refusal);
* a dependency whose cluster group shares no cluster with the mapping's group: it could never be ready on
  any cluster the mapping targets (a partial overlap is allowed; where the dependency is not targeted
  the dependent waits, with that reason, as Flux does with a missing dependency).

The graph is small (one row per edge); it is read whole, and the cycle search is the standard library's
``graphlib`` (a topological sort that reports the cycle it meets).
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection

from fleet.access.restrict import restrict
from fleet.core.errors import DomainError, ErrorKind
from fleet.sources.models import PathMapping

FIELD = "depends_on"


class DependencyError(DomainError):
    """A dependency refused at save; ``cycle`` holds the labels of the cycle when that was the reason."""

    def __init__(self, message: str, *, kind: ErrorKind = ErrorKind.INVALID,
                 cycle: Sequence[str] = ()) -> None:
        super().__init__(message, kind=kind, field=FIELD)
        self.cycle = tuple(cycle)


# pg_advisory_xact_lock key of the dependency graph ("fgdeps" in ASCII).
GRAPH_LOCK_KEY = 0x666764657073


def lock_dependency_graph() -> None:
    """Serialize changes of the dependency graph until the current transaction ends, so that a check and the
    save it allows see the same graph. PostgreSQL: a transaction-level advisory lock; SQLite: writers are
    serialized already (transactions begin IMMEDIATE, fleet/settings.py)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [GRAPH_LOCK_KEY])


def label(repository_name: str, name: str) -> str:
    return f"{repository_name}/{name}"


def mapping_label(mapping: PathMapping) -> str:
    return label(mapping.repository.name, mapping.name)


def resolve_label(text: str, repository_name: str) -> str:
    """A ``dependsOn`` entry of a fleetgate.yaml as a label: ``crds`` is a mapping of the same repository,
    ``infra/crds`` the mapping ``crds`` of repository ``infra``."""
    return text if "/" in text else label(repository_name, text)


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[int, str]]:
    """The dependencies of every mapping by label: the set ones, the declared ones (fleetgate.yaml), and
    the label of every mapping id."""
    labels = {
        pk: label(repo, name)
        for pk, repo, name in PathMapping.objects.values_list("pk", "repository__name", "name")
    }
    set_edges: dict[str, set[str]] = {name: set() for name in labels.values()}
    declared_edges: dict[str, set[str]] = {}
    through = PathMapping.depends_on.through
    for src, dst in through.objects.values_list("from_pathmapping_id", "to_pathmapping_id"):
        set_edges[labels[src]].add(labels[dst])
    for pk, repo, declared in PathMapping.objects.exclude(declared_depends_on=[]).values_list(
        "pk", "repository__name", "declared_depends_on"
    ):
        declared_edges[labels[pk]] = {resolve_label(str(d), repo) for d in declared or []}
    return set_edges, declared_edges, labels


def _merge(set_edges: Mapping[str, set[str]], declared_edges: Mapping[str, set[str]]) -> dict[str, set[str]]:
    graph = {k: set(v) for k, v in set_edges.items()}
    for k, v in declared_edges.items():
        graph.setdefault(k, set()).update(v)
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]], start: str | None = None) -> list[str] | None:
    """A cycle of the dependency graph as labels in dependency order (``a -> b -> a`` is ``[a, b, a]``),
    starting at ``start`` when it is on the cycle; None when there is none."""
    try:
        graphlib.TopologicalSorter({k: set(v) for k, v in graph.items()}).prepare()
    except graphlib.CycleError as exc:
        cycle = list(reversed(exc.args[1]))  # graphlib lists it from dependency to dependent
        ring = cycle[:-1]
        if start in ring:
            i = ring.index(start)
            ring = ring[i:] + ring[:i]
        return [*ring, ring[0]]
    return None


def cycle_with(old_label: str | None, new_label: str, depends_on: Iterable[str]) -> list[str] | None:
    """The cycle the mapping ``new_label`` (called ``old_label`` before a rename, None when new) would close
    if the dependencies set on it were ``depends_on`` (labels); what its fleetgate.yaml declares stays."""
    set_edges, declared_edges, _ = _graph()
    declared = declared_edges.pop(old_label, set()) if old_label else set()
    if old_label and old_label != new_label:
        set_edges.pop(old_label, None)
        # Set dependencies are kept by id: they follow a rename (declared ones name the mapping: they do not).
        for deps in set_edges.values():
            if old_label in deps:
                deps.discard(old_label)
                deps.add(new_label)
    set_edges[new_label] = set(depends_on)
    declared_edges[new_label] = declared
    return find_cycle(_merge(set_edges, declared_edges), new_label)


def describe_cycle(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)


def check_dependencies(
    *,
    user: Any,
    mapping: PathMapping | None,
    repository_name: str,
    name: str,
    cluster_group_id: int,
    depends_on: Sequence[PathMapping],
) -> None:
    """Refuse (DependencyError) dependencies the user may not set on the mapping ``repository_name/name``
    (``mapping`` is the stored one, None when creating): see the module's docstring."""
    new_label = label(repository_name, name)
    if not depends_on:
        return
    ids = {m.pk for m in depends_on}
    if user is not None:
        visible = restrict(PathMapping.objects.filter(pk__in=ids), user, "view")
        hidden = sorted(ids - set(visible.values_list("pk", flat=True)))
        if hidden:
            raise DependencyError(
                "You may not depend on mapping(s) " + ", ".join(f"#{pk}" for pk in hidden)
                + ": they are outside the groups you can see.",
                kind=ErrorKind.FORBIDDEN,
            )
    deps = list(PathMapping.objects.filter(pk__in=ids).select_related("repository", "cluster_group"))
    if mapping is not None and mapping.pk in ids:
        raise DependencyError(f"dependency cycle: {new_label} -> {new_label}", cycle=[new_label, new_label])
    from clusters.models import ClusterGroup

    members: dict[int, set[int]] = {}
    for group_id, cluster_id in ClusterGroup.members.through.objects.filter(
        clustergroup_id__in={cluster_group_id} | {d.cluster_group_id for d in deps}
    ).values_list("clustergroup_id", "cluster_id"):
        members.setdefault(group_id, set()).add(cluster_id)
    for dep in deps:
        if dep.cluster_group_id != cluster_group_id and not (
            members.get(cluster_group_id, set()) & members.get(dep.cluster_group_id, set())
        ):
            raise DependencyError(
                f"{mapping_label(dep)} is synced to group '{dep.cluster_group.name}', which shares no "
                "cluster with this mapping's group: it could never be ready where this mapping syncs"
            )
    old_label = mapping_label(PathMapping.objects.select_related("repository").get(pk=mapping.pk)) \
        if mapping is not None and mapping.pk else None
    cycle = cycle_with(old_label, new_label, [mapping_label(d) for d in deps])
    if cycle:
        raise DependencyError(f"dependency cycle: {describe_cycle(cycle)}", cycle=cycle)


def check_declared(mapping: PathMapping, declared: Sequence[str]) -> list[str] | None:
    """The cycle that a fleetgate.yaml's ``dependsOn`` (labels) would close for ``mapping``, if any."""
    set_edges, declared_edges, _ = _graph()
    own = mapping_label(mapping)
    declared_edges[own] = set(declared)
    return find_cycle(_merge(set_edges, declared_edges), own)


def check_delete(mapping: PathMapping) -> None:
    """Refuse (409) to delete a mapping that others depend on by the dependencies set on them: the edge
    would vanish with it and they would sync without waiting. (A fleetgate.yaml naming a deleted mapping
    keeps its dependents waiting, with the reason "does not exist", as Flux does.)"""
    dependents = sorted(mapping_label(m) for m in mapping.dependents.select_related("repository"))
    if dependents:
        raise DependencyError(
            f"{', '.join(dependents)} depend(s) on {mapping_label(mapping)}: remove the dependency first",
            kind=ErrorKind.CONFLICT,
        )
