"""Thin Celery tasks over the policy services.

The gate itself runs inside the rollout's prepare task (``fleet.rollouts.ports``) and policy sources are
synced by the fetch (``fleet.sources.services.fetch``). Here: the impact preview job (queued with
``fleet.core.dispatch.send(run_preview, preview.pk)``) and the periodic switch of scheduled enforcement
(celery beat, ``CELERY_BEAT_SCHEDULE["policies-enforce-scheduled"]``), and the reaper of preview jobs that
stopped midway (``CELERY_BEAT_SCHEDULE["policies-reap-previews"]``, policies/services/preview_jobs.py)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from policies.services import preview, preview_jobs, scheduling

RUN_PREVIEW = "policies.run_preview"
ENFORCE_SCHEDULED = "policies.enforce_scheduled_bindings"
REAP_PREVIEWS = "policies.reap_stalled_previews"


# soft_time_limit: the job fails with a clear reason instead of running without end (preview.run)
@shared_task(name=RUN_PREVIEW, soft_time_limit=settings.FLEETGATE_PREVIEW_TIME_LIMIT or None)
def run_preview(preview_id: int) -> str:
    return str(preview.run(preview_id).status)


@shared_task(name=REAP_PREVIEWS)
def reap_stalled_previews() -> list[int]:
    return preview_jobs.reap_stalled()


@shared_task(name=ENFORCE_SCHEDULED)
def enforce_scheduled_bindings() -> list[int]:
    return scheduling.switch_due()
