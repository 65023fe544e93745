from django.contrib import admin

from fleet.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = (
        "sequence",
        "time",
        "actor_name",
        "change_context",
        "action",
        "target_repr",
        "scope_group_name",
    )
    list_filter = ("change_context", "action")
    search_fields = ("target_repr", "message", "actor_name", "request_id")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
