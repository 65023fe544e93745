from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError as APIValidationError

from clusters.choices import ClusterStatus
from clusters.models import Cluster, ClusterGroup
from clusters.selectors import matches, parse_selector_string
from fleet.core.filters import FleetFilterSet


def filter_by_selector(queryset: QuerySet, value: str) -> QuerySet:
    """Filter clusters by a kubectl-style label selector (`env=prod,region in (eu,us)`)."""
    try:
        selector = parse_selector_string(value)
    except ValidationError as exc:
        raise APIValidationError({"label": exc.messages}) from None
    ids = [pk for pk, labels in queryset.values_list("pk", "labels") if matches(selector, labels or {})]
    return queryset.filter(pk__in=ids)


class ClusterFilterSet(FleetFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    status = django_filters.MultipleChoiceFilter(choices=ClusterStatus.choices)
    label = django_filters.CharFilter(
        method="filter_label", help_text="Label selector, e.g. env=prod,region in (eu)"
    )
    group = django_filters.CharFilter(method="filter_group", help_text="Cluster group id or name")

    class Meta:
        model = Cluster
        fields = ["name", "status", "auth_method", "label", "group"]

    def filter_label(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return filter_by_selector(queryset, value)

    def filter_group(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if str(value).isdigit():
            return queryset.filter(groups__id=int(value))
        return queryset.filter(groups__name=value)


class ClusterGroupFilterSet(FleetFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    label = django_filters.CharFilter(
        method="filter_label", help_text="Selector on the group's own labels, e.g. tier=gold"
    )
    cluster = django_filters.CharFilter(
        method="filter_cluster", help_text="Groups containing this cluster (name)"
    )

    class Meta:
        model = ClusterGroup
        fields = ["name", "approval_required", "sync_mode", "cluster", "label"]

    def filter_label(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return filter_by_selector(queryset, value)

    def filter_cluster(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(members__name=value)
