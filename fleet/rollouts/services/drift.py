"""Drift: compare each (mapping, cluster)'s last applied objects with the live cluster; report changes and,
where the group enables self-heal, apply the last synced objects again. Both are audited."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from clusters.choices import ConnectionMode
from fleet.audit.services import record
from fleet.rollouts import dispatch, ports, tasks
from fleet.rollouts.choices import DriftStatus
from fleet.rollouts.models import SyncedState


def _event(state: SyncedState, action: str, message: str, **after: Any) -> None:
    record(
        action,
        state,
        after={"drift_status": state.drift_status, **after},
        message=message,
        scope=state.mapping.cluster_group,
        cluster=state.cluster,
        repository=state.mapping.repository,
    )


def _describe(objects: list[dict[str, Any]]) -> str:
    parts = []
    for o in objects[:5]:
        ref = o.get("ref") or {}
        fields = ", ".join(f.get("path", "") for f in o.get("fields") or [])
        parts.append(
            f"{ref.get('kind')} {ref.get('name')} {o.get('state')}" + (f" ({fields})" if fields else "")
        )
    return "; ".join(parts)


# States per drift task: check_all queues one task per slice of this many states (ordered by cluster), so a
# pass of N states costs N / DRIFT_BATCH Celery hops and one load query per slice, not one of each per state.
DRIFT_BATCH = 25


def _load(state_ids: Sequence[int]) -> list[SyncedState]:
    """The states with everything a check reads (mapping, group and its allow-list, repository, cluster):
    one query for the whole slice."""
    return list(
        SyncedState.objects.select_related(
            "mapping__cluster_group__allow_list", "mapping__repository", "cluster"
        )
        .filter(pk__in=list(state_ids))
        .order_by("cluster_id", "mapping_id")
    )


def check_drift(state_id: int) -> str:
    """Check one SyncedState; returns its drift status after the check (and a heal, if any)."""
    return check_many([state_id]).get(state_id, "nothing to check")


def check_many(state_ids: Sequence[int]) -> dict[int, str]:
    """Check a slice of SyncedStates (a drift task's share of a pass); returns each one's drift status after
    the check (and a heal, if any). A state that stays in sync, or whose read fails, is stored with the
    others in one bulk update; drift found, cleared or healed is recorded and audited state by state."""
    out: dict[int, str] = {}
    quiet: list[SyncedState] = []  # in sync before and after, or not readable: one UPDATE for the slice
    for state in _load(state_ids):
        out[state.pk] = _check(state, quiet)
    if quiet:
        SyncedState.objects.bulk_update(quiet, ["drift_status", "drift", "drift_checked_at", "drift_error"])
    return out


def _check(state: SyncedState, quiet: list[SyncedState]) -> str:
    if not state.applied:
        return "nothing to check"
    if state.cluster.connection_mode == ConnectionMode.PULL:
        return "pull mode: the cluster's agent checks drift and reports it"
    group = state.mapping.cluster_group
    try:
        report = ports.drift(state.cluster, state.mapping, state.applied)
    except Exception as exc:
        state.drift_status, state.drift_error = DriftStatus.ERROR, f"{type(exc).__name__}: {exc}"[:1000]
        state.drift_checked_at = timezone.now()
        quiet.append(state)
        return str(state.drift_status)
    if not report.drifted and state.drift_status != DriftStatus.DRIFTED:
        # what record_check stores for it, without an event: kept for the bulk update
        state.drift_status = DriftStatus.ERROR if report.errors else DriftStatus.IN_SYNC
        state.drift = []
        state.drift_checked_at, state.drift_error = timezone.now(), "; ".join(report.errors)[:1000]
        quiet.append(state)
        return str(state.drift_status)
    if record_check(state, report) == DriftStatus.IN_SYNC or not group.self_heal:
        return str(state.drift_status)
    outcome = ports.apply(state.cluster, state.mapping, state.applied, state.inventory, prune=False)
    if not outcome.ok:
        record_heal(state, False, outcome.counts, outcome.error)
        return str(state.drift_status)
    record_heal(state, True, outcome.counts)
    return "healed"


def record_check(state: SyncedState, report: ports.DriftOutcome) -> str:
    """Keep a drift check's outcome on the SyncedState and audit it (``drift.detected``, ``drift.cleared``):
    the one recording of both paths, Fleetgate's own check of a push-mode cluster and a pull-mode cluster's
    agent report (services/agentwork.py). Returns the drift status."""
    now = timezone.now()
    previous = state.drift_status
    state.drift_checked_at, state.drift_error = now, "; ".join(report.errors)[:1000]
    if not report.drifted and report.errors:
        # Objects that could not be read (the cluster unreachable, access refused): not drift, and not
        # "in sync" either: the check failed. A drift seen before is not cleared by a check that failed.
        state.drift_status = DriftStatus.ERROR
        state.save(update_fields=["drift_status", "drift_checked_at", "drift_error"])
        return str(state.drift_status)
    if not report.drifted:
        state.drift_status, state.drift = DriftStatus.IN_SYNC, []
        state.save(update_fields=["drift_status", "drift", "drift_checked_at", "drift_error"])
        if previous == DriftStatus.DRIFTED:
            _event(state, "drift.cleared", "the cluster matches Git again")
        return str(state.drift_status)
    same = previous == DriftStatus.DRIFTED and state.drift == report.objects
    state.drift_status, state.drift = DriftStatus.DRIFTED, report.objects
    state.save(update_fields=["drift_status", "drift", "drift_checked_at", "drift_error"])
    if not same:  # a drift that stays as it was is not detected again on every pass
        _event(state, "drift.detected", _describe(report.objects), objects=report.objects)
    return str(state.drift_status)


def record_heal(state: SyncedState, ok: bool, counts: dict[str, Any], error: str = "") -> None:
    """Keep a self-heal's outcome (re-applying the last synced objects) and audit it (``drift.healed``,
    ``drift.heal_failed``), whoever applied them: a worker or the pull-mode cluster's agent."""
    if not ok:
        _event(state, "drift.heal_failed", (error or "the heal failed")[:2000])
        return
    state.drift_status, state.drift, state.healed_at = DriftStatus.IN_SYNC, [], timezone.now()
    state.save(update_fields=["drift_status", "drift", "healed_at"])
    _event(
        state,
        "drift.healed",
        f"re-applied {len(state.applied)} object(s) of {state.commit.sha[:10] if state.commit else '?'}",
        counts=counts,
    )


def check_all() -> int:
    """Queue a drift check for every (mapping, cluster) with applied objects (the beat task): one task per
    slice of DRIFT_BATCH states, ordered by cluster so a cluster's mappings share a slice and its connection.
    Pull-mode clusters are skipped: their agents check drift (and self-heal) and report it."""
    ids = list(
        SyncedState.objects.filter(mapping__enabled=True)
        .exclude(applied=[])
        .exclude(cluster__connection_mode=ConnectionMode.PULL)
        .order_by("cluster_id", "mapping_id")
        .values_list("pk", flat=True)
    )
    for start in range(0, len(ids), DRIFT_BATCH):
        dispatch.send(tasks.check_drift_batch, *ids[start : start + DRIFT_BATCH])
    return len(ids)
