from django.db import models


class RolloutState(models.TextChoices):
    PENDING = "pending", "Pending"
    RENDERED = "rendered", "Rendered"
    EVALUATED = "evaluated", "Evaluated"  # gate passed; a manual-sync group waits here for a sync request
    BLOCKED = "blocked", "Blocked by policy"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    APPROVED = "approved", "Approved"  # a manual-sync group waits here for a sync request
    REJECTED = "rejected", "Rejected"
    QUEUED = "queued", "Queued"
    SYNCING = "syncing", "Syncing"
    SYNCED = "synced", "Synced"
    FAILED = "failed", "Failed"
    HALTED = "halted", "Halted"
    CANCELLED = "cancelled", "Cancelled"
    SUPERSEDED = "superseded", "Superseded"


# Rollouts in these states are finished: nothing moves them any more.
FINAL_ROLLOUT_STATES = frozenset(
    {
        RolloutState.BLOCKED,
        RolloutState.REJECTED,
        RolloutState.SYNCED,
        RolloutState.FAILED,
        RolloutState.CANCELLED,
        RolloutState.SUPERSEDED,
    }
)
# A newer rollout of the same mapping replaces rollouts that have not started syncing.
SUPERSEDABLE_STATES = frozenset(
    {
        RolloutState.PENDING,
        RolloutState.RENDERED,
        RolloutState.EVALUATED,
        RolloutState.AWAITING_APPROVAL,
        RolloutState.APPROVED,
        RolloutState.QUEUED,
    }
)


class RolloutTrigger(models.TextChoices):
    COMMIT = "commit", "New commit"
    MANUAL = "manual", "Started by a user"
    ROLLBACK = "rollback", "Rollback"
    SYNC_NOW = "sync_now", "Sync now"


class SyncState(models.TextChoices):
    PENDING = "pending", "Pending"
    WAITING = "waiting", "Waiting for dependencies"  # a mapping it depends on is not ready on the cluster
    BLOCKED = "blocked", "Blocked by policy"
    QUEUED = "queued", "Queued"
    SYNCING = "syncing", "Syncing"
    SYNCED = "synced", "Synced"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    SUPERSEDED = "superseded", "Superseded"


FINAL_SYNC_STATES = frozenset(
    {SyncState.SYNCED, SyncState.FAILED, SyncState.CANCELLED, SyncState.SUPERSEDED, SyncState.BLOCKED}
)
IN_FLIGHT_SYNC_STATES = frozenset({SyncState.QUEUED, SyncState.SYNCING})
# Legs not dispatched yet: pending, or held back until the mappings they depend on are ready there.
UNSTARTED_SYNC_STATES = frozenset({SyncState.PENDING, SyncState.WAITING})


class Decision(models.TextChoices):
    PENDING = "", "Not evaluated"
    PASSED = "passed", "Passed"
    WARNED = "warned", "Warned"
    BLOCKED = "blocked", "Blocked"


class ApprovalDecision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"


class DriftStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not checked"
    IN_SYNC = "in_sync", "In sync"
    DRIFTED = "drifted", "Drifted"
    ERROR = "error", "Check failed"


class Health(models.TextChoices):
    UNKNOWN = "", "Unknown"
    HEALTHY = "Healthy", "Healthy"
    PROGRESSING = "Progressing", "Progressing"
    DEGRADED = "Degraded", "Degraded"
    MISSING = "Missing", "Missing"
