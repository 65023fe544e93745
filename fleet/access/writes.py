"""The one audited save: create or change an object for a user, re-check its scope after saving, record it.

Every create and update of a scoped model goes through `save_in_scope`, by way of the model's own service
where it has one (clusters and groups: clusters/membership_guard.py; waivers: policies/services/waivers.py):
the API's base viewset, the UI's views, management commands and imports alike. Inside one transaction it

1. runs ``save()`` (a serializer's or a form's save, or any callable that saves and returns the object);
2. checks that the saved object is within what the user may add or change: the queryset was restricted
   before, but the new values may carry the object out of the user's scope (NetBox's re-check);
3. records the audit event (``<model>.create`` or ``<model>.update`` with the before/after snapshots).

A refusal raises `OutOfScope` (403 in the API and in Django views) and rolls the save and its audit row back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import models, transaction
from rest_framework.exceptions import PermissionDenied

from fleet.access.restrict import has_permission
from fleet.audit.services import record_change

M = TypeVar("M", bound=models.Model)


class OutOfScope(PermissionDenied, DjangoPermissionDenied):
    """403 in the API (DRF) and in Django views: the saved object would be outside the user's scope."""


def audit_action(model: type[models.Model], creating: bool) -> str:
    return f"{model._meta.model_name}.{'create' if creating else 'update'}"


def ensure_in_scope(user: Any, instance: models.Model, action: str) -> None:
    """Refuse (OutOfScope) when ``user`` may not ``action`` (add, change) this saved object."""
    if not has_permission(user, type(instance), action, instance):
        what = type(instance)._meta.verbose_name
        raise OutOfScope(
            f"You may not {action} this {what} in this scope: it would be outside the groups you manage."
        )


def save_in_scope(
    user: Any,
    save: Callable[[], M],
    *,
    before: dict[str, Any] | None,
    creating: bool | None = None,
    audit: str = "",
    check: Callable[[M, str], None] | None = None,
) -> M:
    """Save through ``save()`` and return the object. ``before``: the object's snapshot before the change
    (``fleet.audit.redact.snapshot``), None on create; ``creating`` defaults to ``before is None``.
    ``audit`` overrides the action recorded; ``check(obj, action)`` the scope re-check (e.g. a model
    written only with a role on all clusters). ``user`` None: a system write, recorded, not checked."""
    creating = before is None if creating is None else creating
    action = "add" if creating else "change"
    with transaction.atomic():
        instance = save()
        if check is not None:
            check(instance, action)
        elif user is not None:
            ensure_in_scope(user, instance, action)
        record_change(audit or audit_action(type(instance), creating), instance, before)
    return instance
