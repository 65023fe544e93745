from typing import Any

from django.contrib import admin, messages

from clusters import services
from clusters.models import Cluster, ClusterGroup
from fleet.access.restrict import restrict
from fleet.core.admin import AuditedModelAdmin
from fleet.core.choices import ChangeContext
from fleet.core.context import acting


@admin.register(Cluster)
class ClusterAdmin(AuditedModelAdmin):
    list_display = ("name", "api_url", "auth_method", "status", "kubernetes_version", "last_seen")
    list_filter = ("status", "auth_method")
    search_fields = ("name", "api_url", "description")
    readonly_fields = ("status", "kubernetes_version", "last_seen", "last_error", "created", "updated")
    actions = ("test_connection",)

    @admin.action(description="Test connection")
    def test_connection(self, request: Any, queryset: Any) -> None:
        allowed = restrict(queryset, request.user, "test")
        refused = queryset.count() - allowed.count()
        with acting(user=request.user, change_context=ChangeContext.WEB):
            for cluster in allowed:
                outcome = services.test_connection(cluster)
                if outcome.reachable:
                    self.message_user(request, f"{cluster}: reachable, Kubernetes {outcome.version}")
                else:
                    self.message_user(request, f"{cluster}: unreachable: {outcome.error}", messages.WARNING)
        if refused:
            self.message_user(
                request, f"{refused} cluster(s) skipped: you may not test them.", messages.ERROR
            )


@admin.register(ClusterGroup)
class ClusterGroupAdmin(AuditedModelAdmin):
    list_display = ("name", "approval_required", "approvals_required", "sync_mode", "prune", "self_heal")
    search_fields = ("name", "description")
    filter_horizontal = ("include", "exclude")
    readonly_fields = ("created", "updated")
