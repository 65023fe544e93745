from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils import timezone

from fleet.core.filters import FleetFilterSet, IdFilter
from policies.choices import BindingEnforcement, Decision, Enforcement, PolicyStyle
from policies.models import Evaluation, Policy, PolicyBinding, Violation, Waiver


class PolicyFilterSet(FleetFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    style = django_filters.ChoiceFilter(choices=PolicyStyle.choices)
    kind = django_filters.CharFilter()

    class Meta:
        model = Policy
        fields = ["name", "style", "kind", "source"]


class PolicyBindingFilterSet(FleetFilterSet):
    enforcement = django_filters.ChoiceFilter(choices=BindingEnforcement.choices)
    global_only = django_filters.BooleanFilter(
        field_name="cluster_group", lookup_expr="isnull", label="Global"
    )

    class Meta:
        model = PolicyBinding
        fields = ["policy", "cluster_group", "enforcement", "enabled", "global_only"]


class WaiverFilterSet(FleetFilterSet):
    active = django_filters.BooleanFilter(method="filter_active", label="Active (not expired)")

    class Meta:
        model = Waiver
        fields = ["policy", "cluster_group", "kind", "namespace", "active"]

    def filter_active(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        now = timezone.now()
        return queryset.filter(expires_at__gt=now) if value else queryset.filter(expires_at__lte=now)


class EvaluationFilterSet(FleetFilterSet):
    commit_sha = django_filters.CharFilter(field_name="commit__sha", lookup_expr="startswith")
    decision = django_filters.MultipleChoiceFilter(choices=Decision.choices)
    policy = IdFilter(method="filter_policy", label="Has violations of this policy id")

    class Meta:
        model = Evaluation
        fields = ["commit", "commit_sha", "mapping", "cluster", "decision", "policy"]

    def filter_policy(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        ids = Violation.objects.filter(policy_id=value).values("evaluation_id")
        return queryset.filter(pk__in=ids)


class ViolationFilterSet(FleetFilterSet):
    commit = IdFilter(field_name="evaluation__commit")
    commit_sha = django_filters.CharFilter(field_name="evaluation__commit__sha", lookup_expr="startswith")
    mapping = IdFilter(field_name="evaluation__mapping")
    cluster = IdFilter(field_name="evaluation__cluster")
    decision = django_filters.ChoiceFilter(field_name="evaluation__decision", choices=Decision.choices)
    enforcement = django_filters.ChoiceFilter(choices=Enforcement.choices)
    waived = django_filters.BooleanFilter(field_name="waived_by", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Violation
        fields = [
            "evaluation",
            "commit",
            "commit_sha",
            "mapping",
            "cluster",
            "decision",
            "policy",
            "enforcement",
            "waived",
            "waived_by",
            "kind",
            "namespace",
        ]
