"""Resuming from the database: legs whose worker died, rollouts whose next step was never queued.

Run at every worker start (``worker_ready``) and by beat. A leg in queued or syncing whose lease has
expired is dispatched again; the claim in ``sync.run_cluster_sync`` makes a duplicate harmless. With
``follow=True`` the task schedules itself again for the earliest live lease (or the moment a rollout still
preparing would count as stalled: a lease after its last step, e.g. a slice of its gate), so a worker started
right after another was killed finishes that one's legs and gate slices without waiting for beat."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Min, Q
from django.utils import timezone

from clusters.choices import ConnectionMode
from fleet.rollouts import dispatch, doorbell, tasks
from fleet.rollouts.choices import IN_FLIGHT_SYNC_STATES, RolloutState, SyncState
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.rollouts.services.common import lease_from_now, lease_seconds, sync_event

PREPARING = (RolloutState.PENDING, RolloutState.RENDERED)


def agent_lost(cs: ClusterSync) -> int:
    """A pull-mode leg whose lease expired. Syncing: its agent stopped heartbeating (killed, disconnected,
    its answer lost): the leg goes back to queued for the agent's next poll (event ``sync.agent_lost``),
    never failed or synced on a guess; the old attempt's result is refused (409) from now on. Queued: no
    task to send (the agent claims it); its lease is renewed and the doorbell rung. Returns 1 when
    requeued, else 0."""
    if cs.state == SyncState.SYNCING:
        moved = ClusterSync.objects.filter(
            pk=cs.pk, state=SyncState.SYNCING, attempts=cs.attempts, lease_until__lt=timezone.now()
        ).update(state=SyncState.QUEUED, lease_until=lease_from_now())
        if moved:
            cs.state = SyncState.QUEUED
            sync_event(cs, "sync.agent_lost", f"attempt {cs.attempts}: the cluster's agent stopped reporting "
                       "before its lease expired; queued again for the agent", attempt=cs.attempts)
            doorbell.ring(cs.cluster_id)
        return 1 if moved else 0
    ClusterSync.objects.filter(pk=cs.pk, state=SyncState.QUEUED).update(lease_until=lease_from_now())
    doorbell.ring(cs.cluster_id)
    return 1
ACTIVE = (RolloutState.QUEUED, RolloutState.SYNCING)


def reconcile(follow: bool = False) -> dict[str, Any]:
    now = timezone.now()
    stale = list(
        ClusterSync.objects.select_related(
            "rollout__mapping__cluster_group", "rollout__mapping__repository", "rollout__commit", "cluster"
        )
        .filter(state__in=IN_FLIGHT_SYNC_STATES, rollout__state__in=ACTIVE)
        .filter(Q(lease_until__lt=now) | Q(lease_until__isnull=True))
    )
    requeued = 0
    for cs in stale:
        if cs.cluster.connection_mode == ConnectionMode.PULL:
            requeued += agent_lost(cs)
            continue
        if cs.state == SyncState.QUEUED:
            ClusterSync.objects.filter(pk=cs.pk, state=SyncState.QUEUED).update(lease_until=lease_from_now())
        sync_event(cs, "sync.redispatched", f"{cs.state} with an expired lease: dispatched again")
        dispatch.send(tasks.sync_cluster, cs.pk, task_id=cs.task_id or None)
    # Rollouts whose preparation stalled (the worker died between phases, or with a slice of the gate: no
    # slice ended for a lease; prepare queues the slices of the legs not gated yet), or evaluated ones never
    # decided.
    old = now - timedelta(seconds=lease_seconds())
    preparing = list(
        Rollout.objects.filter(
            Q(state__in=PREPARING) | Q(state=RolloutState.EVALUATED, manual=False, approval_required=False),
            updated__lt=old,
        ).values_list("pk", flat=True)
    )
    for pk in preparing:
        dispatch.send(tasks.prepare, pk)
    # Active rollouts: a window that opened, a pause that ended, a lost advance.
    active = list(
        Rollout.objects.filter(state__in=ACTIVE, paused=False)
        .filter(Q(wait_until__isnull=True) | Q(wait_until__lte=now))
        .filter(Q(next_batch_at__isnull=True) | Q(next_batch_at__lte=now))
        .values_list("pk", flat=True)
    )
    for pk in active:
        dispatch.send(tasks.advance, pk)
    next_check = None
    if follow:
        earliest = ClusterSync.objects.filter(
            state__in=IN_FLIGHT_SYNC_STATES, rollout__state__in=ACTIVE, lease_until__gt=now
        ).aggregate(t=Min("lease_until"))["t"]
        # and a preparation not stalled yet: its slices may have died with the worker that just stopped
        stepped = Rollout.objects.filter(state__in=PREPARING, updated__gte=old)
        touched = stepped.aggregate(t=Min("updated"))["t"]
        if touched is not None:
            due = touched + timedelta(seconds=lease_seconds())
            earliest = due if earliest is None else min(earliest, due)
        if earliest is not None:
            delay = min(300.0, (earliest - now).total_seconds() + 1)
            dispatch.send(tasks.reconcile, True, countdown=delay)
            next_check = delay
    return {
        "redispatched": len(stale) - requeued,
        "requeued_for_agents": requeued,
        "prepare": len(preparing),
        "advanced": len(active),
        "next_check": next_check,
    }
