"""Rollouts: one commit's journey for one PathMapping (Rollout), its leg on one cluster (ClusterSync),
the people who approved or rejected it (Approval), and what is synced where (SyncedState)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from fleet.access.restrict import RestrictedQuerySet
from fleet.core.models import TimestampedModel
from fleet.rollouts.choices import (
    ApprovalDecision,
    Decision,
    DriftStatus,
    Health,
    RolloutState,
    RolloutTrigger,
    SyncState,
)


class Rollout(TimestampedModel):
    mapping = models.ForeignKey("sources.PathMapping", on_delete=models.CASCADE, related_name="rollouts")
    commit = models.ForeignKey("sources.Commit", on_delete=models.CASCADE, related_name="rollouts")
    state = models.CharField(
        max_length=20, choices=RolloutState.choices, default=RolloutState.PENDING, db_index=True
    )
    reason = models.TextField(blank=True, help_text="Why the rollout is in its state (halt, block, wait).")
    trigger = models.CharField(max_length=16, choices=RolloutTrigger.choices, default=RolloutTrigger.COMMIT)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who started it (API sync, rollback, sync now); empty for a commit.",
    )
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rollbacks"
    )
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="supersedes"
    )
    # Settings copied from the group when the rollout is prepared, so a later change does not move it.
    approval_required = models.BooleanField(default=False)
    approvals_required = models.PositiveSmallIntegerField(default=0)
    manual = models.BooleanField(default=False, help_text="Waits for a sync request after the gate.")
    decision = models.CharField(max_length=16, choices=Decision.choices, default=Decision.PENDING, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    paused = models.BooleanField(default=False)
    strategy = models.JSONField(
        default=dict,
        blank=True,
        help_text="The batches and limits the mapping's fleet.yaml rolloutStrategy gives this rollout, in "
        "place of the group's (empty: the group's settings apply).",
    )
    batch_count = models.PositiveIntegerField(default=0)
    current_batch = models.PositiveIntegerField(default=0)
    next_batch_at = models.DateTimeField(null=True, blank=True, help_text="End of the pause between batches.")
    wait_until = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="Outside the group's sync windows until then."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()
    scope_path = "mapping__cluster_group"

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["mapping", "state"])]

    def __str__(self) -> str:
        return f"rollout {self.pk} of {self.commit.sha[:10]} to {self.mapping.name}"

    @property
    def audit_scope(self) -> Any:
        return self.mapping.cluster_group


class ClusterSync(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="syncs")
    cluster = models.ForeignKey("clusters.Cluster", on_delete=models.CASCADE, related_name="syncs")
    state = models.CharField(
        max_length=16, choices=SyncState.choices, default=SyncState.PENDING, db_index=True
    )
    batch = models.PositiveIntegerField(default=0)
    canary = models.BooleanField(default=False)
    decision = models.CharField(max_length=16, choices=Decision.choices, default=Decision.PENDING, blank=True)
    evaluation = models.JSONField(default=dict, blank=True, help_text="The gate's decision for this cluster.")
    desired = models.JSONField(default=list, blank=True, help_text="The rendered objects to apply.")
    plan = models.JSONField(default=dict, blank=True, help_text="Server-side dry-run diff with counts.")
    results = models.JSONField(default=list, blank=True, help_text="Per-object apply and prune results.")
    counts = models.JSONField(default=dict, blank=True)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN, blank=True)
    health_detail = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    waiting_for = models.JSONField(
        default=list,
        blank=True,
        help_text="While waiting: the dependencies not ready on this cluster, each with the reason.",
    )
    attempts = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="A worker owns a queued or syncing leg until then."
    )
    retry_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()
    scope_path = "rollout__mapping__cluster_group"

    class Meta:
        ordering = ["rollout_id", "batch", "cluster__name"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "cluster"], name="clustersync_unique_rollout_cluster")
        ]
        indexes = [models.Index(fields=["rollout", "state"])]

    def __str__(self) -> str:
        return f"{self.rollout_id} on {self.cluster.name}"

    @property
    def audit_scope(self) -> Any:
        return self.rollout.mapping.cluster_group


class Approval(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    decision = models.CharField(max_length=8, choices=ApprovalDecision.choices)
    reason = models.TextField(blank=True)
    lapsed = models.BooleanField(default=False, help_text="The rollout was superseded before it synced.")
    created = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()
    scope_path = "rollout__mapping__cluster_group"

    class Meta:
        ordering = ["created", "id"]
        constraints = [models.UniqueConstraint(fields=["rollout", "user"], name="approval_unique_user")]

    def __str__(self) -> str:
        return f"{self.decision} of rollout {self.rollout_id} by {self.user_id}"


class SyncedState(models.Model):
    """What is synced where: per (mapping, cluster), the last synced commit and its applied objects
    (the inventory used for prune and drift), health and drift."""

    mapping = models.ForeignKey("sources.PathMapping", on_delete=models.CASCADE, related_name="synced_states")
    cluster = models.ForeignKey("clusters.Cluster", on_delete=models.CASCADE, related_name="synced_states")
    commit = models.ForeignKey("sources.Commit", null=True, on_delete=models.SET_NULL, related_name="+")
    rollout = models.ForeignKey(Rollout, null=True, on_delete=models.SET_NULL, related_name="+")
    inventory = models.JSONField(default=list, blank=True, help_text="References of the objects applied.")
    applied = models.JSONField(default=list, blank=True, help_text="The objects as applied (for drift).")
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN, blank=True)
    drift_status = models.CharField(max_length=16, choices=DriftStatus.choices, default=DriftStatus.UNKNOWN)
    drift = models.JSONField(default=list, blank=True, help_text="Drifted objects at the last check.")
    drift_error = models.TextField(blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    drift_checked_at = models.DateTimeField(null=True, blank=True)
    healed_at = models.DateTimeField(null=True, blank=True)
    # Pull mode: what the cluster's agent last reported of the objects it manages for the mapping (as read
    # on the cluster), used for plans, the gate's UPDATE/DELETE reviews and the UI instead of a live read.
    live = models.JSONField(
        default=list, blank=True, help_text="Pull mode: the managed objects as the agent last read them."
    )
    live_reported_at = models.DateTimeField(null=True, blank=True, help_text="Pull mode: when reported.")

    objects = RestrictedQuerySet.as_manager()
    scope_path = "mapping__cluster_group"

    class Meta:
        ordering = ["mapping_id", "cluster__name"]
        constraints = [
            models.UniqueConstraint(fields=["mapping", "cluster"], name="syncedstate_unique_mapping_cluster")
        ]

    def __str__(self) -> str:
        return f"{self.mapping_id} on {self.cluster_id}"

    @property
    def audit_scope(self) -> Any:
        return self.mapping.cluster_group
