import django_filters

from fleet.audit.models import AuditEvent
from fleet.core.choices import ChangeContext
from fleet.core.filters import FleetFilterSet, UTCDateTimeFilter


class AuditEventFilterSet(FleetFilterSet):
    since = UTCDateTimeFilter(field_name="time", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="time", lookup_expr="lt")
    actor = django_filters.CharFilter(field_name="actor_name")
    action = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    cluster = django_filters.CharFilter(field_name="cluster_name")
    group = django_filters.CharFilter(field_name="scope_group_name")
    repository = django_filters.CharFilter(field_name="repository_name")
    change_context = django_filters.MultipleChoiceFilter(choices=ChangeContext.choices)
    request_id = django_filters.CharFilter()
    target_type = django_filters.CharFilter()

    class Meta:
        model = AuditEvent
        fields = ["since", "until", "actor", "action", "cluster", "group", "repository", "change_context"]
