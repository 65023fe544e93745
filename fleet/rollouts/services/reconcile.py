"""Resuming from the database: legs whose worker died, rollouts whose next step was never queued.

Run at every worker start (``worker_ready``) and by beat. A leg in queued or syncing whose lease has
expired is dispatched again; the claim in ``sync.run_cluster_sync`` makes a duplicate harmless. With
``follow=True`` the task schedules itself again for the earliest live lease, so a worker started right
after another was killed finishes that one's legs without waiting for beat."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Min, Q
from django.utils import timezone

from fleet.rollouts import dispatch, tasks
from fleet.rollouts.choices import IN_FLIGHT_SYNC_STATES, RolloutState, SyncState
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.rollouts.services.common import lease_from_now, lease_seconds, sync_event

PREPARING = (RolloutState.PENDING, RolloutState.RENDERED)
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
    for cs in stale:
        if cs.state == SyncState.QUEUED:
            ClusterSync.objects.filter(pk=cs.pk, state=SyncState.QUEUED).update(lease_until=lease_from_now())
        sync_event(cs, "sync.redispatched", f"{cs.state} with an expired lease: dispatched again")
        dispatch.send(tasks.sync_cluster, cs.pk, task_id=cs.task_id or None)
    # Rollouts whose preparation stalled (the worker died between phases), or evaluated ones never decided.
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
        if earliest is not None:
            delay = min(300.0, (earliest - now).total_seconds() + 1)
            dispatch.send(tasks.reconcile, True, countdown=delay)
            next_check = delay
    return {
        "redispatched": len(stale),
        "prepare": len(preparing),
        "advanced": len(active),
        "next_check": next_check,
    }
