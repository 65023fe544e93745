from __future__ import annotations

from typing import Any

from rest_framework import serializers

from clusters.models import ClusterGroup
from fleet.core.api.serializers import (
    RestrictedPrimaryKeyRelatedField,
    StrictCharField,
    StrictTextSerializerMixin,
)
from fleet.notifications.choices import EventType
from fleet.notifications.models import Delivery, Subscription
from fleet.sources.models import PathMapping, Repository


class SubscriptionSerializer(StrictTextSerializerMixin, serializers.ModelSerializer):
    """A subscription. ``target`` (the URL or the addresses) is write-only: only ``target_hint`` (scheme and
    host, or the addresses) is shown; a generic webhook's signing secret is returned once, by create."""

    events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices), min_length=1)
    cluster_group = RestrictedPrimaryKeyRelatedField(
        queryset=ClusterGroup.objects.all(), required=False, allow_null=True
    )
    mapping = RestrictedPrimaryKeyRelatedField(
        queryset=PathMapping.objects.all(), required=False, allow_null=True
    )
    repository = RestrictedPrimaryKeyRelatedField(
        queryset=Repository.objects.all(), required=False, allow_null=True
    )
    target = StrictCharField(write_only=True, required=False, max_length=2000)
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Subscription
        fields = [
            "id",
            "name",
            "owner",
            "events",
            "cluster_group",
            "mapping",
            "repository",
            "channel",
            "target",
            "target_hint",
            "enabled",
            "created",
            "updated",
        ]
        read_only_fields = ["target_hint", "created", "updated"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None and not attrs.get("target"):
            raise serializers.ValidationError({"target": "This field is required."})
        if self.instance is not None and "channel" in attrs and attrs["channel"] != self.instance.channel:
            raise serializers.ValidationError(
                {"channel": "The channel cannot change; create a new subscription."}
            )
        return attrs


class NewSubscriptionSerializer(SubscriptionSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The HMAC-SHA256 signing key of a generic webhook; shown only now."
    )

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "secret"]


class SecretSerializer(serializers.Serializer):
    secret = serializers.CharField(read_only=True)


class DeliverySerializer(serializers.ModelSerializer):
    subscription_name = serializers.CharField(source="subscription.name", read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "subscription",
            "subscription_name",
            "event_type",
            "channel",
            "title",
            "audit_sequence",
            "status",
            "attempts",
            "response_code",
            "error",
            "next_attempt_at",
            "delivered_at",
            "created",
            "updated",
            "payload",
        ]
        read_only_fields = fields
