"""The rollout services: what API views, tasks and commands call. See docs/rollouts.md."""

from fleet.rollouts.services.common import RolloutError
from fleet.rollouts.services.control import (
    approve,
    cancel,
    pause,
    reject,
    resume,
    rollback,
    start_sync,
    sync_now,
)
from fleet.rollouts.services.drift import check_all as check_all_drift
from fleet.rollouts.services.drift import check_drift
from fleet.rollouts.services.drift import check_many as check_drift_many
from fleet.rollouts.services.fanout import advance
from fleet.rollouts.services.lifecycle import (
    create_rollout,
    prepare,
    queue,
    supersede_older,
)
from fleet.rollouts.services.reconcile import reconcile
from fleet.rollouts.services.sync import advance_and_sync, run_cluster_sync, run_slice

__all__ = [
    "RolloutError",
    "advance",
    "advance_and_sync",
    "approve",
    "cancel",
    "check_all_drift",
    "check_drift",
    "check_drift_many",
    "create_rollout",
    "pause",
    "prepare",
    "queue",
    "reconcile",
    "reject",
    "resume",
    "rollback",
    "run_cluster_sync",
    "run_slice",
    "start_sync",
    "supersede_older",
    "sync_now",
]
