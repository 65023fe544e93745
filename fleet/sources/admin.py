from django.contrib import admin

from fleet.core.admin import AuditedModelAdmin
from fleet.sources.models import Commit, PathMapping, Repository


@admin.register(Repository)
class RepositoryAdmin(AuditedModelAdmin):
    list_display = ("name", "url", "branch", "enabled", "head_sha", "last_fetched")
    search_fields = ("name", "url")
    readonly_fields = ("head_sha", "last_fetched", "last_error", "created", "updated")


@admin.register(PathMapping)
class PathMappingAdmin(AuditedModelAdmin):
    list_display = ("name", "repository", "path", "cluster_group", "renderer", "enabled")
    list_filter = ("renderer", "enabled", "cluster_group")
    search_fields = ("name", "path")


@admin.register(Commit)
class CommitAdmin(admin.ModelAdmin):
    list_display = ("short_sha", "repository", "author_name", "committed_at", "status", "forced")
    list_filter = ("status", "repository")
    search_fields = ("sha", "message")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
