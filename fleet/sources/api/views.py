from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.access.restrict import restrict
from fleet.core.api.viewsets import FleetModelViewSet, FleetReadOnlyViewSet
from fleet.sources import services
from fleet.sources.api.serializers import (
    ChartRepositorySerializer,
    CommitSerializer,
    ConnectionCheckSerializer,
    FetchOutcomeSerializer,
    FetchQueuedSerializer,
    PathMappingSerializer,
    RenderedManifestSerializer,
    RenderedQuerySerializer,
    RepositorySerializer,
    WebhookSecretSerializer,
)
from fleet.sources.choices import FetchTrigger, RenderStatus
from fleet.sources.filtersets import (
    ChartRepositoryFilterSet,
    CommitFilterSet,
    PathMappingFilterSet,
    RepositoryFilterSet,
)
from fleet.sources.models import (
    ChartRepository,
    Commit,
    MappingRender,
    PathMapping,
    RenderedManifest,
    Repository,
)
from fleet.sources.services.charts import check_chart_repository_scope
from fleet.sources.services.dependencies import check_delete

TRUE = ("1", "true", "yes", "on")


class RepositoryViewSet(FleetModelViewSet):
    queryset = Repository.objects.all()
    serializer_class = RepositorySerializer
    filterset_class = RepositoryFilterSet
    search_fields = ["name", "url"]
    ordering_fields = ["name", "last_fetched", "created"]
    ordering = ["name"]
    action_permissions = {
        "fetch": "fetch",
        "test_connection": "fetch",
        "rotate_webhook_secret": "change",
    }

    @extend_schema(
        request=None,
        parameters=[
            OpenApiParameter(
                "wait", OpenApiTypes.BOOL, description="Fetch inline and answer with the outcome."
            )
        ],
        responses={
            200: OpenApiResponse(FetchOutcomeSerializer, description="fetched inline (?wait=true)"),
            202: OpenApiResponse(FetchQueuedSerializer, description="a fetch task was queued"),
        },
    )
    @action(detail=True, methods=["post"])
    def fetch(self, request: Request, pk: Any = None) -> Response:
        """Fetch the repository now: queue a task (202), or with `?wait=true` fetch inline (200).

        An inline fetch that fails answers 200 with `ok: false` and the error (never a secret)."""
        repo = self.get_object()
        wait = str(request.query_params.get("wait", "")).lower() in TRUE
        outcome = services.request_fetch(repo, wait=wait, trigger=FetchTrigger.API)
        if outcome is None:
            return Response({"status": "queued", "repository": repo.name}, status=status.HTTP_202_ACCEPTED)
        return Response(outcome.to_dict())

    @extend_schema(request=None, responses={200: ConnectionCheckSerializer})
    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request: Request, pk: Any = None) -> Response:
        """List the remote's branches with the stored credentials (like `git ls-remote`): `ok` when the
        repository answers and the followed branch exists; otherwise `error` says why."""
        repo = self.get_object()
        return Response(services.check_connection(repo).to_dict())

    @extend_schema(request=None, responses={200: WebhookSecretSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-webhook-secret")
    def rotate_webhook_secret(self, request: Request, pk: Any = None) -> Response:
        """Replace the webhook secret with a new random one. This response is the only place it is shown:
        copy it into the Git host's webhook settings."""
        repo = self.get_object()
        secret = services.rotate_webhook_secret(repo)
        return Response({"webhook_secret": secret, "webhook_path": f"/api/hooks/git/{repo.pk}/"})


class ChartRepositoryViewSet(FleetModelViewSet):
    """Chart repositories and OCI registries charts are fetched from: credentials and CA per URL prefix,
    for the mappings of its cluster groups (none: all groups). Seen by roles in one of its groups; added,
    changed and deleted only by a role holding the permission in all of them (with no groups: on all
    clusters); audited, the password never shown."""

    queryset = ChartRepository.objects.prefetch_related("cluster_groups")
    serializer_class = ChartRepositorySerializer
    filterset_class = ChartRepositoryFilterSet
    search_fields = ["name", "url"]
    ordering_fields = ["name", "created"]
    ordering = ["name"]

    def _ensure_allowed(self, instance: Any, action: str) -> None:
        check_chart_repository_scope(self.request.user, instance, action)

    def get_object(self) -> Any:
        # The groups it serves now, before anything changes: a group's admin may not take over (narrow to
        # their own group, point elsewhere) or delete a repository that also serves a group they do not
        # manage. The groups it is saved with are checked again after the save (_ensure_allowed).
        obj = super().get_object()
        if self.action in ("update", "partial_update", "destroy"):
            check_chart_repository_scope(self.request.user, obj, self.permission_action())
        return obj

    def perform_destroy(self, instance: Any) -> None:
        check_chart_repository_scope(self.request.user, instance, "delete")
        super().perform_destroy(instance)


class PathMappingViewSet(FleetModelViewSet):
    queryset = PathMapping.objects.select_related("repository", "cluster_group").prefetch_related(
        "depends_on__repository"
    )
    serializer_class = PathMappingSerializer
    filterset_class = PathMappingFilterSet

    def perform_destroy(self, instance: Any) -> None:
        check_delete(instance)
        super().perform_destroy(instance)
    search_fields = ["name", "path"]
    ordering_fields = ["name", "created"]
    ordering = ["repository__name", "name"]


def visible_mappings(user: Any) -> QuerySet:
    return restrict(PathMapping.objects.all(), user, "view")


class CommitViewSet(FleetReadOnlyViewSet):
    queryset = Commit.objects.select_related("repository")
    serializer_class = CommitSerializer
    filterset_class = CommitFilterSet
    search_fields = ["sha", "message", "author_name"]
    ordering_fields = ["sequence", "committed_at", "seen_at"]
    ordering = ["-sequence", "-id"]

    def get_queryset(self) -> QuerySet:
        renders = (
            MappingRender.objects.filter(mapping__in=visible_mappings(self.request.user))
            .select_related("mapping")
            .order_by("mapping__name")
        )
        return super().get_queryset().prefetch_related(
            Prefetch("mapping_renders", queryset=renders, to_attr="visible_renders")
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "mapping", {"type": "integer", "minimum": 1}, required=True, description="mapping id"
            ),
            OpenApiParameter(
                "cluster", {"type": "string", "minLength": 1, "maxLength": 63}, required=True,
                description="cluster name",
            ),
        ],
        responses={
            200: RenderedManifestSerializer,
            400: OpenApiResponse(description="missing or bad mapping/cluster"),
            404: OpenApiResponse(description="not visible, or not rendered at this commit"),
        },
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def rendered(self, request: Request, pk: Any = None) -> Response:
        """What one cluster receives from one mapping at this commit (or why the mapping failed).
        The user must be able to see the mapping's cluster group."""
        commit: Commit = self.get_object()  # type: ignore[assignment]
        query = RenderedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        mapping = (
            visible_mappings(request.user)
            .select_related("cluster_group")
            .filter(pk=query.validated_data["mapping"], repository_id=commit.repository_id)
            .first()
        )
        if mapping is None:
            raise NotFound("No such mapping for this commit's repository.")
        cluster_name = query.validated_data["cluster"]
        mr = MappingRender.objects.filter(commit=commit, mapping=mapping).first()
        if mr is None:
            last = (
                MappingRender.objects.filter(mapping=mapping, commit__sequence__lt=commit.sequence)
                .select_related("commit")
                .order_by("-commit__sequence")
                .first()
            )
            hint = f"; its last render before it is at {last.commit.sha[:10]}" if last else ""
            raise NotFound(f"Mapping {mapping.name} was not rendered at this commit (unaffected){hint}.")
        row = RenderedManifest.objects.filter(mapping_render=mr, cluster__name=cluster_name).first()
        base: dict[str, Any] = {
            "commit": commit.sha,
            "mapping": mapping.pk,
            "mapping_name": mapping.name,
            "cluster": cluster_name,
            "mapping_status": mr.status,
        }
        if row is None:
            in_group = mapping.cluster_group.members.filter(name=cluster_name).exists()
            if mr.status == RenderStatus.FAILED and in_group:
                return Response({**base, "status": "failed", "input_hash": "", "renderer": mr.renderer,
                                 "namespace": "", "skipped": False, "reused": False, "object_count": 0,
                                 "warnings": [], "objects": [], "error": mr.error_dict()})
            raise NotFound(f"Cluster {cluster_name} has no render of {mapping.name} at this commit.")
        error = None
        if row.status != "ok":
            error = {"message": row.error_message, "file": row.error_file or None, "line": row.error_line,
                     "cluster": cluster_name}
        elif mr.status == RenderStatus.FAILED:
            error = mr.error_dict()
        return Response({
            **base,
            "status": row.status,
            "input_hash": row.input_hash,
            "renderer": row.renderer,
            "namespace": row.namespace,
            "skipped": row.skipped,
            "reused": row.reused,
            "object_count": row.object_count,
            "warnings": row.warnings,
            "objects": row.resources,
            "error": error,
        })
