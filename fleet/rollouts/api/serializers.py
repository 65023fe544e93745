from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clusters.models import Cluster, ClusterGroup
from fleet.core.api.serializers import RestrictedPrimaryKeyRelatedField
from fleet.rollouts.api.plans import PlanField
from fleet.rollouts.models import Approval, ClusterSync, Rollout, SyncedState
from fleet.sources.models import Commit


class CommitBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Commit
        fields = ["id", "sha", "short_sha", "author_name", "author_email", "message", "sequence"]


class NamedBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class MappingBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    repository = serializers.CharField(source="repository.name", read_only=True)
    cluster_group = NamedBriefSerializer(read_only=True)


class ApprovalSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Approval
        fields = ["id", "user", "decision", "reason", "lapsed", "created"]


WAITING_FOR_SCHEMA = {
    "type": "array",
    "description": "While the leg waits: the mappings it depends on that are not ready on its cluster.",
    "items": {
        "type": "object",
        "properties": {
            "mapping": {"type": "string", "description": "repository/mapping"},
            "mapping_id": {"type": "integer", "nullable": True},
            "reason": {"type": "string"},
        },
    },
}


class ClusterSyncBriefSerializer(serializers.ModelSerializer):
    cluster = NamedBriefSerializer(read_only=True)
    waiting_for = serializers.SerializerMethodField()

    class Meta:
        model = ClusterSync
        fields = [
            "id",
            "cluster",
            "state",
            "batch",
            "canary",
            "decision",
            "counts",
            "health",
            "error",
            "waiting_for",
            "attempts",
            "started_at",
            "finished_at",
        ]

    @extend_schema_field(WAITING_FOR_SCHEMA)
    def get_waiting_for(self, obj: ClusterSync) -> list[dict[str, Any]]:
        return list(obj.waiting_for or [])


STRATEGY_SCHEMA = {
    "type": "object",
    "description": "Where the rollout's batches and limits come from: empty when they are the group's; for a "
    "mapping whose fleet.yaml has a rolloutStrategy, source 'fleet.yaml', the file, the strategy as written "
    "(spec) and what Fleetgate made of it once queued (docs/rollouts.md, 'Batches from fleet.yaml').",
    "properties": {
        "source": {"type": "string", "enum": ["fleet.yaml"]},
        "file": {"type": "string"},
        "spec": {"type": "object", "additionalProperties": True},
        "batches": {
            "type": "array",
            "nullable": True,
            "description": "The partitions as batches, in order (null: the group's batches).",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "clusters": {"type": "array", "items": {"type": "string"}},
                    "max_unavailable": {"type": "integer"},
                },
            },
        },
        "unmatched": {"type": "array", "items": {"type": "string"},
                      "description": "Clusters in no partition: not rolled out, as in Fleet."},
        "max_unavailable": {"type": "integer", "nullable": True,
                            "description": "The halt threshold: the rollout halts once this many failed."},
        "max_unavailable_partitions": {"type": "integer"},
        "notes": {"type": "array", "items": {"type": "string"},
                  "description": "What of the strategy is not honoured, and why."},
    },
}


class RolloutSerializer(serializers.ModelSerializer):
    mapping = MappingBriefSerializer(read_only=True)
    commit = CommitBriefSerializer(read_only=True)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, default=None, allow_null=True
    )
    approvals_given = serializers.IntegerField(read_only=True, default=0)
    progress = serializers.SerializerMethodField()
    strategy = serializers.SerializerMethodField()

    class Meta:
        model = Rollout
        fields = [
            "id",
            "mapping",
            "commit",
            "state",
            "reason",
            "trigger",
            "created_by",
            "decision",
            "approval_required",
            "approvals_required",
            "approvals_given",
            "approved_at",
            "manual",
            "paused",
            "strategy",
            "batch_count",
            "current_batch",
            "next_batch_at",
            "wait_until",
            "rollback_of",
            "superseded_by",
            "progress",
            "created",
            "updated",
            "started_at",
            "finished_at",
        ]

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "total": {"type": "integer"},
                "by_state": {"type": "object", "additionalProperties": {"type": "integer"}},
                "by_batch": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
        }
    )
    def get_progress(self, obj: Rollout) -> dict[str, Any]:
        progress = self.context.get("progress", {}).get(obj.pk)
        return progress or {"total": 0, "by_state": {}, "by_batch": {}}


    @extend_schema_field(STRATEGY_SCHEMA)
    def get_strategy(self, obj: Rollout) -> dict[str, Any]:
        return dict(obj.strategy or {})


class RolloutDetailSerializer(RolloutSerializer):
    syncs = ClusterSyncBriefSerializer(many=True, read_only=True)
    approvals = ApprovalSerializer(many=True, read_only=True)

    class Meta(RolloutSerializer.Meta):
        fields = [*RolloutSerializer.Meta.fields, "syncs", "approvals"]


class ClusterSyncSerializer(serializers.ModelSerializer):
    cluster = NamedBriefSerializer(read_only=True)
    plan = PlanField(read_only=True, help_text="Server-side dry run of the leg: each object's action, diff "
                     "and step, and the sync's steps in order (fleet/rollouts/api/plans.py).")
    mapping = serializers.IntegerField(source="rollout.mapping_id", read_only=True)
    commit = serializers.CharField(source="rollout.commit.sha", read_only=True)
    waiting_for = serializers.SerializerMethodField()

    @extend_schema_field(WAITING_FOR_SCHEMA)
    def get_waiting_for(self, obj: ClusterSync) -> list[dict[str, Any]]:
        return list(obj.waiting_for or [])

    class Meta:
        model = ClusterSync
        fields = [
            "id",
            "rollout",
            "mapping",
            "commit",
            "cluster",
            "state",
            "batch",
            "canary",
            "decision",
            "evaluation",
            "plan",
            "results",
            "counts",
            "health",
            "health_detail",
            "error",
            "waiting_for",
            "attempts",
            "queued_at",
            "started_at",
            "finished_at",
        ]


class SyncedStateSerializer(serializers.ModelSerializer):
    mapping = MappingBriefSerializer(read_only=True)
    cluster = NamedBriefSerializer(read_only=True)
    commit = CommitBriefSerializer(read_only=True, allow_null=True)
    object_count = serializers.SerializerMethodField()

    class Meta:
        model = SyncedState
        fields = [
            "id",
            "mapping",
            "cluster",
            "commit",
            "rollout",
            "inventory",
            "object_count",
            "health",
            "drift_status",
            "drift",
            "drift_error",
            "synced_at",
            "drift_checked_at",
            "healed_at",
        ]

    @extend_schema_field(OpenApiTypes.INT)
    def get_object_count(self, obj: SyncedState) -> int:
        return len(obj.inventory or [])


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(allow_blank=False, trim_whitespace=True, max_length=2000)


class RollbackSerializer(serializers.Serializer):
    commit = RestrictedPrimaryKeyRelatedField(queryset=Commit.objects.all())


class SyncNowSerializer(serializers.Serializer):
    cluster = RestrictedPrimaryKeyRelatedField(
        queryset=Cluster.objects.all(), required=False, allow_null=True
    )
    group = RestrictedPrimaryKeyRelatedField(
        queryset=ClusterGroup.objects.all(), required=False, allow_null=True
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("cluster")) == bool(attrs.get("group")):
            raise serializers.ValidationError({"non_field_errors": ["Give either a cluster or a group."]})
        return attrs


class SyncNowResultSerializer(serializers.Serializer):
    rollouts = RolloutSerializer(many=True, read_only=True)
