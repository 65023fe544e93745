"""How rollout services queue their tasks: ``dispatch.send(tasks.prepare, rollout.pk)`` with the task
object (``fleet.core.dispatch``, the one way to queue a task: after the transaction commits, so a worker
never sees a row that was rolled back).  ``set_sender`` is the seam in-process tests use to run the queued
tasks themselves; the real worker path is exercised by the integration tests."""

from __future__ import annotations

from fleet.core.dispatch import Sender, send, set_sender

__all__ = [
    "ADVANCE",
    "CHECK_DRIFT",
    "CHECK_DRIFT_BATCH",
    "CHECK_DRIFT_ONE",
    "EVALUATE_SLICE",
    "PREPARE",
    "RECONCILE",
    "SYNC_CLUSTER",
    "SYNC_SLICE",
    "Sender",
    "send",
    "set_sender",
]

# The registered names of the rollout tasks (fleet/rollouts/tasks.py): what a test sender receives.
PREPARE = "fleet.rollouts.prepare"
EVALUATE_SLICE = "fleet.rollouts.evaluate_slice"  # the gate for a slice of a big rollout's legs (prepare)
ADVANCE = "fleet.rollouts.advance"
SYNC_CLUSTER = "fleet.rollouts.sync_cluster"  # one leg: a retry, a redispatch
SYNC_SLICE = "fleet.rollouts.sync_slice"  # a slice of a rollout's legs: what advance queues
RECONCILE = "fleet.rollouts.reconcile"
CHECK_DRIFT = "fleet.rollouts.check_drift"
CHECK_DRIFT_ONE = "fleet.rollouts.check_drift_one"  # one state (tasks queued before the batch task)
CHECK_DRIFT_BATCH = "fleet.rollouts.check_drift_batch"  # a slice of states: what check_all queues
