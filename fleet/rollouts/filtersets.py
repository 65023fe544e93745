import django_filters

from fleet.rollouts.choices import DriftStatus, RolloutState, RolloutTrigger, SyncState
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState


class RolloutFilterSet(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=RolloutState.choices)
    trigger = django_filters.MultipleChoiceFilter(choices=RolloutTrigger.choices)
    group = django_filters.NumberFilter(field_name="mapping__cluster_group")
    repository = django_filters.NumberFilter(field_name="mapping__repository")
    sha = django_filters.CharFilter(field_name="commit__sha", lookup_expr="startswith")

    class Meta:
        model = Rollout
        fields = ["state", "trigger", "mapping", "commit", "group", "repository", "sha", "paused"]


class ClusterSyncFilterSet(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=SyncState.choices)

    class Meta:
        model = ClusterSync
        fields = ["rollout", "cluster", "state", "batch", "decision"]


class SyncedStateFilterSet(django_filters.FilterSet):
    drift_status = django_filters.MultipleChoiceFilter(choices=DriftStatus.choices)
    group = django_filters.NumberFilter(field_name="mapping__cluster_group")

    class Meta:
        model = SyncedState
        fields = ["mapping", "cluster", "commit", "drift_status", "group", "health"]
