"""Serializers for the policy API. Policy writes go through the services (compile, test, new version)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import APIException, PermissionDenied

from clusters.models import ClusterGroup
from fleet.core.api.serializers import FleetModelSerializer, StrictCharField
from fleet.sources.models import PathMapping, Repository
from policies.choices import Enforcement
from policies.gate import language_of
from policies.models import (
    Evaluation,
    Policy,
    PolicyBinding,
    PolicySource,
    PolicyVersion,
    Violation,
    Waiver,
)
from policies.services.definitions import (
    EngineUnavailableForSave,
    PolicyDefinition,
    PolicyInvalid,
    PolicyWriteDenied,
    author_policy,
    validate_definition,
)


class EngineUnavailableError(APIException):
    status_code = 503
    default_detail = "The Rego engine is unavailable; nothing was saved."
    default_code = "engine_unavailable"


class PolicyRefused(serializers.ValidationError):
    """HTTP 400 in DRF's shape (field -> messages) plus typed ``compile_errors`` (path, line, column,
    message) and ``tests`` (name, passed, error), kept as numbers and booleans."""

    def __init__(self, exc: PolicyInvalid) -> None:
        super().__init__({exc.field: [exc.message]})
        detail: dict[str, Any] = {exc.field: [exc.message]}
        if exc.errors:
            detail["compile_errors"] = exc.errors
        if exc.tests:
            detail["tests"] = exc.tests
        self.detail = detail  # type: ignore[assignment]


def invalid(exc: PolicyInvalid) -> serializers.ValidationError:
    return PolicyRefused(exc)


class VisibleRelatedField(serializers.PrimaryKeyRelatedField):
    """A writable reference limited to what the user may see (the queryset's own ``restrict``)."""

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        request = self.context.get("request")
        if request is None or queryset is None:
            return queryset
        return queryset.restrict(request.user, "view")  # type: ignore[attr-defined]


class ModuleSerializer(serializers.Serializer):
    path = serializers.CharField(max_length=500)
    source = serializers.CharField(allow_blank=True, trim_whitespace=False)  # type: ignore[assignment]


class TestResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    passed = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True)


class PolicyVersionSerializer(serializers.ModelSerializer):
    test_results = TestResultSerializer(many=True, read_only=True)

    class Meta:
        model = PolicyVersion
        fields = [
            "id",
            "number",
            "content_hash",
            "created_by_name",
            "created",
            "commit_sha",
            "engine",
            "test_status",
            "test_results",
        ]
        read_only_fields = fields


# What a definition field reads as when the current version has no value for it (a Gatekeeper policy has
# no modules, a conftest policy no template): the schema's type, never null.
DEFINITION_DEFAULTS: dict[str, Any] = {
    "modules": [],
    "test_modules": [],
    "data": {},
    "namespaces": [],
    "all_namespaces": False,
    "combine": False,
    "template": "",
    "constraints": [],
    "policy": "",
    "binding": "",
}

DEFINITION_FIELDS = (
    "modules",
    "test_modules",
    "data",
    "namespaces",
    "all_namespaces",
    "combine",
    "template",
    "constraints",
    "policy",
    "binding",
)


class PolicySerializer(serializers.ModelSerializer):
    """The policy with its current definition. Writing a definition field creates a new version."""

    modules = ModuleSerializer(many=True, required=False, help_text="conftest: the Rego modules.")
    test_modules = ModuleSerializer(
        many=True, required=False, help_text="Modules with test_* rules, run like `opa test` on save."
    )
    data = serializers.DictField(  # type: ignore[assignment]
        required=False, help_text="conftest: data documents (data.<key>), a JSON object."
    )
    namespaces = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="conftest: packages to read rules from."
    )
    all_namespaces = serializers.BooleanField(required=False)
    combine = serializers.BooleanField(required=False, help_text="conftest: one input with every object.")
    template = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Gatekeeper ConstraintTemplate YAML.",
    )
    constraints = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False),
        required=False,
        help_text="Gatekeeper: Constraint YAML documents of the template's kind.",
    )
    policy = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="vap: the ValidatingAdmissionPolicy YAML; kyverno: the ClusterPolicy or Policy YAML.",
    )
    binding = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="vap: the ValidatingAdmissionPolicyBinding YAML (one policy per binding).",
    )
    allow_failing_tests = serializers.BooleanField(
        required=False, write_only=True, default=False, help_text="Save even when test_* rules fail."
    )
    language = serializers.SerializerMethodField(
        help_text="Rego/conftest, Rego/Gatekeeper, VAP (CEL) or Kyverno."
    )
    version = serializers.IntegerField(source="current.number", read_only=True, allow_null=True)
    test_status = serializers.CharField(source="current.test_status", read_only=True, allow_null=True)
    test_results = TestResultSerializer(source="current.test_results", many=True, read_only=True)
    versions = PolicyVersionSerializer(many=True, read_only=True)
    constraint_count = serializers.SerializerMethodField()

    class Meta:
        model = Policy
        fields = [
            "id",
            "name",
            "description",
            "style",
            "language",
            "kind",
            "version",
            *DEFINITION_FIELDS,
            "allow_failing_tests",
            "test_status",
            "test_results",
            "constraint_count",
            "versions",
            "source",
            "created",
            "updated",
        ]
        read_only_fields = ["kind", "source", "created", "updated"]

    def get_language(self, obj: Policy) -> str:
        return language_of(obj.style)

    def get_constraint_count(self, obj: Policy) -> int:
        return len((obj.current.content.get("constraints") or []) if obj.current else [])

    def to_representation(self, instance: Policy) -> dict[str, Any]:
        out = super().to_representation(instance)
        content = instance.current.content if instance.current else {}
        for key in DEFINITION_FIELDS:
            value = content.get(key)
            out[key] = DEFINITION_DEFAULTS[key] if value is None else value
        return out

    _refusal: PolicyInvalid | None = None

    def is_valid(self, *, raise_exception: bool = False) -> bool:
        """Like DRF's, but a refused definition keeps its typed compile errors and test results."""
        self._refusal = None
        ok = super().is_valid(raise_exception=False)
        if not ok and raise_exception:
            if self._refusal is not None:
                raise PolicyRefused(self._refusal)
            raise serializers.ValidationError(self.errors)
        return ok

    def validate_style(self, value: str) -> str:
        if self.instance is not None and value != self.instance.style:
            raise serializers.ValidationError("The style of a policy cannot change.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        base: dict[str, Any] = {}
        if self.instance is not None and self.instance.current is not None:
            base = dict(self.instance.current.content)
        style = attrs.get("style") or (self.instance.style if self.instance else None)
        if not style:
            raise serializers.ValidationError({"style": ["This field is required."]})
        content = {**base, "style": style}
        for key in DEFINITION_FIELDS:
            if key in attrs:
                content[key] = attrs[key]
        try:
            definition = PolicyDefinition.from_content(content)
            validated = validate_definition(
                definition, allow_failing_tests=attrs.get("allow_failing_tests", False)
            )
        except PolicyInvalid as exc:
            self._refusal = exc
            raise invalid(exc) from None
        except EngineUnavailableForSave as exc:
            raise EngineUnavailableError(str(exc)) from None
        attrs["_definition"] = definition
        attrs["_validated"] = validated
        return attrs

    def _save(self, validated_data: dict[str, Any], instance: Policy | None) -> Policy:
        request = self.context.get("request")
        user = request.user if request is not None else None
        try:
            result = author_policy(
                user,
                validated_data.get("name") or (instance.name if instance else ""),
                validated_data["_definition"],
                description=validated_data.get("description"),
                policy=instance,
                validated=validated_data["_validated"],
            )
        except PolicyWriteDenied as exc:
            raise PermissionDenied(exc.message) from None
        except PolicyInvalid as exc:
            raise invalid(exc) from None
        policy = result.policy
        if instance is not None and validated_data.get("name") and validated_data["name"] != policy.name:
            policy.name = validated_data["name"]
            policy.save(update_fields=["name", "updated"])
        return Policy.objects.select_related("current").prefetch_related("versions").get(pk=policy.pk)

    def create(self, validated_data: dict[str, Any]) -> Policy:
        return self._save(validated_data, None)

    def update(self, instance: Policy, validated_data: dict[str, Any]) -> Policy:
        return self._save(validated_data, instance)


class PolicyBindingSerializer(FleetModelSerializer):
    policy = VisibleRelatedField(queryset=Policy.objects.all())
    policy_name = serializers.CharField(source="policy.name", read_only=True)
    cluster_group = VisibleRelatedField(
        queryset=ClusterGroup.objects.all(), allow_null=True, required=False, help_text="Empty: all clusters."
    )
    cluster_group_name = serializers.CharField(source="cluster_group.name", read_only=True, allow_null=True)
    pinned_version = VisibleRelatedField(
        queryset=PolicyVersion.objects.all(), allow_null=True, required=False
    )
    pinned_version_number = serializers.IntegerField(
        source="pinned_version.number", read_only=True, allow_null=True
    )
    enforce_as = serializers.CharField(
        read_only=True, help_text="The enforcement a scheduled switch sets at enforce_at (empty: none)."
    )
    dryrun_days = serializers.IntegerField(
        write_only=True,
        required=False,
        min_value=1,
        max_value=90,
        help_text="With enforcement deny (or warn): start as dryrun for this many days, with the impact "
        "preview of the enforcement attached, then switch on schedule.",
    )

    class Meta:
        model = PolicyBinding
        fields = [
            "id",
            "policy",
            "policy_name",
            "cluster_group",
            "cluster_group_name",
            "enforcement",
            "pinned_version",
            "pinned_version_number",
            "enabled",
            "dryrun_days",
            "enforce_at",
            "enforce_as",
            "preview",
            "created",
            "updated",
        ]
        read_only_fields = ["created", "updated", "enforce_at", "enforce_as", "preview"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if "dryrun_days" in attrs:
            enforcement = attrs.get("enforcement", getattr(self.instance, "enforcement", "deny"))
            if enforcement not in ("deny", "warn"):
                raise serializers.ValidationError(
                    {"dryrun_days": ["A dry run comes before deny or warn: set enforcement to one of them."]}
                )
        return attrs


class WaiverSerializer(FleetModelSerializer):
    policy = VisibleRelatedField(queryset=Policy.objects.all())
    policy_name = serializers.CharField(source="policy.name", read_only=True)
    cluster_group = VisibleRelatedField(
        queryset=ClusterGroup.objects.all(), allow_null=True, required=False, help_text="Empty: all clusters."
    )
    cluster_group_name = serializers.CharField(source="cluster_group.name", read_only=True, allow_null=True)
    active = serializers.BooleanField(read_only=True)
    uses = serializers.IntegerField(source="use_count", read_only=True, default=0)
    labels = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="Labels the object must carry (string values).",
    )

    class Meta:
        model = Waiver
        fields = [
            "id",
            "policy",
            "policy_name",
            "kind",
            "namespace",
            "name_pattern",
            "labels",
            "cluster_group",
            "cluster_group_name",
            "cluster_pattern",
            "rule",
            "origin",
            "expires_at",
            "justification",
            "author_name",
            "active",
            "uses",
            "created",
            "updated",
        ]
        read_only_fields = ["author_name", "origin", "created", "updated"]


class WaiverBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Waiver
        fields = ["id", "justification", "author_name", "expires_at"]
        read_only_fields = fields


class ViolationSerializer(serializers.ModelSerializer):
    enforcement = serializers.CharField(read_only=True, help_text="deny, warn or dryrun")
    waiver = WaiverBriefSerializer(source="waived_by", read_only=True, allow_null=True)
    cluster = serializers.IntegerField(source="evaluation.cluster_id", read_only=True)
    cluster_name = serializers.CharField(source="evaluation.cluster.name", read_only=True)
    commit_sha = serializers.CharField(source="evaluation.commit.sha", read_only=True, allow_null=True)

    class Meta:
        model = Violation
        fields = [
            "id",
            "evaluation",
            "cluster",
            "cluster_name",
            "commit_sha",
            "policy",
            "policy_name",
            "policy_version",
            "enforcement",
            "rule",
            "language",
            "message",
            "api_version",
            "kind",
            "namespace",
            "name",
            "source_file",
            "details",
            "waived_by",
            "waiver",
        ]
        read_only_fields = fields


class EvaluationSerializer(serializers.ModelSerializer):
    decision = serializers.CharField(read_only=True, help_text="passed, warned or blocked")
    commit_sha = serializers.CharField(source="commit.sha", read_only=True, allow_null=True)
    mapping_name = serializers.CharField(source="mapping.name", read_only=True)
    cluster_name = serializers.CharField(source="cluster.name", read_only=True)

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "commit",
            "commit_sha",
            "mapping",
            "mapping_name",
            "cluster",
            "cluster_name",
            "decision",
            "reasons",
            "errors",
            "object_count",
            "evaluations",
            "deny_count",
            "warn_count",
            "dryrun_count",
            "waived_count",
            "engine",
            "duration_ms",
            "policy_versions",
            "created",
        ]
        read_only_fields = fields


class EvaluationDetailSerializer(EvaluationSerializer):
    violations = ViolationSerializer(many=True, read_only=True)

    class Meta(EvaluationSerializer.Meta):
        fields = [*EvaluationSerializer.Meta.fields, "violations"]
        read_only_fields = fields


class PolicySourceSerializer(FleetModelSerializer):
    repository = VisibleRelatedField(queryset=Repository.objects.all())
    bind_group = VisibleRelatedField(queryset=ClusterGroup.objects.all(), allow_null=True, required=False)
    bind_enforcement = serializers.ChoiceField(
        choices=[("", "no bindings"), *Enforcement.choices],
        required=False,
        allow_blank=True,
        help_text="deny, warn or dryrun: bind new policies; empty: no bindings.",
    )

    class Meta:
        model = PolicySource
        fields = [
            "id",
            "repository",
            "path",
            "name",
            "enabled",
            "bind_group",
            "bind_enforcement",
            "last_synced_sha",
            "last_synced",
            "last_error",
            "created",
            "updated",
        ]
        read_only_fields = ["last_synced_sha", "last_synced", "last_error", "created", "updated"]


class SyncRequestSerializer(serializers.Serializer):
    commit = serializers.CharField(
        required=False, allow_blank=True, help_text="Default: the repository head."
    )


class ImportRequestSerializer(serializers.Serializer):
    files = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="{relative path: content}: templates, constraints, .rego, data files.",
    )
    documents = serializers.CharField(
        required=False,
        trim_whitespace=False,
        help_text="Multi-document YAML: ConstraintTemplate(s), Constraint(s), ValidatingAdmissionPolicy(s) "
        "and their bindings, Kyverno ClusterPolicy/Policy and PolicyException(s).",
    )
    name = serializers.CharField(required=False, allow_blank=True, help_text="Name of the conftest policy.")
    cluster_group = VisibleRelatedField(
        queryset=ClusterGroup.objects.all(),
        required=False,
        allow_null=True,
        help_text="Bind here (empty: all).",
    )
    enforcement = serializers.CharField(
        required=False, help_text="Create bindings with this enforcement: deny, warn or dryrun."
    )

    def validate_enforcement(self, value: str) -> str:
        if value not in Enforcement.values:
            raise serializers.ValidationError(f"Choose one of {', '.join(Enforcement.values)}.")
        return value

    allow_failing_tests = serializers.BooleanField(required=False, default=False)


class ImportResultSerializer(serializers.Serializer):
    policies = serializers.ListField(child=serializers.DictField())
    bindings = serializers.ListField(child=serializers.DictField())
    waivers = serializers.ListField(
        child=serializers.DictField(), help_text="Waivers made of Kyverno PolicyExceptions."
    )
    reported = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the gate does not apply: Kyverno mutate/generate rules by name, a "
        "ValidatingAdmissionPolicy without a binding.",
    )
    ignored = serializers.ListField(child=serializers.CharField())


class CheckRequestSerializer(serializers.Serializer):
    mapping = VisibleRelatedField(queryset=PathMapping.objects.all(), required=False)
    repository = VisibleRelatedField(
        queryset=Repository.objects.all(), required=False, help_text="Check every enabled mapping of it."
    )
    branch = serializers.CharField(required=False, allow_blank=True)
    commit = serializers.CharField(required=False, allow_blank=True)
    manifests = serializers.CharField(
        required=False, trim_whitespace=False, help_text="Multi-document YAML to check instead of a Git ref."
    )
    operation = serializers.ChoiceField(
        choices=["CREATE", "UPDATE", "DELETE"],
        required=False,
        help_text="Review every object as this admission operation (default CREATE).",
    )
    old_manifests = StrictCharField(
        required=False,
        trim_whitespace=False,
        help_text="Multi-document YAML: the old objects of an UPDATE (or DELETE), matched by kind, namespace "
        "and name.",
    )
    live_cluster = StrictCharField(
        required=False,
        max_length=63,
        help_text="Name of a member cluster you may see: review against what it runs now (CREATE or UPDATE "
        "by its live objects, DELETE for what a sync would prune). Needs rollout.sync on the mapping's "
        "group (403 otherwise); live Secret values are masked.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("mapping") and not attrs.get("repository"):
            raise serializers.ValidationError({"mapping": ["Give a mapping (or a repository)."]})
        if attrs.get("operation") and attrs.get("live_cluster"):
            raise serializers.ValidationError(
                {"live_cluster": ["Give an operation or a live cluster, not both."]}
            )
        if attrs.get("old_manifests") and attrs.get("operation") not in ("UPDATE", "DELETE"):
            raise serializers.ValidationError(
                {"old_manifests": ["Old objects are used with the UPDATE or DELETE operation."]}
            )
        if attrs.get("live_cluster") and not attrs.get("mapping"):
            raise serializers.ValidationError({"mapping": ["A live cluster is checked for one mapping."]})
        refs = [k for k in ("branch", "commit", "manifests") if attrs.get(k)]
        if len(refs) != 1:
            raise serializers.ValidationError(
                {"non_field_errors": ["Give exactly one of branch, commit, manifests."]}
            )
        if attrs.get("manifests") and not attrs.get("mapping"):
            raise serializers.ValidationError(
                {"mapping": ["Uploaded manifests are checked for one mapping."]}
            )
        return attrs


class FindingSerializer(serializers.Serializer):
    msg = serializers.CharField()
    policy = serializers.CharField()
    rule = serializers.CharField()
    enforcement = serializers.CharField()
    filename = serializers.CharField()
    object = serializers.CharField()
    waiver = serializers.IntegerField(allow_null=True)


class ClusterCheckSerializer(serializers.Serializer):
    cluster = serializers.CharField()
    decision = serializers.CharField()
    reasons = serializers.ListField(child=serializers.CharField())
    objects = serializers.IntegerField()
    failures = FindingSerializer(many=True)
    warnings = FindingSerializer(many=True)
    exceptions = FindingSerializer(many=True)
    dryrun = FindingSerializer(many=True)
    counts = serializers.DictField(child=serializers.IntegerField())
    summary = serializers.CharField()


class MappingCheckSerializer(serializers.Serializer):
    mapping = serializers.DictField()
    ref = serializers.CharField()
    blocked = serializers.BooleanField()
    error = serializers.CharField(help_text="Why this mapping could not be checked (it counts as blocked).")
    decisions = serializers.DictField(child=serializers.IntegerField())
    clusters = ClusterCheckSerializer(many=True)
    summary = serializers.CharField()
    policies = serializers.ListField(child=serializers.DictField())


class CheckResponseSerializer(serializers.Serializer):
    blocked = serializers.BooleanField()
    mappings = MappingCheckSerializer(many=True)
