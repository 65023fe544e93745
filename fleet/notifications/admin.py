from django.contrib import admin

from fleet.notifications.models import Delivery, Subscription


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "channel", "target_hint", "enabled"]
    exclude = ["target", "secret"]  # credentials: never shown, set through the API or the UI
    readonly_fields = ["owner", "target_hint"]

    # Read-only here: changes go through the UI and the API, which check the subject's scope and audit.
    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "subscription", "event_type", "status", "attempts", "response_code", "created"]
    list_filter = ["status", "event_type", "channel"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
