from django.contrib import admin

from fleet.access.models import APIToken, ExternalIdentity, RoleBinding
from fleet.core.admin import AuditedModelAdmin


@admin.register(RoleBinding)
class RoleBindingAdmin(AuditedModelAdmin):
    list_display = ("__str__", "role", "scope", "created")
    list_filter = ("role", "scope")


@admin.register(APIToken)
class APITokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "description", "created", "expires", "last_used")
    readonly_fields = ("prefix", "created", "last_used")
    fields = ("user", "description", "prefix", "expires", "created", "last_used")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # tokens are issued through the API or `manage.py create_token`, which show the key once


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(admin.ModelAdmin):
    """Who signs in through which provider account; made and kept up to date by single sign-on only."""

    list_display = ("user", "issuer", "subject", "last_login")
    search_fields = ("user__username", "subject")
    readonly_fields = ("user", "issuer", "subject", "created", "last_login", "groups")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False
