from typing import Any

from django.contrib import admin, messages

from clusters import membership_guard, tenancy
from clusters.models import AllowList, Cluster, ClusterGroup
from fleet.access.restrict import has_permission, restrict
from fleet.core.admin import AuditedModelAdmin
from fleet.core.choices import ChangeContext
from fleet.core.context import acting


class MembershipGuardedAdmin(AuditedModelAdmin):
    """Saves through membership_guard, as the API and the UI do: the admin's change view runs in one
    transaction, so the model and its include/exclude lists are saved inside the guard's check, which
    also records the audit event."""

    def _guarded(self, request: Any, obj: Any, form: Any, save: Any) -> None:
        raise NotImplementedError

    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        pass  # saved in save_related, together with the include/exclude lists, under the guard

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        obj = form.instance

        def save() -> Any:
            admin.ModelAdmin.save_model(self, request, obj, form, change)
            admin.ModelAdmin.save_related(self, request, form, formsets, change)
            return obj

        with acting(user=request.user, change_context=ChangeContext.WEB):
            self._guarded(request, obj if change else None, form, save)


@admin.register(Cluster)
class ClusterAdmin(MembershipGuardedAdmin):
    list_display = ("name", "connection_mode", "api_url", "auth_method", "status", "kubernetes_version",
                    "last_seen")
    list_filter = ("connection_mode", "status", "auth_method")
    search_fields = ("name", "api_url", "description")
    readonly_fields = ("status", "kubernetes_version", "last_seen", "last_error", "agent_version",
                       "agent_seen", "created", "updated")
    actions = ("test_connection", "revoke_agent")

    def _guarded(self, request: Any, obj: Any, form: Any, save: Any) -> None:
        instance = form.instance
        membership_guard.save_cluster(
            request.user, obj, save, name=instance.name, labels=instance.labels or {}
        )

    @admin.action(description="Test connection")
    def test_connection(self, request: Any, queryset: Any) -> None:
        allowed = restrict(queryset, request.user, "test")
        refused = queryset.count() - allowed.count()
        from clusters import services  # the Kubernetes client: imported when used, not when the admin loads

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


    @admin.action(description="Revoke the pull-mode agent's credentials")
    def revoke_agent(self, request: Any, queryset: Any) -> None:
        """Every credential of each chosen pull-mode cluster's agent (clusters/agent_tokens.revoke, audited
        as agent.revoked), with the cluster change permission."""
        allowed = restrict(queryset, request.user, "change")
        refused = queryset.count() - allowed.count()
        from clusters import agent_tokens

        with acting(user=request.user, change_context=ChangeContext.WEB):
            for cluster in allowed:
                if not cluster.is_pull:
                    self.message_user(request, f"{cluster}: push mode, no agent", messages.WARNING)
                    continue
                count = agent_tokens.revoke(cluster, request.user)
                self.message_user(request, f"{cluster}: {count} agent credential(s) revoked")
        if refused:
            self.message_user(
                request, f"{refused} cluster(s) skipped: you may not change them.", messages.ERROR
            )


@admin.register(ClusterGroup)
class ClusterGroupAdmin(MembershipGuardedAdmin):
    list_display = (
        "name",
        "approval_required",
        "approvals_required",
        "sync_mode",
        "prune",
        "self_heal",
        "create_only_review",
    )
    search_fields = ("name", "description")
    filter_horizontal = ("include", "exclude")
    readonly_fields = ("created", "updated")

    def _guarded(self, request: Any, obj: Any, form: Any, save: Any) -> None:
        instance, data = form.instance, form.cleaned_data
        membership_guard.save_group(
            request.user,
            obj,
            save,
            name=instance.name,
            selector=instance.selector,
            include=data["include"] if "include" in data else instance.include.all(),
            exclude=data["exclude"] if "exclude" in data else instance.exclude.all(),
        )


@admin.register(AllowList)
class AllowListAdmin(AuditedModelAdmin):
    """Tenant allow-lists: changed only by the admin role on all clusters (clusters/tenancy.py), audited
    (allowlist.create/update/delete with before/after) like every admin write."""

    list_display = ("cluster_group", "service_account_namespace", "service_account_name", "updated")
    readonly_fields = ("created", "updated")

    def get_queryset(self, request: Any) -> Any:
        groups = restrict(ClusterGroup.objects.all(), request.user, "view")
        return super().get_queryset(request).filter(cluster_group__in=groups).select_related("cluster_group")

    def has_view_permission(self, request: Any, obj: Any = None) -> bool:
        user = request.user
        return tenancy.may_change_allow_lists(user) or has_permission(user, ClusterGroup, "view")

    def has_add_permission(self, request: Any) -> bool:
        return tenancy.may_change_allow_lists(request.user)

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return tenancy.may_change_allow_lists(request.user)

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return tenancy.may_change_allow_lists(request.user)
