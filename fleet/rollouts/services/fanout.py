"""The coordinator: which clusters to sync next, in batches, within sync windows, halting on failures.

``advance(rollout_id)`` is called after every change that may let the rollout move (queued, a leg
finished, resumed, a window opened, a batch pause ended). It runs under the rollout's row lock, reads
only counts, and dispatches at most ``max_parallel`` legs at a time. It is idempotent: calling it twice
does nothing the first call did not. A leg's end calls ``advance_coalesced``, which does not queue
behind another advance of the same rollout (see there). A mapping's fleet.yaml ``rolloutStrategy`` sets
the halt threshold, parallelism and each batch's own limit of its rollouts (``services/strategy.py``)."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count
from django.utils import timezone

from clusters.choices import ConnectionMode
from clusters.windows import sync_allowed
from fleet.audit.services import batched
from fleet.core.bulk import update_rows
from fleet.rollouts import dispatch, doorbell, tasks
from fleet.rollouts.choices import FINAL_SYNC_STATES, UNSTARTED_SYNC_STATES, RolloutState, SyncState
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.rollouts.services import dependencies, strategy
from fleet.rollouts.services.common import (
    atomic,
    lease_from_now,
    locked_rollout,
    locked_rollout_unless_busy,
    note,
    sync_event,
    transition,
)
from fleet.sources.render.fleetrollout import batch_slots, unavailable_partitions

ACTIVE = (RolloutState.QUEUED, RolloutState.SYNCING)
BUSY = "advancing elsewhere"

log = logging.getLogger(__name__)


def _again_key(rollout_id: int) -> str:
    return f"rollout-advance-again:{rollout_id}"


def advance_coalesced(rollout_id: int, *, keep: list[int] | None = None) -> str:
    """``advance`` after a leg's end, without queueing behind another advance of the same rollout.

    A thousand legs ending at once would each wait for the rollout's row lock to recount what the one
    before them counted. Instead a caller first raises the rollout's "again" flag (the shared cache), then
    tries the lock without waiting (``SKIP LOCKED``). If it gets the lock it clears the flag before
    counting and advances. If not, the holder will see the flag: a holder looks at the flag after its
    transaction commits and advances once more when it is raised. The flag was raised before the failed
    attempt, which was made while the holder held the lock, so the holder's look comes after it: no
    leg's end is missed. (SQLite has no row locks: every call advances, serialised by its write lock.)
    Without a cache (an error), the call waits for the lock as ``advance`` does."""
    key = _again_key(rollout_id)
    try:
        cache.set(key, 1, timeout=600)
    except Exception:  # no shared flag: wait for the lock instead
        log.warning("rollout %s: cannot raise the advance flag; advancing under the lock", rollout_id,
                    exc_info=True)
        return _advance(rollout_id, keep=keep)
    while True:
        state = _advance(rollout_id, skip_locked=True, keep=keep)
        if state == BUSY:
            return state
        try:
            if not cache.get(key):
                return state
        except Exception:
            return _advance(rollout_id, keep=keep)


def advance(rollout_id: int, *, keep: list[int] | None = None) -> str:
    """Move the rollout on (see the module's docstring), waiting for the rollout's lock. A leg's end that
    found the lock taken meanwhile raised the "again" flag and left it to the holder (``advance_coalesced``):
    after committing, this looks at the flag and advances once more when it is raised, as every holder
    does."""
    state = _advance(rollout_id, keep=keep)
    try:
        again = cache.get(_again_key(rollout_id))
    except Exception:
        return state
    return advance_coalesced(rollout_id, keep=keep) if again else state


def _advance(rollout_id: int, *, skip_locked: bool = False, keep: list[int] | None = None) -> str:
    """One advance under the rollout's lock. ``skip_locked``: do nothing and answer ``BUSY`` when another
    transaction holds the lock (``advance_coalesced``).

    The push legs it queues go out as slices, a task per FLEETGATE_SYNC_SLICE legs (``sync.run_slice``).
    ``keep``: an empty list from a slice task that goes on working: the first slice queued is put there for
    the caller to sync itself instead of being sent through the broker (its legs are queued and leased like
    the others, so if the caller dies, reconcile sends them again). The audit events of the queued legs are
    one INSERT (``audit.batched``)."""
    with atomic(), batched():
        if skip_locked:
            found = locked_rollout_unless_busy(rollout_id)
            if found is None:
                return BUSY
            rollout = found
        else:
            rollout = locked_rollout(rollout_id)
        try:
            cache.delete(_again_key(rollout_id))  # counted below, after this: what raised it is seen
        except Exception:
            log.warning("rollout %s: cannot clear the advance flag", rollout_id, exc_info=True)
        if rollout.state not in ACTIVE or rollout.paused:
            return str(rollout.state)
        group = rollout.mapping.cluster_group
        now = timezone.now()
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        totals: dict[str, int] = defaultdict(int)
        # order_by(): the model's ordering (cluster__name) would join the clusters to a grouped count.
        for row in (
            ClusterSync.objects.filter(rollout=rollout).order_by().values("batch", "state")
            .annotate(n=Count("id"))
        ):
            counts[row["batch"]][row["state"]] = row["n"]
            totals[row["state"]] += row["n"]
        failed = totals[SyncState.FAILED]
        limits = strategy.limits(rollout)
        if failed > limits.failure_threshold:
            if limits.max_unavailable is not None:
                why = (f"{failed} cluster(s) failed, as many as the fleet.yaml rolloutStrategy "
                       f"maxUnavailable of {limits.max_unavailable} ({limits.source}) lets be unavailable")
            else:
                why = (f"{failed} cluster(s) failed, more than the group's failure threshold of "
                       f"{limits.failure_threshold}")
            return _halt(rollout, why)
        unfinished = sorted(
            b for b, states in counts.items() if any(s not in FINAL_SYNC_STATES for s in states)
        )
        if not unfinished:
            synced = totals[SyncState.SYNCED]
            left = totals[SyncState.SUPERSEDED]
            unmatched = len((rollout.strategy or {}).get("unmatched") or [])
            outside = f", {unmatched} in no fleet.yaml partition (not rolled out)" if unmatched else ""
            if left and rollout.superseded_by_id:
                transition(
                    rollout,
                    RolloutState.SUPERSEDED,
                    f"{synced} cluster(s) synced, {failed} failed, "
                    f"{left} left to rollout {rollout.superseded_by_id}",
                )
            elif failed:
                transition(
                    rollout, RolloutState.FAILED, f"{synced} cluster(s) synced, {failed} failed{outside}"
                )
            else:
                held = totals[SyncState.BLOCKED]
                transition(
                    rollout,
                    RolloutState.SYNCED,
                    f"{synced} cluster(s) synced" + (f", {held} blocked by policy" if held else "") + outside,
                )
            return str(rollout.state)
        batch = unfinished[0]
        in_flight = totals[SyncState.QUEUED] + totals[SyncState.SYNCING]
        unstarted_here = sum(counts[batch].get(s, 0) for s in UNSTARTED_SYNC_STATES)
        if not unstarted_here:
            return str(rollout.state)  # the batch's legs are all dispatched; their ends call advance again
        if batch != rollout.current_batch and not any(
            counts[batch].get(s)
            for s in (SyncState.QUEUED, SyncState.SYNCING, SyncState.SYNCED, SyncState.FAILED)
        ):
            # A new batch: wait for the pause between batches (if any) first.
            if in_flight:
                return str(rollout.state)
            over = unavailable_partitions({b: counts[b].get(SyncState.FAILED, 0) for b in counts},
                                          limits.batch_max, batch, limits.max_unavailable_partitions)
            if over:
                names = ", ".join(f"{limits.batch_names.get(b) or b + 1} "
                                  f"({counts[b].get(SyncState.FAILED, 0)} failed, maxUnavailable "
                                  f"{limits.batch_max[b]})" for b in over)
                return _halt(rollout, f"batch {batch + 1} does not start: {len(over)} partition(s) of "
                                      f"{limits.source} have more failed clusters than their maxUnavailable, "
                                      "more than maxUnavailablePartitions "
                                      f"{limits.max_unavailable_partitions} allows: {names}")
            if group.batch_pause_seconds and rollout.next_batch_at is None:
                rollout.next_batch_at = now + timedelta(seconds=group.batch_pause_seconds)
                rollout.save(update_fields=["next_batch_at", "updated"])
                note(
                    rollout,
                    "rollout.batch_pause",
                    f"batch {batch + 1} starts after a {group.batch_pause_seconds}s pause",
                )
                dispatch.send(tasks.advance, rollout.pk, countdown=group.batch_pause_seconds)
                return str(rollout.state)
            if rollout.next_batch_at and rollout.next_batch_at > now:
                return str(rollout.state)
            rollout.current_batch = batch
            rollout.next_batch_at = None
            rollout.save(update_fields=["current_batch", "next_batch_at", "updated"])
            note(rollout, "rollout.batch_started", f"batch {batch + 1} of {rollout.batch_count}", batch=batch)
        allowed, until = sync_allowed(group.sync_windows or [], now)
        if not allowed:
            if rollout.wait_until != until:
                rollout.wait_until = until
                rollout.reason = (
                    f"outside the group's sync windows until {until.isoformat() if until else '?'}"
                )
                rollout.save(update_fields=["wait_until", "reason", "updated"])
                note(
                    rollout,
                    "rollout.waiting",
                    rollout.reason,
                    wait_until=until.isoformat() if until else None,
                )
            if until is not None:
                dispatch.send(tasks.advance, rollout.pk, countdown=(until - now).total_seconds() + 1)
            return str(rollout.state)
        if rollout.wait_until is not None:
            rollout.wait_until = None
            rollout.save(update_fields=["wait_until", "updated"])
            note(rollout, "rollout.window_open", "inside the group's sync windows again")
        slots = limits.max_parallel - in_flight
        if limits.max_unavailable is not None:  # Fleet: failed and updating clusters share the limit
            slots = min(slots, limits.max_unavailable - failed - in_flight)
        if batch in limits.batch_max:  # and inside a partition, its own limit of legs updating at once
            here = counts[batch].get(SyncState.QUEUED, 0) + counts[batch].get(SyncState.SYNCING, 0)
            slots = min(slots, batch_slots(limits.batch_max[batch], here))
        if slots <= 0:
            return str(rollout.state)
        picked = _ready_legs(rollout, batch, slots, counts[batch].get(SyncState.WAITING, 0))
        lease = lease_from_now()
        for cs in picked:
            cs.state = SyncState.QUEUED
            cs.queued_at = now
            cs.lease_until = lease
            cs.task_id = uuid.uuid4().hex
        update_rows(picked, ["state", "queued_at", "lease_until", "task_id"], group=False)
        if rollout.state == RolloutState.QUEUED:
            started = f"batch {batch + 1} of {rollout.batch_count} started"
            if rollout.reason.startswith(dependencies.WAITING):
                started += f"; {rollout.reason}"
            transition(rollout, RolloutState.SYNCING, started[:2000])
        push: list[int] = []
        for cs in picked:
            cs.rollout = rollout
            if cs.cluster.connection_mode == ConnectionMode.PULL:
                # No task: the cluster's agent claims the leg when it polls (services/agentwork.py); its
                # waiting poll is woken once this transaction commits.
                sync_event(cs, "sync.queued", f"batch {batch + 1}; for the cluster's agent", batch=batch)
                doorbell.ring(cs.cluster_id)
                continue
            sync_event(cs, "sync.queued", f"batch {batch + 1}", batch=batch)
            push.append(cs.pk)
        for ids in slices(push):
            if keep is not None and not keep:
                keep.extend(ids)  # the calling slice task syncs these next
                continue
            dispatch.send(tasks.sync_slice, *ids)
        return str(rollout.state)


def slice_size() -> int:
    """Legs per sync task (FLEETGATE_SYNC_SLICE)."""
    return max(1, int(settings.FLEETGATE_SYNC_SLICE))


def slices(ids: list[int], size: int | None = None) -> list[list[int]]:
    """``ids`` in slices of at most ``size`` (default FLEETGATE_SYNC_SLICE) legs, as even as can be (10 legs
    at 8 a slice: 5 and 5, not 8 and 2), so each task's legs take about as long."""
    if not ids:
        return []
    count = -(-len(ids) // (size or slice_size()))
    size, extra = divmod(len(ids), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(ids[start:end])
        start = end
    return out


def _halt(rollout: Rollout, why: str) -> str:
    """Halt (caller holds the lock) with ``why`` and the first failed clusters' errors."""
    names = list(
        ClusterSync.objects.filter(rollout=rollout, state=SyncState.FAILED)
        .order_by("finished_at")
        .values_list("cluster__name", "error")[:5]
    )
    detail = "; ".join(f"{n}: {e[:200]}" for n, e in names)
    transition(rollout, RolloutState.HALTED, f"{why}: {detail}"[:2000])
    return str(rollout.state)


# The big JSON columns a leg carries (the objects to apply, the plan, the gate's answer): not needed to
# decide which legs go next; the sync task reads its leg again.
_HEAVY = ("desired", "plan", "evaluation", "results", "health_detail")


def _ready_legs(rollout: Rollout, batch: int, slots: int, waiting_now: int = 0) -> list[ClusterSync]:
    """Up to ``slots`` legs of ``batch`` to dispatch now. Where the mapping depends on others, a leg whose
    dependencies are not ready on its cluster waits (state ``waiting``, with the reasons) and a waiting
    leg whose dependencies became ready (or were removed) goes on; the rollout's reason says what waits on
    what. ``waiting_now``: how many legs of the batch wait now."""
    legs = ClusterSync.objects.select_related("cluster").filter(rollout=rollout, batch=batch)
    known = dependencies.dependencies_of(rollout.mapping)
    if not known[0] and not known[1] and not waiting_now:
        return list(legs.filter(state=SyncState.PENDING).order_by("cluster__name").defer(*_HEAVY)[:slots])
    unstarted = list(
        legs.filter(state__in=UNSTARTED_SYNC_STATES).order_by("cluster__name").defer(*_HEAVY)
    )
    found = dependencies.waits(rollout.mapping, [cs.cluster_id for cs in unstarted], known)
    ready: list[ClusterSync] = []
    changed: list[ClusterSync] = []
    waiting: list[str] = []
    for cs in unstarted:
        cs.rollout = rollout
        here = found.get(cs.cluster_id) or []
        if here:
            waiting_for = [w.to_dict() for w in here]
            message = dependencies.describe(here, cs.cluster.name)
            waiting.append(message.removeprefix(dependencies.WAITING))
            if cs.state != SyncState.WAITING or cs.waiting_for != waiting_for:
                cs.state, cs.waiting_for = SyncState.WAITING, waiting_for
                changed.append(cs)
                sync_event(cs, "sync.waiting", message[:2000], waiting_for=waiting_for)
            continue
        if cs.state == SyncState.WAITING:
            cs.state, cs.waiting_for = SyncState.PENDING, []
            changed.append(cs)
            sync_event(cs, "sync.dependencies_ready", "what it depends on is synced and healthy here")
        ready.append(cs)
    if changed:
        ClusterSync.objects.bulk_update(changed, ["state", "waiting_for"], batch_size=500)
    reason = (dependencies.WAITING + "; ".join(waiting))[:2000] if waiting else ""
    if reason and rollout.reason != reason:
        rollout.reason = reason
        rollout.save(update_fields=["reason", "updated"])
    elif not reason and dependencies.WAITING in rollout.reason:
        rollout.reason = "dependencies ready"
        rollout.save(update_fields=["reason", "updated"])
    return ready[:slots]
