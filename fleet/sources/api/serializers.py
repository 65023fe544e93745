from __future__ import annotations

from typing import Any

from rest_framework import serializers

from clusters.models import ClusterGroup
from fleet.core.api.serializers import FleetModelSerializer, RestrictedPrimaryKeyRelatedField
from fleet.sources.models import Commit, PathMapping, Repository

SECRET_FIELDS = ("token", "ssh_private_key", "webhook_secret")


class RepositoryCredentialsSetSerializer(serializers.Serializer):
    token = serializers.BooleanField()
    ssh_private_key = serializers.BooleanField()
    webhook_secret = serializers.BooleanField()


class RepositorySerializer(FleetModelSerializer):
    token = serializers.CharField(write_only=True, required=False, allow_blank=True)
    ssh_private_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False
    )
    webhook_secret = serializers.CharField(write_only=True, required=False, min_length=16)
    credentials_set = serializers.SerializerMethodField()
    webhook_path = serializers.SerializerMethodField()

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


class PathMappingSerializer(FleetModelSerializer):
    repository = RestrictedPrimaryKeyRelatedField(queryset=Repository.objects.all())
    cluster_group = RestrictedPrimaryKeyRelatedField(queryset=ClusterGroup.objects.all())
    repository_name = serializers.CharField(source="repository.name", read_only=True)
    cluster_group_name = serializers.CharField(source="cluster_group.name", read_only=True)

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
            "enabled",
            "last_rendered_sha",
            "created",
            "updated",
        ]
        read_only_fields = ["last_rendered_sha", "created", "updated"]


class CommitSerializer(serializers.ModelSerializer):
    repository_name = serializers.CharField(source="repository.name", read_only=True)

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
        ]
        read_only_fields = fields
