"""What people do to rollouts: approve, reject, sync (manual start), pause, resume, cancel, roll back,
and "sync now" for a cluster or a group. Permission to act on the rollout is checked by the caller (the
API restricts by role and scope); the rules about *who* may approve are checked here."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from clusters.models import Cluster, ClusterGroup
from fleet.access.restrict import groups_where, has_permission
from fleet.core.errors import ErrorKind
from fleet.rollouts import dispatch, tasks
from fleet.rollouts.choices import (
    FINAL_ROLLOUT_STATES,
    ApprovalDecision,
    RolloutState,
    RolloutTrigger,
    SyncState,
)
from fleet.rollouts.models import Approval, ClusterSync, Rollout, SyncedState
from fleet.rollouts.services import approval as approval_rule
from fleet.rollouts.services.common import RolloutError, atomic, locked_rollout, note, transition
from fleet.rollouts.services.lifecycle import create_rollout, queue
from fleet.sources.models import Commit, PathMapping

FORBIDDEN = ErrorKind.FORBIDDEN


def _is_author(user: Any, rollout: Rollout) -> bool:
    email = (getattr(user, "email", "") or "").strip().lower()
    return bool(email) and email == (rollout.commit.author_email or "").strip().lower()


def approve(rollout: Rollout, user: Any) -> Rollout:
    """One approval by ``user``; when the group's number of distinct approvers is reached, the rollout is
    queued (or waits for a sync request in a manual group)."""
    with atomic():
        rollout = locked_rollout(rollout.pk)
        if rollout.state != RolloutState.AWAITING_APPROVAL:
            raise RolloutError(f"the rollout is {rollout.state}, not awaiting approval", conflict=True)
        if not has_permission(user, Rollout, "approve", rollout):
            raise RolloutError("you may not approve rollouts of this group", kind=FORBIDDEN)
        # Approvers need the approver role in every group that asks for approval of these clusters, and
        # the count follows the strictest of them as the groups are now (services/approval.py).
        rule = approval_rule.rule_for(rollout)
        missing = approval_rule.groups_not_approvable_by(user, rule)
        if missing:
            raise RolloutError(
                "you may not approve this rollout: it reaches clusters of "
                f"{', '.join(missing)}, where you do not hold the approver role",
                kind=FORBIDDEN,
            )
        if rule.count > rollout.approvals_required:
            rollout.approvals_required = rule.count
            rollout.save(update_fields=["approvals_required", "updated"])
        if _is_author(user, rollout):
            raise RolloutError("the author of the commit cannot approve its rollout", kind=FORBIDDEN)
        if rollout.created_by_id is not None and rollout.created_by_id == user.pk:
            raise RolloutError("the user who started the rollout cannot approve it", kind=FORBIDDEN)
        try:
            Approval.objects.create(rollout=rollout, user=user, decision=ApprovalDecision.APPROVE)
        except IntegrityError:
            raise RolloutError("you have already decided on this rollout", conflict=True) from None
        given = Approval.objects.filter(
            rollout=rollout, decision=ApprovalDecision.APPROVE, lapsed=False
        ).count()
        note(
            rollout,
            "rollout.approval",
            f"approved by {user.get_username()} ({given} of {rollout.approvals_required})",
            approvals=given,
        )
        if given >= rollout.approvals_required:
            rollout.approved_at = timezone.now()
            if rollout.manual:
                transition(
                    rollout,
                    RolloutState.APPROVED,
                    f"approved by {given} user(s); waiting for a sync request",
                    approved_at=rollout.approved_at,
                )
            else:
                rollout.save(update_fields=["approved_at", "updated"])
                queue(rollout, f"approved by {given} user(s)")
    return rollout


def reject(rollout: Rollout, user: Any, reason: str) -> Rollout:
    reason = (reason or "").strip()
    if not reason:
        raise RolloutError("a reason is required to reject a rollout", field="reason")
    with atomic():
        rollout = locked_rollout(rollout.pk)
        if rollout.state != RolloutState.AWAITING_APPROVAL:
            raise RolloutError(f"the rollout is {rollout.state}, not awaiting approval", conflict=True)
        if not has_permission(user, Rollout, "approve", rollout):
            raise RolloutError("you may not reject rollouts of this group", kind=FORBIDDEN)
        try:
            Approval.objects.create(
                rollout=rollout, user=user, decision=ApprovalDecision.REJECT, reason=reason
            )
        except IntegrityError:
            raise RolloutError("you have already decided on this rollout", conflict=True) from None
        rollout.syncs.exclude(state__in=[SyncState.BLOCKED]).update(state=SyncState.CANCELLED)
        transition(rollout, RolloutState.REJECTED, f"rejected by {user.get_username()}: {reason}"[:2000])
    return rollout


def start_sync(rollout: Rollout, user: Any) -> Rollout:
    """A manual start: a rollout that passed the gate (and approval, where required) in a manual group."""
    with atomic():
        rollout = locked_rollout(rollout.pk)
        ready = rollout.state == RolloutState.APPROVED or (
            rollout.state == RolloutState.EVALUATED and rollout.manual and not rollout.approval_required
        )
        if not ready:
            raise RolloutError(
                f"the rollout is {rollout.state}; only a rollout that passed the gate and its approvals "
                "and waits for a sync request can be started",
                conflict=True,
            )
        queue(rollout, f"sync requested by {user.get_username()}")
    return rollout


def pause(rollout: Rollout, user: Any) -> Rollout:
    with atomic():
        rollout = locked_rollout(rollout.pk)
        if rollout.state in FINAL_ROLLOUT_STATES:
            raise RolloutError(f"the rollout is {rollout.state}", conflict=True)
        if rollout.paused:
            raise RolloutError("the rollout is already paused", conflict=True)
        rollout.paused = True
        rollout.save(update_fields=["paused", "updated"])
        note(rollout, "rollout.paused", f"paused by {user.get_username()}; clusters in flight finish")
    return rollout


def resume(rollout: Rollout, user: Any) -> Rollout:
    """Resume a paused rollout, or a halted one (its failed clusters are tried again)."""
    with atomic():
        rollout = locked_rollout(rollout.pk)
        if rollout.state == RolloutState.HALTED:
            retried = ClusterSync.objects.filter(rollout=rollout, state=SyncState.FAILED).update(
                state=SyncState.PENDING, finished_at=None
            )
            rollout.paused = False
            transition(
                rollout,
                RolloutState.SYNCING,
                f"resumed by {user.get_username()}; {retried} failed cluster(s) tried again",
                action="rollout.resumed",
                paused=False,
            )
        elif rollout.paused:
            rollout.paused = False
            rollout.save(update_fields=["paused", "updated"])
            note(rollout, "rollout.resumed", f"resumed by {user.get_username()}")
        else:
            raise RolloutError(f"the rollout is {rollout.state} and not paused", conflict=True)
        dispatch.send(tasks.advance, rollout.pk)
    return rollout


def cancel(rollout: Rollout, user: Any) -> Rollout:
    with atomic():
        rollout = locked_rollout(rollout.pk)
        if rollout.state in FINAL_ROLLOUT_STATES:
            raise RolloutError(f"the rollout is already {rollout.state}", conflict=True)
        count = ClusterSync.objects.filter(
            rollout=rollout, state__in=[SyncState.PENDING, SyncState.WAITING, SyncState.QUEUED]
        ).update(state=SyncState.CANCELLED, finished_at=timezone.now())
        transition(
            rollout,
            RolloutState.CANCELLED,
            f"cancelled by {user.get_username()}; {count} cluster(s) not started",
            paused=False,
        )
    return rollout


def rollback(rollout: Rollout, commit: Commit, user: Any) -> Rollout:
    """A new rollout of an earlier commit of the same mapping; it passes the gate and approval like any."""
    if commit.repository_id != rollout.mapping.repository_id:
        raise RolloutError("the commit is not from this mapping's repository", field="commit")
    if commit.sequence >= rollout.commit.sequence and commit.pk != rollout.commit_id:
        raise RolloutError("roll back to an earlier commit than the rollout's", field="commit")
    return create_rollout(
        commit, rollout.mapping, trigger=RolloutTrigger.ROLLBACK, user=user, rollback_of=rollout
    )


def _current_commit(mapping: PathMapping) -> Commit | None:
    last = (
        Rollout.objects.filter(mapping=mapping, state=RolloutState.SYNCED)
        .exclude(trigger=RolloutTrigger.SYNC_NOW)
        .order_by("-id")
        .select_related("commit")
        .first()
    )
    return last.commit if last else None


def sync_now(
    user: Any, *, cluster: Cluster | None = None, group: ClusterGroup | None = None
) -> list[Rollout]:
    """Re-sync what Git says (the last synced commit of each mapping) to one cluster or a whole group,
    for the mappings the user may sync. Each becomes a rollout through the gate; approval is not asked
    again for a commit that was already approved for the mapping."""
    if (cluster is None) == (group is None):
        raise RolloutError("give a cluster or a group", field="cluster")
    scope = groups_where(user, Rollout, "sync")
    if group is not None:
        groups = [group]
        targets: list[Cluster] | None = None
    elif cluster is not None:
        groups = list(cluster.groups.all())
        targets = [cluster]
    allowed = [g for g in groups if scope.covers(g.pk)]
    if not allowed:
        raise RolloutError(
            "you may not sync this cluster or group",
            kind=FORBIDDEN,
            field="cluster" if cluster else "group",
        )
    rollouts = []
    for mapping in PathMapping.objects.filter(cluster_group__in=allowed, enabled=True).select_related(
        "cluster_group", "repository"
    ):
        commit = _current_commit(mapping)
        if commit is None:
            continue
        rollouts.append(
            create_rollout(commit, mapping, trigger=RolloutTrigger.SYNC_NOW, user=user, clusters=targets)
        )
    return rollouts


__all__ = [
    "Approval",
    "RolloutError",
    "SyncedState",
    "approve",
    "cancel",
    "pause",
    "reject",
    "resume",
    "rollback",
    "start_sync",
    "sync_now",
]
