from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework import serializers

from clusters.models import ClusterGroup
from fleet.access.models import APIToken, RoleBinding
from fleet.core.api.serializers import FleetModelSerializer, StrictTextSerializerMixin


class RoleBindingSerializer(FleetModelSerializer):
    user = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(), required=False, allow_null=True
    )
    group = serializers.PrimaryKeyRelatedField(queryset=Group.objects.all(), required=False, allow_null=True)
    scope = serializers.PrimaryKeyRelatedField(
        queryset=ClusterGroup.objects.all(),
        required=False,
        allow_null=True,
        help_text="A cluster group id; null for all clusters.",
    )
    subject = serializers.CharField(read_only=True)
    scope_name = serializers.SerializerMethodField()

    class Meta:
        model = RoleBinding
        fields = ["id", "user", "group", "subject", "role", "scope", "scope_name", "created"]
        read_only_fields = ["created"]

    def get_scope_name(self, obj: RoleBinding) -> str:
        return obj.scope.name if obj.scope is not None else "all clusters"


class RoleSerializer(serializers.Serializer):
    role = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    permissions = serializers.ListField(child=serializers.CharField())


class APITokenSerializer(StrictTextSerializerMixin, serializers.ModelSerializer):
    days = serializers.IntegerField(
        write_only=True, required=False, min_value=0, max_value=3650, help_text="Days until expiry; 0 never."
    )

    class Meta:
        model = APIToken
        fields = ["id", "description", "prefix", "created", "expires", "last_used", "days"]
        read_only_fields = ["prefix", "created", "expires", "last_used"]


class NewAPITokenSerializer(APITokenSerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(APITokenSerializer.Meta):
        fields = [*APITokenSerializer.Meta.fields, "key"]


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    is_superuser = serializers.BooleanField()
    bindings = serializers.ListField(child=serializers.DictField())

    @staticmethod
    def for_user(user: Any) -> dict[str, Any]:
        bindings = [
            {"role": b.role, "scope": b.scope.name if b.scope is not None else None, "via": b.subject}
            for b in RoleBinding.objects.filter(user=user).select_related("scope")
        ] + [
            {"role": b.role, "scope": b.scope.name if b.scope is not None else None, "via": b.subject}
            for b in RoleBinding.objects.filter(group__in=user.groups.all()).select_related("scope", "group")
        ]
        return {
            "id": user.pk,
            "username": user.get_username(),
            "is_superuser": user.is_superuser,
            "bindings": bindings,
        }
