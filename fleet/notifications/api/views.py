"""Subscriptions and the delivery log. Both are personal: each user sees their own (a superuser every one),
and a subscription reaches only what its owner's roles let them see (fleet/notifications/services.py)."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.access.restrict import restrict
from fleet.core.filters import FleetFilterSet, IdFilter
from fleet.notifications import services
from fleet.notifications.api.serializers import (
    DeliverySerializer,
    NewSubscriptionSerializer,
    SecretSerializer,
    SubscriptionSerializer,
)
from fleet.notifications.choices import Channel, DeliveryStatus, EventType
from fleet.notifications.models import Delivery, Subscription


class SubscriptionFilterSet(FleetFilterSet):
    cluster_group = IdFilter(field_name="cluster_group")
    mapping = IdFilter(field_name="mapping")
    repository = IdFilter(field_name="repository")
    channel = django_filters.ChoiceFilter(choices=Channel.choices)

    class Meta:
        model = Subscription
        fields = ["cluster_group", "mapping", "repository", "channel", "enabled"]


class DeliveryFilterSet(FleetFilterSet):
    subscription = IdFilter(field_name="subscription")
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    event_type = django_filters.ChoiceFilter(choices=EventType.choices)

    class Meta:
        model = Delivery
        fields = ["subscription", "status", "event_type"]


class SubscriptionViewSet(viewsets.ModelViewSet):
    """Your subscriptions to events of a cluster group, mapping or repository."""

    serializer_class = SubscriptionSerializer
    filterset_class = SubscriptionFilterSet
    queryset = Subscription.objects.all()
    ordering_fields = ["id", "name"]
    ordering = ["id"]

    def get_queryset(self) -> Any:
        return restrict(
            Subscription.objects.select_related("owner", "cluster_group", "mapping", "repository"),
            self.request.user,
        )

    @extend_schema(responses={201: NewSubscriptionSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        target = data.pop("target")
        subscription = Subscription(**data)
        secret = services.save_subscription(request.user, subscription, target=target)
        body = dict(NewSubscriptionSerializer(subscription, context=self.get_serializer_context()).data)
        body["secret"] = secret or None
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        target = data.pop("target", None)
        subscription = serializer.instance
        for key, value in data.items():
            setattr(subscription, key, value)
        services.save_subscription(self.request.user, subscription, target=target)

    def perform_destroy(self, instance: Subscription) -> None:
        services.delete_subscription(instance)

    @extend_schema(request=None, responses=SecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret", url_name="rotate")
    def rotate_secret(self, request: Request, pk: Any = None) -> Response:
        """A new signing secret for a generic webhook, shown only in this answer."""
        return Response({"secret": services.rotate_secret(self.get_object())})


class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The delivery log of your subscriptions: status, attempts, response code, error, and what was sent."""

    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilterSet
    queryset = Delivery.objects.all()
    ordering_fields = ["id", "created"]
    ordering = ["-id"]

    def get_queryset(self) -> Any:
        return restrict(Delivery.objects.select_related("subscription"), self.request.user)

    @extend_schema(request=None, responses=DeliverySerializer)
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: Any = None) -> Response:
        """Send a failed delivery again."""
        delivery = self.get_object()
        services.redeliver(delivery)
        delivery.refresh_from_db()
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
