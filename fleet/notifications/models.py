"""Subscriptions to events, their deliveries (the delivery log), and the marks that make periodic events
fire once."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from fleet.core.fields import EncryptedTextField
from fleet.core.models import TimestampedModel
from fleet.notifications.choices import Channel, DeliveryStatus, EventType


class OwnedQuerySet(models.QuerySet):
    """Subscriptions and deliveries are personal: a user sees and changes their own (a superuser all).
    What a subscription may deliver is then bounded by its owner's roles (services.may_see)."""

    owner_path = "owner"

    def restrict(self, user: Any, action: str = "view") -> models.QuerySet:
        if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(**{self.owner_path: user})


class DeliveryQuerySet(OwnedQuerySet):
    owner_path = "subscription__owner"


class Subscription(TimestampedModel):
    """Events of one cluster group, mapping or repository, sent to one destination."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    events = models.JSONField(default=list, help_text="Event types: " + ", ".join(EventType.values))
    cluster_group = models.ForeignKey(
        "clusters.ClusterGroup", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    mapping = models.ForeignKey(
        "sources.PathMapping", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    repository = models.ForeignKey(
        "sources.Repository", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    # The webhook URL (Slack's and Teams' URLs are credentials) or the email addresses: encrypted, write-only.
    target = EncryptedTextField(help_text="Webhook URL or comma-separated email addresses (encrypted).")
    target_hint = models.CharField(max_length=200, blank=True, editable=False)
    secret = EncryptedTextField(help_text="HMAC-SHA256 key of a generic webhook (encrypted, shown once).")
    enabled = models.BooleanField(default=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                name="notifications_subscription_one_subject",
                condition=(
                    models.Q(cluster_group__isnull=False, mapping__isnull=True, repository__isnull=True)
                    | models.Q(cluster_group__isnull=True, mapping__isnull=False, repository__isnull=True)
                    | models.Q(cluster_group__isnull=True, mapping__isnull=True, repository__isnull=False)
                ),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_channel_display()})"

    @property
    def subject(self) -> Any:
        return self.cluster_group or self.mapping or self.repository

    def subject_label(self) -> str:
        if self.cluster_group_id:
            return f"group {self.cluster_group}"
        if self.mapping_id:
            return f"mapping {self.mapping}"
        return f"repository {self.repository}"

    def audit_scope(self) -> Any:
        if self.cluster_group_id:
            return self.cluster_group
        return self.mapping.cluster_group if self.mapping is not None else None


class Delivery(models.Model):
    """One event sent to one subscription: the delivery log. Attempts, lease and status make a delivery
    idempotent under worker kills, like a rollout's leg (fleet/rollouts/services/sync.py)."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries")
    audit_event_id = models.BigIntegerField(help_text="The audit event the notification is about.")
    audit_sequence = models.BigIntegerField()
    event_type = models.CharField(max_length=32, choices=EventType.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    title = models.CharField(max_length=300)
    payload = models.JSONField(help_text="What was sent, without secrets, as the owner's role may see it.")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "audit_event_id"], name="notifications_once_per_event"
            )
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"delivery {self.pk}: {self.event_type} to {self.subscription_id} ({self.status})"

    def audit_scope(self) -> Any:
        return self.subscription.audit_scope()


class EmittedMark(models.Model):
    """An event the periodic scan emitted (a window that opened, a waiver about to expire), so that it is
    emitted once: ``window:<group>:<opened at>``, ``waiver:<id>:<expires at>``."""

    key = models.CharField(max_length=200, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class WindowState(models.Model):
    """Whether a group's sync windows allowed syncing at the last scan (an opening is a closed -> open)."""

    cluster_group = models.OneToOneField("clusters.ClusterGroup", on_delete=models.CASCADE, related_name="+")
    open = models.BooleanField()
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.cluster_group_id}: {'open' if self.open else 'closed'}"
