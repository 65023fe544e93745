"""Thin Celery tasks: each calls one service. All are idempotent (state checks under row locks) and
acknowledged late (settings), so a task that dies with its worker runs again and does the right thing.
The services queue them by the task objects: ``dispatch.send(tasks.prepare, rollout.pk)``."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from fleet.rollouts import dispatch


@shared_task(name=dispatch.PREPARE)
def prepare(rollout_id: int) -> str:
    from fleet.rollouts import services  # imported by the task, not by every process that loads apps

    return services.prepare(rollout_id)


@shared_task(name=dispatch.EVALUATE_SLICE)
def evaluate_slice(rollout_id: int, *cluster_sync_ids: int) -> str:
    from fleet.rollouts.services import lifecycle  # imported by the task, not by every process (apps)

    return lifecycle.evaluate_slice(rollout_id, cluster_sync_ids)


@shared_task(name=dispatch.ADVANCE)
def advance(rollout_id: int) -> str:
    from fleet.rollouts import services  # imported by the task, not by every process that loads apps

    return services.advance_and_sync(rollout_id)


@shared_task(name=dispatch.SYNC_CLUSTER)
def sync_cluster(cluster_sync_id: int) -> str:
    from fleet.rollouts import services  # imported by the task, not by every process that loads apps

    return services.run_cluster_sync(cluster_sync_id)


@shared_task(name=dispatch.SYNC_SLICE)
def sync_slice(*cluster_sync_ids: int) -> dict[int, str]:
    from fleet.rollouts import services  # imported by the task, not by every process that loads apps

    return services.run_slice(cluster_sync_ids)


@shared_task(name=dispatch.RECONCILE)
def reconcile(follow: bool = False) -> dict[str, Any]:
    from fleet.rollouts import services  # imported by the task, not by every process that loads apps

    return services.reconcile(follow=follow)


@shared_task(name=dispatch.CHECK_DRIFT)
def check_drift() -> int:
    from fleet.rollouts import services  # imported by the task, not by every process that loads apps

    return services.check_all_drift()


@shared_task(name=dispatch.CHECK_DRIFT_ONE)
def check_drift_one(synced_state_id: int) -> str:
    from fleet.rollouts import services  # imported by the task, not by every process that loads apps

    return services.check_drift(synced_state_id)


@shared_task(name=dispatch.CHECK_DRIFT_BATCH)
def check_drift_batch(*synced_state_ids: int) -> dict[int, str]:
    from fleet.rollouts import services  # imported by the task, not by every process that loads apps

    return services.check_drift_many(synced_state_ids)


@worker_ready.connect
def _reconcile_at_worker_start(sender: Any = None, **_: Any) -> None:
    """A worker that starts picks up legs left behind by one that stopped (after their leases expire)."""
    dispatch.send(reconcile, True)
