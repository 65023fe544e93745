import django_filters

from fleet.core.filters import FleetFilterSet, IdFilter
from fleet.rollouts.choices import DriftStatus, RolloutState, RolloutTrigger, SyncState
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState


class RolloutFilterSet(FleetFilterSet):
    state = django_filters.MultipleChoiceFilter(choices=RolloutState.choices)
    trigger = django_filters.MultipleChoiceFilter(choices=RolloutTrigger.choices)
    group = IdFilter(field_name="mapping__cluster_group")
    repository = IdFilter(field_name="mapping__repository")
    sha = django_filters.CharFilter(field_name="commit__sha", lookup_expr="startswith")

    class Meta:
        model = Rollout
        fields = ["state", "trigger", "mapping", "commit", "group", "repository", "sha", "paused"]


class ClusterSyncFilterSet(FleetFilterSet):
    state = django_filters.MultipleChoiceFilter(choices=SyncState.choices)

    class Meta:
        model = ClusterSync
        fields = ["rollout", "cluster", "state", "batch", "decision"]


class SyncedStateFilterSet(FleetFilterSet):
    drift_status = django_filters.MultipleChoiceFilter(choices=DriftStatus.choices)
    group = IdFilter(field_name="mapping__cluster_group")

    class Meta:
        model = SyncedState
        fields = ["mapping", "cluster", "commit", "drift_status", "group", "health"]
