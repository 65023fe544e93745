from __future__ import annotations

from fleet.core.api.viewsets import FleetModelViewSet, FleetReadOnlyViewSet
from fleet.sources.api.serializers import CommitSerializer, PathMappingSerializer, RepositorySerializer
from fleet.sources.filtersets import CommitFilterSet, PathMappingFilterSet, RepositoryFilterSet
from fleet.sources.models import Commit, PathMapping, Repository


class RepositoryViewSet(FleetModelViewSet):
    queryset = Repository.objects.all()
    serializer_class = RepositorySerializer
    filterset_class = RepositoryFilterSet
    search_fields = ["name", "url"]
    ordering_fields = ["name", "last_fetched", "created"]
    ordering = ["name"]


class PathMappingViewSet(FleetModelViewSet):
    queryset = PathMapping.objects.select_related("repository", "cluster_group")
    serializer_class = PathMappingSerializer
    filterset_class = PathMappingFilterSet
    search_fields = ["name", "path"]
    ordering_fields = ["name", "created"]
    ordering = ["repository__name", "name"]


class CommitViewSet(FleetReadOnlyViewSet):
    queryset = Commit.objects.select_related("repository")
    serializer_class = CommitSerializer
    filterset_class = CommitFilterSet
    search_fields = ["sha", "message", "author_name"]
    ordering_fields = ["sequence", "committed_at", "seen_at"]
    ordering = ["-sequence", "-id"]
