"""Thin Celery tasks: each calls one service."""

from __future__ import annotations

from celery import shared_task

SEAL = "fleet.audit.seal"


@shared_task(name=SEAL)
def seal() -> int:
    """The safety net of sealing (beat, every FLEETGATE_AUDIT_SEAL_INTERVAL seconds): events whose
    on-commit seal failed or was skipped get sealed here."""
    from fleet.audit.sealing import seal as seal_pending

    return seal_pending(wait=True)
