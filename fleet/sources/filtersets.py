import django_filters

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

    class Meta:
        model = PathMapping
        fields = ["name", "repository", "cluster_group", "renderer", "enabled", "directory_recurse"]


class CommitFilterSet(FleetFilterSet):
    sha = django_filters.CharFilter(lookup_expr="startswith")
    status = django_filters.MultipleChoiceFilter(choices=CommitStatus.choices)
    verification = django_filters.MultipleChoiceFilter(choices=Verification.choices)
    since = UTCDateTimeFilter(field_name="committed_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="committed_at", lookup_expr="lt")

    class Meta:
        model = Commit
        fields = ["repository", "sha", "status", "forced", "author_email"]
