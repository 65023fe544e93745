"""The impact preview job's life: its starts, its heartbeat, and what happens to a job that stopped.

A preview job (``policies.run_preview``) runs with ``acks_late`` and ``reject_on_worker_lost``: a worker
killed midway (OOM, SIGKILL) leaves the preview ``running`` and the message is delivered again, and the job
starts over from 0. So:

* :func:`begin` (each start of :func:`policies.services.preview.run`): counts the attempt and writes the
  heartbeat; past ``FLEETGATE_PREVIEW_MAX_ATTEMPTS`` starts the preview fails instead of starting again
  (a job that kills its worker every time would otherwise run forever);
* :func:`beat` (with each progress update): the heartbeat;
* :func:`reap_stalled` (the beat task ``policies.reap_stalled_previews``, every minute): a pending or
  running preview whose heartbeat (or, never started, its creation) is older than
  ``FLEETGATE_PREVIEW_STALE_SECONDS`` fails with "the job stopped: worker lost";
* :func:`fail`: the one audited way a preview fails (``policypreview.fail``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from fleet.audit.services import record
from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from policies.choices import PreviewStatus
from policies.models import PolicyPreview

ACTIVE = (PreviewStatus.PENDING, PreviewStatus.RUNNING)


def max_attempts() -> int:
    return max(1, int(getattr(settings, "FLEETGATE_PREVIEW_MAX_ATTEMPTS", 3)))


def stale_after() -> float:
    return max(0.0, float(getattr(settings, "FLEETGATE_PREVIEW_STALE_SECONDS", 600)))


def fail(preview: PolicyPreview, error: str) -> PolicyPreview:
    """Mark ``preview`` failed with ``error`` (shown to the user), audited as ``policypreview.fail``."""
    preview.status = PreviewStatus.FAILED
    preview.error = error[:2000]
    preview.finished = timezone.now()
    preview.save(update_fields=["status", "error", "finished"])
    record("policypreview.fail", preview, scope=preview.cluster_group, message=preview.error[:200])
    return preview


def begin(preview_id: int) -> PolicyPreview | None:
    """Count a start of the job and write its heartbeat; None when the preview failed instead (too many
    starts: each earlier one stopped without finishing)."""
    with transaction.atomic():
        preview = PolicyPreview.objects.select_for_update().get(pk=preview_id)
        preview.attempts += 1
        if preview.attempts > max_attempts():
            preview.save(update_fields=["attempts"])
            fail(preview, f"the job was started {preview.attempts} times and never finished (each start "
                          "stopped midway, e.g. its worker was killed or ran out of memory); given up after "
                          f"{max_attempts()} attempts (FLEETGATE_PREVIEW_MAX_ATTEMPTS)")
            return None
        preview.status = PreviewStatus.RUNNING
        preview.done = 0
        preview.error = ""
        preview.heartbeat = timezone.now()
        preview.save(update_fields=["attempts", "status", "done", "error", "heartbeat"])
    return preview


def beat(preview_id: int, done: int, total: int) -> None:
    """Progress and heartbeat in one write."""
    PolicyPreview.objects.filter(pk=preview_id).update(done=done, total=total, heartbeat=timezone.now())


def reap_stalled(now: datetime | None = None) -> list[int]:
    """Fail every pending or running preview whose heartbeat (else its creation) is older than
    ``FLEETGATE_PREVIEW_STALE_SECONDS``: its job stopped (worker lost). Each in its own transaction under
    a row lock, re-checked; audited with the scheduler as actor (change context ``task``). Returns the ids."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=stale_after())
    stalled = Q(status__in=ACTIVE, last_sign__lt=cutoff)
    ids = list(
        PolicyPreview.objects.annotate(last_sign=Coalesce(F("heartbeat"), F("created")))
        .filter(stalled)
        .order_by("id")
        .values_list("pk", flat=True)
    )
    reaped: list[int] = []
    with acting(change_context=ChangeContext.TASK):
        for pk in ids:
            with transaction.atomic():
                preview = (
                    PolicyPreview.objects.select_for_update()
                    .annotate(last_sign=Coalesce(F("heartbeat"), F("created")))
                    .filter(stalled, pk=pk)
                    .first()
                )
                if preview is None:  # it moved on meanwhile
                    continue
                seen = preview.heartbeat or preview.created
                fail(preview, f"the job stopped: worker lost (no sign of life since {seen.isoformat()}, "
                              f"{preview.done} of {preview.total} targets replayed, attempt "
                              f"{preview.attempts}); start the preview again")
                reaped.append(pk)
    return reaped


__all__ = ["beat", "begin", "fail", "max_attempts", "reap_stalled", "stale_after"]
