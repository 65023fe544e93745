from django.contrib import admin

from fleet.core.admin import ReadOnlyModelAdmin
from fleet.rollouts.models import Approval, ClusterSync, Rollout, SyncedState


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "mapping", "commit", "state", "trigger", "paused", "created"]
    list_filter = ["state", "trigger"]
    list_select_related = ["mapping__repository", "commit__repository"]


@admin.register(ClusterSync)
class ClusterSyncAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "rollout", "cluster", "state", "batch", "attempts", "finished_at"]
    list_filter = ["state"]
    list_select_related = ["rollout__mapping", "rollout__commit", "cluster"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "rollout", "user", "decision", "lapsed", "created"]


@admin.register(SyncedState)
class SyncedStateAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "mapping", "cluster", "commit", "health", "drift_status", "synced_at"]
    list_filter = ["drift_status", "health"]
    list_select_related = ["mapping__repository", "cluster", "commit"]
