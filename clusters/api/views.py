from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from clusters import services
from clusters.api.serializers import ClusterGroupSerializer, ClusterSerializer, ConnectionTestSerializer
from clusters.filtersets import ClusterFilterSet, ClusterGroupFilterSet
from clusters.models import Cluster, ClusterGroup
from fleet.core.api.viewsets import FleetModelViewSet


class ClusterViewSet(FleetModelViewSet):
    queryset = Cluster.objects.prefetch_related("groups")
    serializer_class = ClusterSerializer
    filterset_class = ClusterFilterSet
    search_fields = ["name", "description", "api_url"]
    ordering_fields = ["name", "status", "last_seen", "created"]
    ordering = ["name"]
    action_permissions = {"test_connection": "test"}

    @extend_schema(request=None, responses=ConnectionTestSerializer)
    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request: Request, pk: Any = None) -> Response:
        """Contact the cluster now: records status, version, last_seen and last_error (audited)."""
        cluster = self.get_object()  # 404 out of sight, 403 without the "test" permission
        outcome = services.test_connection(cluster)
        return Response(ConnectionTestSerializer(outcome).data)


class ClusterGroupViewSet(FleetModelViewSet):
    queryset = ClusterGroup.objects.prefetch_related("include", "exclude", "members")
    serializer_class = ClusterGroupSerializer
    filterset_class = ClusterGroupFilterSet
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created"]
    ordering = ["name"]
