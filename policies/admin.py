"""Admin pages for the policy models; writes are audited (AuditedModelAdmin). Versions, evaluations and
violations are read-only: versions are immutable, results are written only by the gate."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from fleet.core.admin import AuditedModelAdmin
from policies.models import Evaluation, Policy, PolicyBinding, PolicySource, PolicyVersion, Violation, Waiver


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # versions are immutable; results are the gate's record


class PolicyVersionInline(admin.TabularInline):
    model = PolicyVersion
    extra = 0
    can_delete = False
    fields = ("number", "content_hash", "created_by_name", "created", "commit_sha", "test_status")
    readonly_fields = fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Policy)
class PolicyAdmin(AuditedModelAdmin):
    """Policies are edited through the API (compile + tests + new version); here name and description."""

    list_display = ["name", "style", "kind", "current", "updated"]
    list_filter = ["style"]
    search_fields = ["name", "description", "kind"]
    readonly_fields = ["style", "kind", "current", "source"]
    fields = ["name", "description", "style", "kind", "current", "source"]
    inlines = [PolicyVersionInline]

    def has_add_permission(self, request: Any) -> bool:
        return False


@admin.register(PolicyVersion)
class PolicyVersionAdmin(ReadOnlyAdmin):
    list_display = ["policy", "number", "created_by_name", "created", "commit_sha", "test_status"]
    list_filter = ["test_status"]
    search_fields = ["policy__name", "commit_sha"]


@admin.register(PolicyBinding)
class PolicyBindingAdmin(AuditedModelAdmin):
    list_display = ["policy", "cluster_group", "enforcement", "pinned_version", "enabled"]
    list_filter = ["enforcement", "enabled", "cluster_group"]
    search_fields = ["policy__name"]


@admin.register(Waiver)
class WaiverAdmin(AuditedModelAdmin):
    list_display = [
        "id",
        "policy",
        "kind",
        "namespace",
        "name_pattern",
        "rule",
        "cluster_group",
        "expires_at",
        "author_name",
        "origin",
    ]
    list_filter = ["cluster_group"]
    search_fields = ["policy__name", "justification", "name_pattern", "rule", "origin"]
    readonly_fields = ["author_name", "origin"]

    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.author = request.user
            obj.author_name = request.user.get_username()[:150]
        super().save_model(request, obj, form, change)


@admin.register(PolicySource)
class PolicySourceAdmin(AuditedModelAdmin):
    list_display = ["repository", "path", "name", "enabled", "last_synced_sha", "last_synced"]
    readonly_fields = ["last_synced_sha", "last_synced", "last_error"]


class ViolationInline(admin.TabularInline):
    model = Violation
    extra = 0
    can_delete = False
    fields = (
        "policy_name",
        "language",
        "enforcement",
        "rule",
        "kind",
        "namespace",
        "name",
        "message",
        "waived_by",
    )
    readonly_fields = fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = ["id", "commit", "mapping", "cluster", "decision", "deny_count", "warn_count", "created"]
    list_filter = ["decision", "engine"]
    inlines = [ViolationInline]


@admin.register(Violation)
class ViolationAdmin(ReadOnlyAdmin):
    list_display = ["id", "policy_name", "language", "enforcement", "kind", "namespace", "name", "waived_by"]
    list_filter = ["enforcement", "language"]
    search_fields = ["message", "policy_name", "name"]
