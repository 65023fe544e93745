"""Reviews that still hold when a leg syncs.

The gate reviews each target against its live state when the rollout is prepared; a leg that then waits
(for approval, a sync request, a sync window, a batch or a dependency) syncs later, when the cluster may have
changed: an object reviewed as a CREATE now exists (an UPDATE policy applies), one reviewed as an UPDATE is
gone, the sync would prune something it did not prune then, or no longer prune what it did.

So the leg keeps what was reviewed (``ClusterSync.evaluation["reviewed"]``: the objects reviewed as CREATE
and as DELETE), and when it is claimed for sync the live state is read again (the same connector read as the
gate's) and compared. If the split differs, the leg goes through the gate again before anything is applied:
the new decision replaces the old one (a new Evaluation, the event ``sync.rereviewed`` with the reason "live
state changed since review" and the differences), and a blocking decision blocks the leg.
"""

from __future__ import annotations

from typing import Any

from fleet.rollouts import ports

REASON = "live state changed since review"


def _key(ref: Any) -> tuple[str, str, str, str]:
    return tuple(ref.key)  # type: ignore[return-value]


def reviewed(live: ports.LiveState) -> dict[str, list[list[str]]]:
    """What a live review saw, to compare at sync time: the objects reviewed as CREATE (absent) and those
    reviewed as DELETE (the prunes), as [group, kind, namespace, name]."""
    return {
        "create": sorted(list(_key(lo.ref)) for lo in live.objects if lo.live is None),
        "delete": sorted(list(_key(ref)) for ref, _obj in live.prunes),
    }


def _name(key: tuple[str, ...]) -> str:
    _group, kind, namespace, name = key
    return f"{kind} {namespace + '/' if namespace else ''}{name}"


def changes(before: dict[str, Any], live: ports.LiveState) -> list[str]:
    """How the live state differs from what was reviewed (empty: the review still holds)."""
    now = reviewed(live)
    was_create = {tuple(k) for k in before.get("create") or []}
    was_delete = {tuple(k) for k in before.get("delete") or []}
    is_create = {tuple(k) for k in now["create"]}
    is_delete = {tuple(k) for k in now["delete"]}
    out = [
        f"{_name(k)} was reviewed as CREATE and exists now (UPDATE)" for k in sorted(was_create - is_create)
    ]
    out += [
        f"{_name(k)} was reviewed as UPDATE and is gone now (CREATE)" for k in sorted(is_create - was_create)
    ]
    out += [f"{_name(k)} would be pruned now (DELETE, not reviewed)" for k in sorted(is_delete - was_delete)]
    out += [
        f"{_name(k)} was reviewed as DELETE and would not be pruned now"
        for k in sorted(was_delete - is_delete)
    ]
    return out


def review_again(rollout: Any, cs: Any, live: ports.LiveState) -> ports.PolicyResult:
    """The gate's decision for the leg against ``live`` (stored as an Evaluation, audited by the gate)."""
    group = rollout.mapping.cluster_group
    targets, reviews = ports.review_targets(
        [(cs.cluster, cs.desired, live)], create_only_allowed=group.create_only_review
    )
    try:
        results = ports.policy_decisions(
            rollout.commit,
            rollout.mapping,
            targets,
            reviews=reviews,
            user_info=ports.review_user(rollout.created_by, rollout.commit.author_email),
        )
    except Exception as exc:  # fail closed, as the first review does
        return ports.PolicyResult(
            "blocked", {"outcome": "blocked", "errors": [f"{type(exc).__name__}: {exc}"]}
        )
    result = results.get(cs.cluster_id) or ports.PolicyResult("blocked", {"errors": ["not evaluated"]})
    result.summary["reviewed"] = reviewed(live)
    return result
