"""The base viewset: every queryset is restricted to what the user may do, and every write is audited.

A resource's viewset is then a few attributes (queryset, serializer_class, filterset_class). The pattern is
NetBox's `NetBoxModelViewSet`: restrict the queryset for the action, then re-check inside the atomic save
that the saved object is still within what the user may touch.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Model, QuerySet
from rest_framework import viewsets
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request

from fleet.access.restrict import has_permission, restrict
from fleet.access.writes import ensure_in_scope, save_in_scope
from fleet.audit.redact import snapshot
from fleet.audit.services import record_change

ACTION_PERMISSIONS = {
    "list": "view",
    "retrieve": "view",
    "create": "add",
    "update": "change",
    "partial_update": "change",
    "destroy": "delete",
}


class RestrictedViewSetMixin:
    """Restricts `get_queryset()` to the permission the current action needs."""

    request: Any
    action: Any
    # Custom actions declare their permission: {"sync": "sync"}; default "view".
    action_permissions: dict[str, str] = {}

    def permission_action(self) -> str:
        action = self.action or "list"
        return self.action_permissions.get(action) or ACTION_PERMISSIONS.get(action, "view")

    def base_queryset(self) -> QuerySet:
        return super().get_queryset()  # type: ignore[misc]

    def get_queryset(self) -> QuerySet:
        return restrict(self.base_queryset(), self.request.user, "view")

    def get_object(self) -> Any:
        """404 when the user may not see the object, 403 when they may see but not act on it."""
        obj = super().get_object()  # type: ignore[misc]
        needed = self.permission_action()
        if needed != "view" and not has_permission(self.request.user, type(obj), needed, obj):
            raise PermissionDenied(f"You may not {needed} this {type(obj)._meta.verbose_name}.")
        return obj


class FleetModelViewSet(RestrictedViewSetMixin, viewsets.ModelViewSet):
    """CRUD with restriction and audit. Subclasses set queryset, serializer_class and filterset_class."""

    audit_prefix: str = ""

    def _audit_action(self, verb: str) -> str:
        prefix = self.audit_prefix or self.base_queryset().model._meta.model_name
        return f"{prefix}.{verb}"

    def _ensure_allowed(self, instance: Model, action: str) -> None:
        ensure_in_scope(self.request.user, instance, action)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        # Refuse before validating: a user who may not add gets 403, not a lesson in field rules.
        model = self.base_queryset().model
        if not has_permission(request.user, model, "add"):
            raise PermissionDenied(f"You may not add a {model._meta.verbose_name}.")
        return super().create(request, *args, **kwargs)

    # Saves go through the one audited save (fleet/access/writes.py): save, re-check the scope of the saved
    # object, record the audit event, in one transaction. Models with a write service call it instead.
    def perform_create(self, serializer: Any) -> None:
        save_in_scope(
            self.request.user,
            serializer.save,
            before=None,
            audit=self._audit_action("create"),
            check=self._ensure_allowed,
        )

    def perform_update(self, serializer: Any) -> None:
        save_in_scope(
            self.request.user,
            serializer.save,
            before=snapshot(serializer.instance),
            audit=self._audit_action("update"),
            check=self._ensure_allowed,
        )

    def perform_destroy(self, instance: Model) -> None:
        with transaction.atomic():
            before = snapshot(instance)
            record_change(self._audit_action("delete"), instance, before)
            instance.delete()


class FleetReadOnlyViewSet(RestrictedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    pass


def not_found() -> NotFound:
    return NotFound("Not found.")
