from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from clusters.models import ClusterGroup
from fleet.core.api.serializers import FleetModelSerializer, RestrictedPrimaryKeyRelatedField
from fleet.sources.choices import KeyKind
from fleet.sources.models import ChartRepository, Commit, MappingRender, PathMapping, Repository
from fleet.sources.services.charts import CREDENTIALS_AGAIN, url_moved
from fleet.sources.services.dependencies import (
    check_dependencies,
    lock_dependency_graph,
    mapping_label,
    resolve_label,
)
from fleet.sources.services.signing import normalize_trusted_keys

SECRET_FIELDS = ("token", "ssh_private_key", "webhook_secret")


class TrustedKeySerializer(serializers.Serializer):
    """One trusted public key (for the schema; TrustedKeysField does the work)."""

    name = serializers.CharField(max_length=100)
    public_key = serializers.CharField(
        help_text="An armored OpenPGP public key block (gpg --armor --export FPR) or one SSH public key line."
    )
    kind = serializers.ChoiceField(choices=KeyKind.choices, required=False,
                                   help_text="Filled in from the key when saved.")
    fingerprint = serializers.CharField(read_only=True, help_text="Filled in from the key when saved.")


@extend_schema_field(TrustedKeySerializer(many=True))
class TrustedKeysField(serializers.JSONField):
    """The repository's trusted keys: each checked with gpg or ssh-keygen, kind and fingerprint filled in."""

    def to_internal_value(self, data: Any) -> list[dict[str, str]]:
        try:
            return normalize_trusted_keys(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class RepositorySerializer(FleetModelSerializer):
    token = serializers.CharField(write_only=True, required=False, allow_blank=True)
    ssh_private_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False
    )
    webhook_secret = serializers.CharField(write_only=True, required=False, min_length=16)
    credentials_set = serializers.SerializerMethodField()
    webhook_path = serializers.SerializerMethodField()
    trusted_keys = TrustedKeysField(
        required=False,
        help_text="Keys whose signatures are trusted when verification_mode is required (docs/sources.md, "
        "Verified commits). Replaces the whole list when written.",
    )

    class Meta:
        model = Repository
        fields = [
            "id",
            "name",
            "url",
            "branch",
            "auth_method",
            "username",
            "token",
            "ssh_private_key",
            "ssh_known_hosts",
            "poll_interval",
            "webhook_secret",
            "enabled",
            "head_sha",
            "last_fetched",
            "last_error",
            "credentials_set",
            "webhook_path",
            "verification_mode",
            "trusted_keys",
            "created",
            "updated",
        ]
        read_only_fields = ["head_sha", "last_fetched", "last_error", "created", "updated"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for field in SECRET_FIELDS:
            if field in attrs and attrs[field] == "" and self.instance is not None:
                attrs.pop(field)
        method = attrs.get("auth_method", getattr(self.instance, "auth_method", "none"))
        token = attrs.get("token", getattr(self.instance, "token", ""))
        key = attrs.get("ssh_private_key", getattr(self.instance, "ssh_private_key", ""))
        if method == "token" and not token:
            raise serializers.ValidationError({"token": "A token is required for token authentication."})
        if method == "ssh" and not key:
            raise serializers.ValidationError({"ssh_private_key": "A private key is required for SSH."})
        return super().validate(attrs)

    def get_credentials_set(self, obj: Repository) -> dict[str, bool]:
        return {field: bool(getattr(obj, field)) for field in SECRET_FIELDS}

    def get_webhook_path(self, obj: Repository) -> str:
        return f"/api/hooks/git/{obj.pk}/"


class ChartRepositorySerializer(FleetModelSerializer):
    """Credentials and a CA for Helm chart repositories and OCI registries (docs/sources.md, Helm charts from
    repositories). The password is write-only: answers say only whether one is set."""

    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False,
        help_text="Password or token (encrypted at rest, never returned); empty on update keeps the stored "
        "one.",
    )
    password_set = serializers.SerializerMethodField()
    cluster_groups = RestrictedPrimaryKeyRelatedField(
        many=True, required=False, queryset=ClusterGroup.objects.all(),
        help_text="Ids of the groups whose mappings may use these credentials; empty: every group's (only a "
        "role on all clusters may leave it empty). A group-scoped role names only groups it manages.",
    )

    class Meta:
        model = ChartRepository
        fields = ["id", "name", "url", "username", "password", "password_set", "ca_bundle", "description",
                  "cluster_groups", "created", "updated"]
        read_only_fields = ["created", "updated"]
        derived_fields = ["url"]  # ChartRepository.clean() drops a trailing slash

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("password") == "" and self.instance is not None:
            attrs.pop("password")
        if (self.instance is not None and self.instance.password and not attrs.get("password")
                and "url" in attrs and url_moved(self.instance.url, attrs["url"])):
            # As Argo CD and Flux: a stored secret never silently follows the repository to another URL.
            raise serializers.ValidationError({"password": CREDENTIALS_AGAIN})
        if attrs.get("password") and not attrs.get("username", getattr(self.instance, "username", "")):
            raise serializers.ValidationError({"username": "A password needs a user name."})
        return super().validate(attrs)

    def get_password_set(self, obj: ChartRepository) -> bool:
        return bool(obj.password)


class PathMappingSerializer(FleetModelSerializer):
    repository = RestrictedPrimaryKeyRelatedField(queryset=Repository.objects.all())
    cluster_group = RestrictedPrimaryKeyRelatedField(queryset=ClusterGroup.objects.all())
    repository_name = serializers.CharField(source="repository.name", read_only=True)
    cluster_group_name = serializers.CharField(source="cluster_group.name", read_only=True)
    # Not restricted here: a dependency the user may not see is refused with 403 by check_dependencies.
    depends_on = serializers.PrimaryKeyRelatedField(
        many=True,
        required=False,
        queryset=PathMapping.objects.all(),
        help_text="Ids of the mappings that must be synced and healthy on a cluster before this one syncs "
        "there (docs/sources.md, Dependencies).",
    )
    depends_on_names = serializers.SerializerMethodField(
        help_text="The dependencies set here and those named by dependsOn in fleetgate.yaml, as "
        "'repository/mapping'."
    )

    class Meta:
        model = PathMapping
        fields = [
            "id",
            "repository",
            "repository_name",
            "name",
            "path",
            "cluster_group",
            "cluster_group_name",
            "renderer",
            "values",
            "target_namespace",
            "create_namespace",
            "namespace_labels",
            "namespace_annotations",
            "helm_release_name",
            "helm_chart",
            "helm_repo",
            "helm_version",
            "helm_values_files",
            "enabled",
            "directory_recurse",
            "directory_include",
            "directory_exclude",
            "postbuild",
            "depends_on",
            "declared_depends_on",
            "depends_on_names",
            "last_rendered_sha",
            "last_render_attempt_sha",
            "watched_paths",
            "created",
            "updated",
        ]
        read_only_fields = [
            "declared_depends_on", "last_rendered_sha", "last_render_attempt_sha", "watched_paths",
            "created", "updated",
        ]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        self._check_dependencies(attrs)
        return attrs

    def save(self, **kwargs: Any) -> Any:
        # Checked again under the graph's lock, inside the one audited save's transaction: two saves at once
        # cannot each add half of a cycle.
        lock_dependency_graph()
        self._check_dependencies(self.validated_data)
        return super().save(**kwargs)

    def _check_dependencies(self, attrs: dict[str, Any]) -> None:
        mapping = self.instance
        touched = {"depends_on", "name", "repository", "cluster_group"} & set(attrs)
        if not touched or (mapping is None and not attrs.get("depends_on")):
            return
        request = self.context.get("request")
        repository = attrs.get("repository") or getattr(mapping, "repository", None)
        group = attrs.get("cluster_group") or getattr(mapping, "cluster_group", None)
        name = attrs.get("name") or getattr(mapping, "name", "")
        if repository is None or group is None or not name:
            return  # required fields missing: their own errors say so
        if "depends_on" in attrs:
            deps = attrs["depends_on"]
        else:
            deps = list(mapping.depends_on.all()) if mapping is not None else []
        check_dependencies(
            user=request.user if request is not None else None,
            mapping=mapping,
            repository_name=repository.name,
            name=name,
            cluster_group_id=group.pk,
            depends_on=deps,
        )

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_depends_on_names(self, obj: PathMapping) -> list[str]:
        own = [mapping_label(m) for m in obj.depends_on.all()]
        declared = [resolve_label(str(d), obj.repository.name) for d in obj.declared_depends_on or []]
        return sorted(set(own) | set(declared))


class RenderErrorSerializer(serializers.Serializer):
    message = serializers.CharField()
    file = serializers.CharField(allow_null=True)
    line = serializers.IntegerField(allow_null=True)
    cluster = serializers.CharField(allow_null=True, required=False)


class MappingRenderBriefSerializer(serializers.ModelSerializer):
    """The outcome of one mapping at a commit, as nested in a commit."""

    mapping_name = serializers.CharField(source="mapping.name", read_only=True)
    error = serializers.SerializerMethodField()

    class Meta:
        model = MappingRender
        fields = [
            "id",
            "mapping",
            "mapping_name",
            "status",
            "reason",
            "renderer",
            "cluster_count",
            "object_count",
            "rendered_count",
            "reused_count",
            "failed_count",
            "error",
        ]
        read_only_fields = fields

    @extend_schema_field(RenderErrorSerializer(allow_null=True))
    def get_error(self, obj: MappingRender) -> dict[str, Any] | None:
        return obj.error_dict()


class CommitSerializer(serializers.ModelSerializer):
    repository_name = serializers.CharField(source="repository.name", read_only=True)
    renders = serializers.SerializerMethodField(
        help_text="Per-mapping render outcome at this commit, for the mappings the user can see."
    )

    class Meta:
        model = Commit
        fields = [
            "id",
            "repository",
            "repository_name",
            "sha",
            "parent_sha",
            "author_name",
            "author_email",
            "message",
            "committed_at",
            "seen_at",
            "status",
            "forced",
            "sequence",
            "verification",
            "verification_reason",
            "signature_format",
            "signer",
            "signing_key",
            "renders",
        ]
        read_only_fields = fields

    @extend_schema_field(MappingRenderBriefSerializer(many=True))
    def get_renders(self, obj: Commit) -> list[dict[str, Any]]:
        # Only what CommitViewSet prefetched, restricted to the user's mappings; never an unrestricted query.
        rows = getattr(obj, "visible_renders", None) or []
        return list(MappingRenderBriefSerializer(rows, many=True, context=self.context).data)


class FetchCommitSerializer(serializers.Serializer):
    sha = serializers.CharField()
    summary = serializers.CharField()
    author = serializers.CharField()
    forced = serializers.BooleanField()
    sequence = serializers.IntegerField()


class GitErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class MappingRenderOutcomeSerializer(serializers.Serializer):
    commit = serializers.CharField()
    mapping_id = serializers.IntegerField()
    mapping = serializers.CharField()
    status = serializers.CharField()
    reason = serializers.CharField()
    clusters = serializers.IntegerField()
    objects = serializers.IntegerField()
    rendered = serializers.IntegerField()
    reused = serializers.IntegerField()
    failed = serializers.IntegerField()
    error = RenderErrorSerializer(allow_null=True)


class FetchOutcomeSerializer(serializers.Serializer):
    repository = serializers.CharField()
    ok = serializers.BooleanField()
    trigger = serializers.CharField()
    old_head = serializers.CharField(allow_null=True)
    new_head = serializers.CharField(allow_null=True)
    commits = FetchCommitSerializer(many=True)
    force_push = serializers.BooleanField()
    rewritten = serializers.ListField(child=serializers.CharField())
    truncated = serializers.BooleanField()
    renders = MappingRenderOutcomeSerializer(many=True)
    error = GitErrorSerializer(allow_null=True)


class FetchQueuedSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["queued"])
    repository = serializers.CharField()


class ConnectionCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    branch = serializers.CharField()
    branch_found = serializers.BooleanField()
    head_sha = serializers.CharField(allow_null=True)
    branches = serializers.ListField(child=serializers.CharField())
    error = GitErrorSerializer(allow_null=True)


class WebhookSecretSerializer(serializers.Serializer):
    webhook_secret = serializers.CharField(help_text="The new secret: shown only in this response.")
    webhook_path = serializers.CharField()


# "source" is also a Field attribute, so the object's serializer is declared from a dict.
RENDERED_OBJECT_FIELDS: dict[str, serializers.Field] = {
    "apiVersion": serializers.CharField(),
    "kind": serializers.CharField(),
    "name": serializers.CharField(),
    "namespace": serializers.CharField(allow_null=True),
    "source": serializers.CharField(help_text="The repository file the object came from."),
    "document": serializers.IntegerField(help_text="The YAML document index in that file."),
    "object": serializers.DictField(),
}


class RenderedManifestSerializer(serializers.Serializer):
    commit = serializers.CharField()
    mapping = serializers.IntegerField()
    mapping_name = serializers.CharField()
    cluster = serializers.CharField()
    status = serializers.ChoiceField(choices=["ok", "failed"])
    mapping_status = serializers.CharField()
    input_hash = serializers.CharField()
    renderer = serializers.CharField()
    namespace = serializers.CharField()
    skipped = serializers.BooleanField()
    reused = serializers.BooleanField()
    object_count = serializers.IntegerField()
    warnings = serializers.ListField(child=serializers.CharField())
    objects = inline_serializer(name="RenderedObject", fields=RENDERED_OBJECT_FIELDS, many=True)
    error = RenderErrorSerializer(allow_null=True)


class RenderedQuerySerializer(serializers.Serializer):
    mapping = serializers.IntegerField(min_value=1)
    cluster = serializers.CharField(max_length=63)
