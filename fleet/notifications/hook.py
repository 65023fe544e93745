"""The one hook: an audit event of a notifiable kind queues a fan-out after its transaction commits
(``fleet.core.dispatch.send`` waits for the commit). Only when some subscription is enabled, so a Fleetgate
nobody subscribed to queues nothing."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save

from fleet.audit.models import AuditEvent
from fleet.core import dispatch
from fleet.notifications import events


def _on_audit_event(sender: Any, instance: AuditEvent, created: bool, **_: Any) -> None:
    if not created or not events.notifiable(instance.action, instance.after):
        return
    from fleet.notifications import tasks
    from fleet.notifications.models import Subscription

    if Subscription.objects.filter(enabled=True).exists():
        dispatch.send(tasks.fan_out, instance.pk)


def install() -> None:
    post_save.connect(_on_audit_event, sender=AuditEvent, dispatch_uid="fleet.notifications.hook")
