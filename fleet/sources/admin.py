from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.http import QueryDict

from fleet.access.writes import OutOfScope
from fleet.core.admin import AuditedModelAdmin, SecretFieldsForm
from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from fleet.sources.choices import FetchTrigger
from fleet.sources.models import (
    ChartRepository,
    Commit,
    MappingRender,
    PathMapping,
    RenderedManifest,
    Repository,
)
from fleet.sources.services import request_fetch
from fleet.sources.services.charts import CREDENTIALS_AGAIN, check_chart_repository_scope, url_moved
from fleet.sources.services.dependencies import (
    DependencyError,
    check_delete,
    check_dependencies,
    lock_dependency_graph,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the services: shown, never edited here."""

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class RepositoryForm(SecretFieldsForm):
    """A private key pasted into trusted_keys is refused (Repository.clean) and not shown again."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "PRIVATE KEY" in str(self.data.get("trusted_keys", "")):
            data = cast(QueryDict, self.data).copy()
            data["trusted_keys"] = "[]"
            self.data = data
        return cleaned


@admin.register(Repository)
class RepositoryAdmin(AuditedModelAdmin):
    form = RepositoryForm
    list_display = ("name", "url", "branch", "enabled", "head_sha", "last_fetched", "last_error")
    search_fields = ("name", "url")
    readonly_fields = ("head_sha", "last_fetched", "last_error", "poll_queued_at", "created", "updated")
    actions = ["fetch_now"]
    # trusted_keys: [{"name": ..., "public_key": ...}]; Repository.clean() checks each key and fills in
    # kind and fingerprint (docs/sources.md, Verified commits).

    @admin.action(description="Fetch now (queue a fetch task)")
    def fetch_now(self, request: Any, queryset: Any) -> None:
        with acting(user=request.user, change_context=ChangeContext.WEB):
            for repo in queryset:
                request_fetch(repo, trigger=FetchTrigger.API)
        self.message_user(request, f"Queued a fetch of {queryset.count()} repository(ies).", messages.SUCCESS)


class PathMappingForm(SecretFieldsForm):
    """Dependencies are checked like the API checks them: cycles (named), scope, overlapping groups."""

    user: Any = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        repository, group = cleaned.get("repository"), cleaned.get("cluster_group")
        if repository is None or group is None or not cleaned.get("name"):
            return cleaned  # their own field errors say what is missing
        try:
            lock_dependency_graph()  # the admin's change view runs in one transaction: held until saved
            check_dependencies(
                user=self.user,
                mapping=self.instance if self.instance.pk else None,
                repository_name=repository.name,
                name=cleaned["name"],
                cluster_group_id=group.pk,
                depends_on=list(cleaned.get("depends_on") or []),
            )
        except DependencyError as exc:
            self.add_error("depends_on", exc.message)
        return cleaned


class ChartRepositoryForm(SecretFieldsForm):
    """A URL changed while a password is stored needs the password again (as in the API)."""

    def clean(self) -> dict[str, Any]:
        given = self.cleaned_data.get("password")
        stored = ChartRepository.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        url = self.cleaned_data.get("url")
        if stored is not None and stored.password and not given and url and url_moved(stored.url, url):
            self.add_error("password", CREDENTIALS_AGAIN)
        return super().clean()


@admin.register(ChartRepository)
class ChartRepositoryAdmin(AuditedModelAdmin):
    """Chart repository credentials: the password renders empty (blank keeps it), audited without it. As in
    the API, a staff user changes or deletes one only with the permission in every group it serves (none: a
    role on all clusters), before and after the change."""

    form = ChartRepositoryForm
    list_display = ("name", "url", "username", "updated")
    list_filter = ("cluster_groups",)
    filter_horizontal = ("cluster_groups",)
    search_fields = ("name", "url")
    readonly_fields = ("created", "updated")

    @staticmethod
    def _in_scope(request: Any, obj: Any, action: str) -> bool:
        try:
            check_chart_repository_scope(request.user, obj, action)
        except OutOfScope:
            return False
        return True

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or self._in_scope(request, obj, "change"))

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or self._in_scope(request, obj, "delete"))

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # the groups it is saved with (the change view's transaction rolls back a refusal)
        check_chart_repository_scope(request.user, form.instance, "change" if change else "add")

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for obj in queryset:
            check_chart_repository_scope(request.user, obj, "delete")
        super().delete_queryset(request, queryset)


@admin.register(PathMapping)
class PathMappingAdmin(AuditedModelAdmin):
    form = PathMappingForm
    list_display = ("name", "repository", "path", "cluster_group", "renderer", "enabled", "last_rendered_sha")
    list_filter = ("renderer", "enabled", "directory_recurse", "create_namespace", "cluster_group")
    search_fields = ("name", "path", "helm_chart", "helm_repo")
    filter_horizontal = ("depends_on",)
    readonly_fields = ("last_rendered_sha", "last_render_attempt_sha", "config_fingerprint", "watched_paths",
                       "declared_depends_on")

    def delete_model(self, request: Any, obj: Any) -> None:
        try:
            check_delete(obj)
        except DependencyError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        super().delete_model(request, obj)

    def get_form(self, request: Any, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})


@admin.register(Commit)
class CommitAdmin(ReadOnlyAdmin):
    list_display = ("short_sha", "repository", "sequence", "author_name", "committed_at", "status", "forced",
                    "verification", "signer")
    list_filter = ("status", "verification", "forced", "repository")
    search_fields = ("sha", "message")


@admin.register(MappingRender)
class MappingRenderAdmin(ReadOnlyAdmin):
    list_display = ("commit", "mapping", "status", "reason", "cluster_count", "object_count",
                    "rendered_count", "reused_count", "error_file", "error_line")
    list_filter = ("status", "reason")
    list_select_related = ("commit__repository", "mapping__repository")
    search_fields = ("commit__sha", "mapping__name", "error_message")


@admin.register(RenderedManifest)
class RenderedManifestAdmin(ReadOnlyAdmin):
    list_display = ("commit", "mapping", "cluster", "status", "object_count", "reused", "input_hash")
    list_filter = ("status", "reused", "skipped")
    list_select_related = ("commit__repository", "mapping", "cluster")
    search_fields = ("commit__sha", "mapping__name", "cluster__name", "input_hash")
