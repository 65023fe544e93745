from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.access.restrict import has_permission
from fleet.core.api.viewsets import FleetReadOnlyViewSet
from fleet.rollouts import services
from fleet.rollouts.api.serializers import (
    ClusterSyncSerializer,
    RejectSerializer,
    RollbackSerializer,
    RolloutDetailSerializer,
    RolloutSerializer,
    SyncedStateSerializer,
    SyncNowResultSerializer,
    SyncNowSerializer,
)
from fleet.rollouts.filtersets import ClusterSyncFilterSet, RolloutFilterSet, SyncedStateFilterSet
from fleet.rollouts.models import Approval, ClusterSync, Rollout, SyncedState


def progress_of(rollout_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Counts of legs by state and by batch for these rollouts, in one query."""
    out: dict[int, dict[str, Any]] = {}
    rows = (
        ClusterSync.objects.filter(rollout_id__in=rollout_ids)
        .values("rollout_id", "batch", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        p = out.setdefault(row["rollout_id"], {"total": 0, "by_state": defaultdict(int), "by_batch": {}})
        p["total"] += row["n"]
        p["by_state"][row["state"]] += row["n"]
        p["by_batch"].setdefault(str(row["batch"]), {})[row["state"]] = row["n"]
    for p in out.values():
        p["by_state"] = dict(p["by_state"])
    return out


class RolloutViewSet(FleetReadOnlyViewSet):
    """Rollouts: one commit's journey for one mapping, with its legs per cluster and the controls."""

    queryset = Rollout.objects.select_related(
        "mapping__repository", "mapping__cluster_group", "commit", "created_by"
    ).annotate(
        approvals_given=Count("approvals", filter=Q(approvals__decision="approve", approvals__lapsed=False))
    )
    serializer_class = RolloutSerializer
    filterset_class = RolloutFilterSet
    search_fields = ["commit__sha", "mapping__name", "reason"]
    ordering_fields = ["id", "created", "state", "finished_at"]
    ordering = ["-id"]
    action_permissions = {
        "approve": "approve",
        "reject": "approve",
        "pause": "control",
        "resume": "control",
        "cancel": "control",
        "sync": "sync",
        "rollback": "rollback",
    }

    def get_queryset(self) -> QuerySet:
        qs = super().get_queryset()
        if self.action == "retrieve":
            qs = qs.prefetch_related(
                Prefetch(
                    "syncs",
                    queryset=ClusterSync.objects.select_related("cluster").order_by("batch", "cluster__name"),
                ),
                Prefetch("approvals", queryset=Approval.objects.select_related("user")),
            )
        return qs

    def get_serializer_class(self) -> Any:
        return RolloutDetailSerializer if self.action == "retrieve" else RolloutSerializer

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        rows = list(page if page is not None else queryset)
        context = {**self.get_serializer_context(), "progress": progress_of([r.pk for r in rows])}
        data = RolloutSerializer(rows, many=True, context=context).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self._show(self.get_object()))

    def _show(self, rollout: Rollout) -> dict[str, Any]:
        fresh = (
            self.base_queryset()
            .prefetch_related(
                Prefetch(
                    "syncs",
                    queryset=ClusterSync.objects.select_related("cluster").order_by("batch", "cluster__name"),
                ),
                Prefetch("approvals", queryset=Approval.objects.select_related("user")),
            )
            .get(pk=rollout.pk)
        )
        context = {**self.get_serializer_context(), "progress": progress_of([fresh.pk])}
        return RolloutDetailSerializer(fresh, context=context).data

    def _do(self, fn: Any, *args: Any) -> Response:
        # 404 out of sight, 403 without the action's permission; a RolloutError is answered by its kind
        # (fleet/core/api/exceptions.py).
        rollout = self.get_object()
        fn(rollout, *args)
        return Response(self._show(rollout))

    @extend_schema(request=None, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: Any = None) -> Response:
        """Approve (approver role in the group's scope; not the commit's author, not the starter)."""
        return self._do(services.approve, request.user)

    @extend_schema(request=RejectSerializer, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: Any = None) -> Response:
        """Reject with a reason (required)."""
        rollout = self.get_object()
        body = RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.reject(rollout, request.user, body.validated_data["reason"])
        return Response(self._show(rollout))

    @extend_schema(request=None, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: Any = None) -> Response:
        """Pause: clusters in flight finish, no new ones start."""
        return self._do(services.pause, request.user)

    @extend_schema(request=None, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: Any = None) -> Response:
        """Resume a paused rollout, or a halted one (its failed clusters are tried again)."""
        return self._do(services.resume, request.user)

    @extend_schema(request=None, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: Any = None) -> Response:
        """Cancel: clusters not started are cancelled; those in flight finish."""
        return self._do(services.cancel, request.user)

    @extend_schema(request=None, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: Any = None) -> Response:
        """Start a rollout that waits for a sync request (groups with manual sync)."""
        return self._do(services.start_sync, request.user)

    @extend_schema(request=RollbackSerializer, responses={201: RolloutDetailSerializer})
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: Any = None) -> Response:
        """Start a rollout of an earlier commit of this rollout's mapping (gate and approval as usual)."""
        rollout = self.get_object()
        body = RollbackSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        new = services.rollback(rollout, body.validated_data["commit"], request.user)
        return Response(self._show(new), status=status.HTTP_201_CREATED)

    @extend_schema(request=SyncNowSerializer, responses={201: SyncNowResultSerializer})
    @action(detail=False, methods=["post"], url_path="sync-now")
    def sync_now(self, request: Request) -> Response:
        """Sync what Git says now to one cluster (`cluster`) or a group (`group`): deployer role in scope."""
        if not has_permission(request.user, Rollout, "sync"):
            raise PermissionDenied("You may not sync.")
        body = SyncNowSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        cluster, group = body.validated_data.get("cluster"), body.validated_data.get("group")
        # The service refuses (403) a cluster or group outside the user's sync scope.
        rollouts = services.sync_now(request.user, cluster=cluster, group=group)
        context = {**self.get_serializer_context(), "progress": progress_of([r.pk for r in rollouts])}
        fresh = list(self.base_queryset().filter(pk__in=[r.pk for r in rollouts]))
        data = {"rollouts": RolloutSerializer(fresh, many=True, context=context).data}
        return Response(data, status=status.HTTP_201_CREATED)


class ClusterSyncViewSet(FleetReadOnlyViewSet):
    """Each rollout's leg on one cluster: plan (dry-run diff), per-object results, health, error."""

    queryset = ClusterSync.objects.select_related("cluster", "rollout__commit")
    serializer_class = ClusterSyncSerializer
    filterset_class = ClusterSyncFilterSet
    ordering_fields = ["id", "batch", "state", "finished_at"]
    ordering = ["-rollout_id", "batch", "cluster__name"]


class SyncedStateViewSet(FleetReadOnlyViewSet):
    """What is synced where: last synced commit per (mapping, cluster), its objects, health and drift.

    Visible with the `syncedstate.view` permission, in the scope of the mapping's group."""

    queryset = SyncedState.objects.select_related(
        "mapping__repository", "mapping__cluster_group", "cluster", "commit"
    )
    serializer_class = SyncedStateSerializer
    filterset_class = SyncedStateFilterSet
    ordering_fields = ["id", "synced_at", "drift_checked_at"]
    ordering = ["mapping_id", "cluster__name"]


