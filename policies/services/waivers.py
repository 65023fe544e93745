"""Waivers: expire one now (audited). Creation goes through the API/admin (validated by Waiver.clean)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from fleet.audit.redact import snapshot
from fleet.audit.services import record_change
from policies.models import Waiver


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
