from typing import Any

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from fleet.core.filters import FleetFilterSet, UTCDateTimeFilter
from fleet.sources.choices import CommitStatus, Renderer, Verification
from fleet.sources.models import ChartRepository, Commit, PathMapping, Repository


class RepositoryFilterSet(FleetFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Repository
        fields = ["name", "enabled", "auth_method", "branch"]


class ChartRepositoryFilterSet(FleetFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    url = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = ChartRepository
        fields = ["name", "url", "username"]


class PathMappingFilterSet(FleetFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    renderer = django_filters.MultipleChoiceFilter(choices=Renderer.choices)
    helm_chart = django_filters.CharFilter(lookup_expr="icontains")
    helm_repo = django_filters.CharFilter(lookup_expr="icontains")
    remote_chart = django_filters.BooleanFilter(
        method="filter_remote_chart",
        label="Mappings with (true) or without (false) a chart from a Helm repository or OCI registry.",
    )

    class Meta:
        model = PathMapping
        fields = ["name", "repository", "cluster_group", "renderer", "enabled", "directory_recurse",
                  "helm_chart", "helm_repo"]

    @extend_schema_field(OpenApiTypes.BOOL)
    def filter_remote_chart(self, queryset: Any, name: str, value: bool | None) -> Any:
        if value is None:
            return queryset
        return queryset.exclude(helm_chart="") if value else queryset.filter(helm_chart="")


class CommitFilterSet(FleetFilterSet):
    sha = django_filters.CharFilter(lookup_expr="startswith")
    status = django_filters.MultipleChoiceFilter(choices=CommitStatus.choices)
    verification = django_filters.MultipleChoiceFilter(choices=Verification.choices)
    since = UTCDateTimeFilter(field_name="committed_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="committed_at", lookup_expr="lt")

    class Meta:
        model = Commit
        fields = ["repository", "sha", "status", "forced", "author_email"]
