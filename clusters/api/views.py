from __future__ import annotations

from clusters.api.serializers import ClusterGroupSerializer, ClusterSerializer
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


class ClusterGroupViewSet(FleetModelViewSet):
    queryset = ClusterGroup.objects.prefetch_related("include", "exclude", "members")
    serializer_class = ClusterGroupSerializer
    filterset_class = ClusterGroupFilterSet
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created"]
    ordering = ["name"]
