"""Who may change which clusters a group holds: the rule, free of Django.

Membership is a set of (group id, cluster id) pairs. A change is the pairs before and the pairs after it.
For a user whose scope (for the permission being used) is not "all clusters", a change is refused when
- a group outside the scope gains a member (a new group is outside every group scope), or
- a group outside the scope loses a member, or
- a cluster outside the scope joins any group (a cluster is in scope when, before the change, it belongs to
  a group of the scope; a cluster being created by the user counts as in scope, its groups are checked).

The Django side (clusters/membership_guard.py) computes the pairs, with the database, and calls `refusals`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

Pair = tuple[int, int]  # (group id, cluster id)


class Kind(StrEnum):
    GROUP_GAINS = "group-gains"  # a group outside the scope would gain this cluster
    GROUP_LOSES = "group-loses"  # a group outside the scope would lose this cluster
    CLUSTER_JOINS = "cluster-joins"  # a cluster outside the scope would join this group


@dataclass(frozen=True, order=True)
class Refusal:
    kind: Kind
    group_id: int
    cluster_id: int


def added(before: Iterable[Pair], after: Iterable[Pair]) -> set[Pair]:
    return set(after) - set(before)



def refusals(
    before: Iterable[Pair],
    after: Iterable[Pair],
    *,
    everywhere: bool,
    groups_in_scope: Collection[int],
    clusters_in_scope: Collection[int],
) -> list[Refusal]:
    """Every reason to refuse the change from ``before`` to ``after`` (empty: allowed), sorted."""
    if everywhere:
        return []
    before, after = set(before), set(after)
    out: set[Refusal] = set()
    for group_id, cluster_id in after - before:
        if group_id not in groups_in_scope:
            out.add(Refusal(Kind.GROUP_GAINS, group_id, cluster_id))
        if cluster_id not in clusters_in_scope:
            out.add(Refusal(Kind.CLUSTER_JOINS, group_id, cluster_id))
    for group_id, cluster_id in before - after:
        if group_id not in groups_in_scope:
            out.add(Refusal(Kind.GROUP_LOSES, group_id, cluster_id))
    return sorted(out)


def describe(
    found: Iterable[Refusal], group_names: Mapping[int, str], cluster_names: Mapping[int, str]
) -> str:
    """One sentence per kind, naming the groups and clusters the user may see; others are counted."""
    by_kind: dict[Kind, list[Refusal]] = {}
    for refusal in found:
        by_kind.setdefault(refusal.kind, []).append(refusal)

    def group(pk: int) -> str:
        return group_names.get(pk, "a group you may not see")

    def clusters(items: list[Refusal]) -> str:
        shown = sorted({cluster_names[r.cluster_id] for r in items if r.cluster_id in cluster_names})
        hidden = len({r.cluster_id for r in items if r.cluster_id not in cluster_names})
        if hidden:
            shown.append(f"{hidden} cluster(s) you may not see")
        return ", ".join(shown)

    def per_group(items: list[Refusal]) -> str:
        groups: dict[str, list[Refusal]] = {}
        for r in items:
            groups.setdefault(group(r.group_id), []).append(r)
        return "; ".join(f"{name}: {clusters(rs)}" for name, rs in sorted(groups.items()))

    parts = []
    if Kind.CLUSTER_JOINS in by_kind:
        parts.append(
            "clusters outside your scope would join groups (" + per_group(by_kind[Kind.CLUSTER_JOINS]) + ")"
        )
    if Kind.GROUP_GAINS in by_kind:
        parts.append(
            "groups outside your scope would gain members (" + per_group(by_kind[Kind.GROUP_GAINS]) + ")"
        )
    if Kind.GROUP_LOSES in by_kind:
        parts.append(
            "groups outside your scope would lose members (" + per_group(by_kind[Kind.GROUP_LOSES]) + ")"
        )
    return "This change of group membership is outside the groups you manage: " + "; ".join(parts) + "."
