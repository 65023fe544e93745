"""Thin Celery tasks over the policy services.

The gate itself runs inside the rollout's prepare task (``fleet.rollouts.ports``) and policy sources are
synced by the fetch (``fleet.sources.services.fetch``). Here: the impact preview job (queued with
``fleet.core.dispatch.send(run_preview, preview.pk)``) and the periodic switch of scheduled enforcement
(celery beat, ``CELERY_BEAT_SCHEDULE["policies-enforce-scheduled"]``)."""

from __future__ import annotations

from celery import shared_task

from policies.services import preview, scheduling

RUN_PREVIEW = "policies.run_preview"
ENFORCE_SCHEDULED = "policies.enforce_scheduled_bindings"


@shared_task(name=RUN_PREVIEW)
def run_preview(preview_id: int) -> str:
    return str(preview.run(preview_id).status)


@shared_task(name=ENFORCE_SCHEDULED)
def enforce_scheduled_bindings() -> list[int]:
    return scheduling.switch_due()
