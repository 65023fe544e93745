"""Scheduled enforcement: a binding meant to deny starts as ``dryrun`` for N days, with the impact preview of
the deny attached, and is switched to deny by the periodic task (``policies.enforce_scheduled_bindings``,
run by celery beat every minute). Scheduling, the switch and a cancellation are audited.

* :func:`schedule_enforcement` (called by the binding's API/UI save inside its transaction);
* :func:`switch_due` (the beat task): every binding whose ``enforce_at`` has come, switched in its own
  transaction under a row lock, so two beats never switch one twice;
* :func:`cancel_schedule`: a binding whose enforcement is set by hand keeps what it was given;
  :func:`overridden_schedule` does the same from ``PolicyBinding.save`` itself, so every door (API, Django
  admin, UI, shell, import) that changes the enforcement cancels the switch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from fleet.audit.redact import snapshot
from fleet.audit.services import record_change
from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from fleet.core.errors import DomainError
from policies.models import PolicyBinding

MAX_DRYRUN_DAYS = 90
SCHEDULED_TARGETS = frozenset({"deny", "warn"})


def schedule_enforcement(
    binding: PolicyBinding, *, days: int, enforce_as: str = "deny", now: datetime | None = None
) -> PolicyBinding:
    """Run ``binding`` as dryrun until ``days`` from now, then as ``enforce_as``; start the impact preview
    of ``enforce_as`` (attached to the binding). Call inside the save's transaction; audited
    (``policybinding.schedule``)."""
    from policies.services import preview as pv

    if not 1 <= days <= MAX_DRYRUN_DAYS:
        raise DomainError(f"dryrun_days must be between 1 and {MAX_DRYRUN_DAYS}.", field="dryrun_days")
    if enforce_as not in SCHEDULED_TARGETS:
        raise DomainError("Only deny or warn can be scheduled after a dry run.", field="enforcement")
    before = snapshot(binding)
    proposal = pv.binding_proposal(
        binding,
        policy=binding.policy,
        cluster_group=binding.cluster_group,
        enforcement=enforce_as,
        pinned_version=binding.pinned_version,
    )
    preview = pv.start(None, proposal, binding=binding)
    binding.enforcement = "dryrun"
    binding.enforce_as = enforce_as
    binding.enforce_at = (now or timezone.now()) + timedelta(days=days)
    binding.preview = preview
    binding.save(update_fields=["enforcement", "enforce_as", "enforce_at", "preview", "updated"])
    record_change("policybinding.schedule", binding, before)
    return binding


def cancel_schedule(binding: PolicyBinding) -> None:
    """Forget a scheduled switch (the enforcement was set by hand), audited."""
    if binding.enforce_at is None:
        return
    before = snapshot(binding)
    binding.enforce_at = None
    binding.enforce_as = ""
    binding.save(update_fields=["enforce_at", "enforce_as", "updated"])
    record_change("policybinding.unschedule", binding, before)


def overridden_schedule(binding: PolicyBinding, save_kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Called by ``PolicyBinding.save`` before it writes. When a scheduled binding's enforcement differs from
    the stored one (set by hand, through any door), forget the schedule in the same save and return the
    stored row's snapshot for :func:`record_unschedule`; else None. Saves naming ``enforce_at`` in
    ``update_fields`` (this module's own) are left alone."""
    fields = save_kwargs.get("update_fields")
    if binding._state.adding or binding.pk is None:
        return None
    if fields is not None and ("enforce_at" in fields or "enforcement" not in fields):
        return None
    stored = PolicyBinding.objects.filter(pk=binding.pk).first()
    if stored is None or stored.enforce_at is None or stored.enforcement == binding.enforcement:
        return None
    binding.enforce_at = None
    binding.enforce_as = ""
    if fields is not None:
        save_kwargs["update_fields"] = [*fields, "enforce_at", "enforce_as"]
    return snapshot(stored)


def record_unschedule(binding: PolicyBinding, before: dict[str, Any]) -> None:
    """Audit a schedule cancelled by :func:`overridden_schedule` (``policybinding.unschedule``)."""
    record_change("policybinding.unschedule", binding, before,
                  message=f"scheduled switch of binding {binding.pk} cancelled: enforcement set by hand to "
                  f"{binding.enforcement or 'inherit'}")


def switch_due(now: datetime | None = None) -> list[int]:
    """Switch every binding whose scheduled time has come to its scheduled enforcement; audited as
    ``policybinding.enforce`` (actor: the scheduler). Returns the ids switched."""
    now = now or timezone.now()
    switched: list[int] = []
    due = list(
        PolicyBinding.objects.filter(enforce_at__lte=now)
        .exclude(enforce_as="")
        .order_by("enforce_at", "id")
        .values_list("pk", flat=True)
    )
    with acting(change_context=ChangeContext.TASK):
        for pk in due:
            with transaction.atomic():
                binding = (
                    PolicyBinding.objects.select_for_update()
                    .filter(pk=pk, enforce_at__lte=now)
                    .exclude(enforce_as="")
                    .first()
                )
                if binding is None:  # switched by another beat, or rescheduled
                    continue
                before = snapshot(binding)
                binding.enforcement = binding.enforce_as
                binding.enforce_as = ""
                binding.enforce_at = None
                binding.save(update_fields=["enforcement", "enforce_as", "enforce_at", "updated"])
                record_change("policybinding.enforce", binding, before)
                switched.append(binding.pk)
    return switched


__all__ = [
    "MAX_DRYRUN_DAYS",
    "cancel_schedule",
    "overridden_schedule",
    "record_unschedule",
    "schedule_enforcement",
    "switch_due",
]
