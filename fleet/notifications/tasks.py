"""Thin Celery tasks: each calls one service (fleet/notifications/services.py)."""

from __future__ import annotations

from celery import shared_task

FAN_OUT = "fleet.notifications.fan_out"
DELIVER = "fleet.notifications.deliver"
SCAN = "fleet.notifications.scan"


@shared_task(name=FAN_OUT)
def fan_out(audit_event_id: int) -> int:
    from fleet.notifications import services

    return services.fan_out(audit_event_id)


@shared_task(name=DELIVER)
def deliver(delivery_id: int) -> str:
    from fleet.notifications import services

    return services.deliver(delivery_id)


@shared_task(name=SCAN)
def scan() -> dict[str, int]:
    from fleet.notifications import services

    return services.scan()
