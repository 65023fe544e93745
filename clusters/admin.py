from django.contrib import admin

from clusters.models import Cluster, ClusterGroup
from fleet.core.admin import AuditedModelAdmin


@admin.register(Cluster)
class ClusterAdmin(AuditedModelAdmin):
    list_display = ("name", "api_url", "auth_method", "status", "kubernetes_version", "last_seen")
    list_filter = ("status", "auth_method")
    search_fields = ("name", "api_url", "description")
    readonly_fields = ("status", "kubernetes_version", "last_seen", "last_error", "created", "updated")


@admin.register(ClusterGroup)
class ClusterGroupAdmin(AuditedModelAdmin):
    list_display = ("name", "approval_required", "approvals_required", "sync_mode", "prune", "self_heal")
    search_fields = ("name", "description")
    filter_horizontal = ("include", "exclude")
    readonly_fields = ("created", "updated")
