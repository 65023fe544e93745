from django.contrib import admin

from fleet.rollouts.models import Approval, ClusterSync, Rollout, SyncedState


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rollouts change only through their services (audited); the admin shows them."""

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdmin):
    list_display = ["id", "mapping", "commit", "state", "trigger", "paused", "created"]
    list_filter = ["state", "trigger"]
    list_select_related = ["mapping__repository", "commit__repository"]


@admin.register(ClusterSync)
class ClusterSyncAdmin(ReadOnlyAdmin):
    list_display = ["id", "rollout", "cluster", "state", "batch", "attempts", "finished_at"]
    list_filter = ["state"]
    list_select_related = ["rollout__mapping", "rollout__commit", "cluster"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["id", "rollout", "user", "decision", "lapsed", "created"]


@admin.register(SyncedState)
class SyncedStateAdmin(ReadOnlyAdmin):
    list_display = ["id", "mapping", "cluster", "commit", "health", "drift_status", "synced_at"]
    list_filter = ["drift_status", "health"]
    list_select_related = ["mapping__repository", "cluster", "commit"]
