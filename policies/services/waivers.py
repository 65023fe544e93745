"""Waivers: create or change one (`save_waiver`, the one path for API and UI), expire one now (audited).
Validated by Waiver.clean."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from fleet.access.restrict import has_permission
from fleet.access.writes import OutOfScope, save_in_scope
from fleet.audit.redact import snapshot
from fleet.audit.services import record_change
from policies.models import Waiver


def authored_by(user: Any) -> dict[str, Any]:
    """The author fields of a new waiver written by ``user``."""
    return {"author": user, "author_name": user.get_username()[:150]}


def save_waiver(user: Any, save: Callable[[], Waiver], *, before: dict[str, Any] | None = None) -> Waiver:
    """Create (``before`` None) or change a waiver through ``save()`` (a serializer's or form's save; a new
    waiver carries `authored_by(user)`): the saved waiver must be within the user's scope, and the change
    is audited (``waiver.create`` / ``waiver.update``), in one transaction (fleet/access/writes.py)."""

    def check(waiver: Waiver, action: str) -> None:
        if not has_permission(user, Waiver, action, waiver):
            raise OutOfScope("You may not waive policies in that scope.")

    return save_in_scope(user, save, before=before, check=check)


def expire_waiver(waiver: Waiver) -> Waiver:
    """End a waiver now; it stops applying to the next evaluation."""
    with transaction.atomic():
        before = snapshot(waiver)
        now = timezone.now()
        if waiver.expires_at > now:
            waiver.expires_at = now
            waiver.save(update_fields=["expires_at", "updated"])
        record_change("waiver.expire", waiver, before)
    return waiver
