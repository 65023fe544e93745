from __future__ import annotations

from typing import Any

from rest_framework import serializers

from clusters import tenancy
from clusters.models import AllowList, Cluster, ClusterGroup
from fleet.core.api.serializers import BriefSerializer, FleetModelSerializer, RestrictedPrimaryKeyRelatedField

SECRET_FIELDS = ("token", "client_key", "kubeconfig")


class CredentialsSetSerializer(serializers.Serializer):
    token = serializers.BooleanField()
    client_key = serializers.BooleanField()
    kubeconfig = serializers.BooleanField()


class ClusterSerializer(FleetModelSerializer):
    """Credentials are write-only: responses say which are set (`credentials_set`), never their values."""

    token = serializers.CharField(write_only=True, required=False, allow_blank=True, trim_whitespace=True)
    client_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False
    )
    kubeconfig = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False
    )
    credentials_set = CredentialsSetSerializer(read_only=True)
    groups = BriefSerializer(many=True, read_only=True)

    class Meta:
        model = Cluster
        fields = [
            "id",
            "name",
            "description",
            "api_url",
            "auth_method",
            "token",
            "client_certificate",
            "client_key",
            "kubeconfig",
            "kubeconfig_context",
            "ca_data",
            "insecure_skip_tls_verify",
            "labels",
            "values",
            "status",
            "kubernetes_version",
            "last_seen",
            "last_error",
            "connection_mode",
            "agent_version",
            "agent_seen",
            "credentials_set",
            "groups",
            "created",
            "updated",
        ]
        read_only_fields = [
            "status", "kubernetes_version", "last_seen", "last_error", "agent_version", "agent_seen",
            "created", "updated",
        ]
        extra_kwargs = {
            "client_certificate": {"write_only": True, "required": False},
            "connection_mode": {"help_text": "push (Fleetgate calls the cluster with stored credentials) or "
                                "pull (an agent on the cluster calls Fleetgate; no credentials are stored). "
                                "Set when the cluster is created."},
        }
        derived_fields = ("api_url", "kubeconfig_context")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # An omitted or empty secret keeps the stored one; send a new value to replace it.
        for field in SECRET_FIELDS:
            if field in attrs and attrs[field] == "" and self.instance is not None:
                attrs.pop(field)
        mode = attrs.get("connection_mode")
        if self.instance is not None and mode is not None and mode != self.instance.connection_mode:
            raise serializers.ValidationError(
                {"connection_mode": "The connection mode is set when the cluster is created: create a new "
                 "cluster to change it."})
        return super().validate(attrs)


class ConnectionTestSerializer(serializers.Serializer):
    """The outcome of a connection test (never a credential)."""

    reachable = serializers.BooleanField()
    status = serializers.CharField()
    version = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)


class ClusterGroupSerializer(FleetModelSerializer):
    include = RestrictedPrimaryKeyRelatedField(queryset=Cluster.objects.all(), many=True, required=False)
    exclude = RestrictedPrimaryKeyRelatedField(queryset=Cluster.objects.all(), many=True, required=False)
    members = BriefSerializer(many=True, read_only=True, help_text="Resolved member clusters.")
    member_count = serializers.SerializerMethodField()

    class Meta:
        model = ClusterGroup
        fields = [
            "id",
            "name",
            "description",
            "labels",
            "selector",
            "values",
            "include",
            "exclude",
            "members",
            "member_count",
            "approval_required",
            "approvals_required",
            "sync_mode",
            "batch_size",
            "batch_percent",
            "max_parallel",
            "canary_selector",
            "batch_pause_seconds",
            "failure_threshold",
            "health_timeout_seconds",
            "prune",
            "self_heal",
            "create_only_review",
            "sync_windows",
            "created",
            "updated",
        ]
        read_only_fields = ["created", "updated"]

    def get_member_count(self, obj: ClusterGroup) -> int:
        return len(obj.members.all())


class SourceEntrySerializer(serializers.Serializer):
    repository = serializers.CharField(max_length=500, help_text="Glob of repository names or URLs.")
    path = serializers.CharField(max_length=500, help_text="Glob of mapping paths, e.g. teams/a/*.")


class KindEntrySerializer(serializers.Serializer):
    group = serializers.CharField(max_length=253, allow_blank=True, default="*",
                                  help_text='Glob of API groups ("" is the core group; default *).')
    kind = serializers.CharField(max_length=100, help_text="Glob of kinds.")


def _kinds(help_text: str) -> serializers.ListField:
    return serializers.ListField(child=KindEntrySerializer(), required=False, max_length=200,
                                 help_text=help_text)


class AllowListSerializer(FleetModelSerializer):
    """A cluster group's tenant allow-list (docs/clusters.md, "Tenant allow-lists")."""

    cluster_group = serializers.IntegerField(source="cluster_group_id", read_only=True)
    sources = serializers.ListField(
        child=SourceEntrySerializer(), required=False, max_length=200,
        help_text="Repositories and paths that may map to the group. Empty: none.")
    namespaces = serializers.ListField(
        child=serializers.CharField(max_length=253), required=False, max_length=200,
        help_text='Globs of namespaces objects may land in; "!glob" excludes. Empty: none.')
    cluster_resources_allow = _kinds("Cluster-scoped kinds allowed. Empty: none.")
    cluster_resources_deny = _kinds("Cluster-scoped kinds denied.")
    namespace_resources_allow = _kinds("Namespaced kinds allowed. Empty: every namespaced kind.")
    namespace_resources_deny = _kinds("Namespaced kinds denied.")
    impersonates = serializers.SerializerMethodField(
        help_text="The user the group's syncs impersonate (Impersonate-User), or empty."
    )

    class Meta:
        model = AllowList
        fields = ["cluster_group", *tenancy.FIELDS, "impersonates", "created", "updated"]
        read_only_fields = ["created", "updated"]

    def get_impersonates(self, obj: AllowList) -> str:
        return obj.rules().impersonate if obj.cluster_group_id else ""


class AgentCredentialInfoSerializer(serializers.Serializer):
    """One agent credential as the API shows it: never the token or its digest."""

    kind = serializers.ChoiceField(choices=["bootstrap", "agent"])
    prefix = serializers.CharField(help_text="The token's first 12 characters.")
    created = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    used_at = serializers.DateTimeField(allow_null=True)
    last_used = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    live = serializers.BooleanField()


class AgentStatusSerializer(serializers.Serializer):
    """A cluster's pull-mode agent: connected, its version, its last call, its credentials."""

    connection_mode = serializers.CharField()
    connected = serializers.BooleanField(
        help_text="A live agent credential, and a call within three report intervals."
    )
    agent_version = serializers.CharField(allow_blank=True)
    agent_seen = serializers.DateTimeField(allow_null=True)
    credentials = AgentCredentialInfoSerializer(many=True)


class AgentBootstrapSerializer(serializers.Serializer):
    """A new one-time bootstrap token: shown once, never again."""

    token = serializers.CharField(help_text="fga_b_...: give it to the agent; it is exchanged once.")
    expires_at = serializers.DateTimeField()
    manifest_command = serializers.CharField(help_text="A command that starts the agent with this token.")


class AgentRevokeSerializer(serializers.Serializer):
    revoked = serializers.IntegerField(help_text="How many credentials were revoked.")
