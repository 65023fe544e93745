from django.contrib import admin

from fleet.core.admin import ReadOnlyModelAdmin
from fleet.notifications.models import Delivery, Subscription


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyModelAdmin):
    """Read-only here: changes go through the UI and the API, which check the subject's scope and audit."""

    list_display = ["name", "owner", "channel", "target_hint", "enabled"]
    exclude = ["target", "secret"]  # credentials: never shown, set through the API or the UI
    readonly_fields = ["owner", "target_hint"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "subscription", "event_type", "status", "attempts", "response_code", "created"]
    list_filter = ["status", "event_type", "channel"]
