"""The shape of a leg's plan (``ClusterSync.plan``, the server-side dry run of one cluster's sync) for the API
schema: the items with the step each object runs in, and the sync's steps in order (hook phases and waves,
``clusters/connector/hooks.py`` and ``ordered.py``; built by ``clusters.connector.results.Plan``).

The plan is stored as JSON; these serializers only describe it (``PlanField``), so generated clients see its
shape. A leg not planned yet has ``{}``; a plan that failed has ``error`` with empty ``items`` and ``counts``.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clusters.connector import hooks, results

PLAN_ACTIONS = (results.CREATE, results.UPDATE, results.DELETE, results.NOOP, results.CONFLICT, results.ERROR)
HOOK_KINDS = ("argocd", "helm")
HELM_OPERATIONS = ("install", "upgrade")


class PlanObjectRefSerializer(serializers.Serializer):
    apiVersion = serializers.CharField()  # the Kubernetes field name
    kind = serializers.CharField()
    namespace = serializers.CharField(allow_blank=True, help_text="Empty for a cluster-scoped object.")
    name = serializers.CharField()


class PlanFieldConflictSerializer(serializers.Serializer):
    manager = serializers.CharField(help_text="The field manager that owns the field.")
    field = serializers.CharField()
    message = serializers.CharField(allow_blank=True)


class PlanItemStepSerializer(serializers.Serializer):
    """Where one object runs in the sync (empty for a prune)."""

    phase = serializers.ChoiceField(choices=hooks.PHASES, required=False)
    wave = serializers.IntegerField(required=False, help_text="Sync wave: lower waves run first.")
    hook = serializers.ChoiceField(
        choices=HOOK_KINDS, required=False,
        help_text="Set for a hook: whose annotations made it one (created anew on every sync).",
    )
    delete_policies = serializers.ListField(
        child=serializers.CharField(), required=False,
        help_text="A hook's delete policies (BeforeHookCreation, HookSucceeded, HookFailed).",
    )
    generated = serializers.BooleanField(required=False, help_text="Named by the server (generateName).")
    first = serializers.BooleanField(
        required=False, help_text="A Namespace or CRD, applied before every phase (the first step).",
    )


class PlanItemSerializer(serializers.Serializer):
    ref = PlanObjectRefSerializer()
    action = serializers.ChoiceField(choices=PLAN_ACTIONS)
    diff = serializers.CharField(allow_blank=True,
                                 help_text="Unified diff of the live object to the desired one.")
    message = serializers.CharField(allow_blank=True)
    conflicts = PlanFieldConflictSerializer(many=True)
    step = PlanItemStepSerializer()


class PlanStepSerializer(serializers.Serializer):
    """One step of the sync, in the order the steps run: a phase and wave, the first step (Namespaces and
    CRDs), or the prunes (last in the Sync phase)."""

    phase = serializers.ChoiceField(choices=hooks.PHASES)
    wave = serializers.IntegerField(allow_null=True, help_text="Null for the first step and the prunes.")
    objects = serializers.ListField(child=serializers.CharField(),
                                    help_text="The objects, as 'Kind.group namespace/name'.")
    hooks = serializers.IntegerField(required=False, min_value=1, help_text="How many of them are hooks.")
    first = serializers.BooleanField(required=False, help_text="Namespaces and CRDs, applied first.")
    prune = serializers.BooleanField(required=False, help_text="Objects deleted because they left Git.")


class PlanSerializer(serializers.Serializer):
    items = PlanItemSerializer(many=True, required=False)
    counts = serializers.DictField(
        child=serializers.IntegerField(), required=False,
        help_text=f"Items per action ({', '.join(PLAN_ACTIONS)}).",
    )
    ok = serializers.BooleanField(required=False, help_text="No conflict and no failure.")
    steps = PlanStepSerializer(
        many=True, required=False,
        help_text="Present when the sync has hooks, waves or server-named objects: its steps in order.",
    )
    helm_operation = serializers.ChoiceField(
        choices=HELM_OPERATIONS, required=False,
        help_text="With Helm hooks: which of the chart's hooks run.",
    )
    error = serializers.CharField(required=False, help_text="Why the cluster could not be planned.")
    source = serializers.ChoiceField(  # type: ignore[assignment]  # the plan's key (DRF pops declared fields)
        choices=["agent report"], required=False,
        help_text="Pull mode: a client-side diff against the objects the cluster's agent last reported (no "
        "server-side dry run; docs/clusters.md \"Pull mode\").",
    )
    reported_at = serializers.DateTimeField(required=False, help_text="Pull mode: when the agent reported.")


@extend_schema_field(PlanSerializer)
class PlanField(serializers.JSONField):
    """A leg's stored plan, as the API shows it (``PlanSerializer`` is its schema)."""
