"""One leg of a rollout on one cluster: claim it, apply (ordered server-side apply, prune), wait for
health, and record the outcome exactly once.

Safety against lost or duplicated tasks: a worker claims a leg under its row lock (state queued, or
syncing with an expired lease) and numbers its attempt; while it works a heartbeat extends the lease;
it records the outcome only if the leg is still syncing under its attempt number. A killed worker's leg
is taken over by another worker once its lease expires (``reconcile``), and a duplicate task finds the
leg owned or finished and does nothing."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from clusters.connector.errors import describe, is_retriable
from fleet.observability import metrics
from fleet.rollouts import dispatch, doorbell, ports, tasks
from fleet.rollouts.choices import Decision, DriftStatus, RolloutState, SyncState
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState
from fleet.rollouts.services import dependencies, rereview
from fleet.rollouts.services.common import (
    atomic,
    current_rollout,
    lease_from_now,
    lease_seconds,
    locked_rollout,
    max_attempts,
    retry_delay,
    sync_event,
)

log = logging.getLogger(__name__)


def _claim(cs_id: int, *, agent: bool = False) -> tuple[ClusterSync | None, str]:
    """Claim a leg under its row lock: number the attempt and take the lease, or say why not. The one
    claim of both paths: a push worker's task (``agent=False``) and a pull-mode cluster's agent poll
    (``agent=True``, services/agentwork.py). Each path claims only its own clusters' legs, so a stray task
    for a pull-mode leg does nothing."""
    with atomic():
        cs = ClusterSync.objects.select_for_update(of=("self",)).select_related("cluster").filter(
            pk=cs_id).first()
        if cs is None:
            return None, "gone"
        rollout = current_rollout(cs.rollout_id)
        cs.rollout = rollout
        if ports.is_pull(cs.cluster) != agent:
            return None, ("a pull-mode cluster: its agent claims the leg" if not agent
                          else "a push-mode cluster: a worker syncs it")
        now = timezone.now()
        if cs.state == SyncState.SYNCING and cs.lease_until and cs.lease_until > now:
            return None, "owned by another worker"
        if cs.state not in (SyncState.QUEUED, SyncState.SYNCING):
            return None, f"already {cs.state}"
        if cs.retry_at and cs.retry_at > now + timedelta(seconds=1) and cs.state == SyncState.QUEUED:
            return None, "not yet time to retry"
        if rollout.state in (RolloutState.CANCELLED, RolloutState.SUPERSEDED):
            cs.state = (
                SyncState.CANCELLED if rollout.state == RolloutState.CANCELLED else SyncState.SUPERSEDED
            )
            cs.finished_at = now
            cs.save(update_fields=["state", "finished_at"])
            sync_event(cs, f"sync.{cs.state}", f"the rollout is {rollout.state}")
            return None, str(cs.state)
        if rollout.paused or rollout.state != RolloutState.SYNCING:
            cs.state = SyncState.PENDING
            cs.lease_until = None
            cs.save(update_fields=["state", "lease_until"])
            sync_event(cs, "sync.deferred", f"the rollout is {'paused' if rollout.paused else rollout.state}")
            return None, "deferred"
        took_over = cs.state == SyncState.SYNCING
        if not took_over:
            # Checked again here, not only when the leg was queued: a dependency may have moved since.
            waits = dependencies.waits(rollout.mapping, [cs.cluster_id]).get(cs.cluster_id)
            if waits:
                cs.state, cs.lease_until = SyncState.WAITING, None
                cs.waiting_for = [w.to_dict() for w in waits]
                cs.save(update_fields=["state", "lease_until", "waiting_for"])
                sync_event(cs, "sync.waiting", dependencies.describe(waits, cs.cluster.name)[:2000],
                           waiting_for=cs.waiting_for)
                dispatch.send(tasks.advance, rollout.pk)  # its slot is free for another leg
                return None, "waiting for dependencies"
        cs.state = SyncState.SYNCING
        cs.attempts += 1
        cs.started_at = cs.started_at or now
        cs.lease_until = lease_from_now()
        cs.retry_at = None
        cs.save(update_fields=["state", "attempts", "started_at", "lease_until", "retry_at"])
        sync_event(
            cs,
            "sync.started",
            f"attempt {cs.attempts}"
            + (f" (taken over from {'an agent' if agent else 'a worker'} that stopped)" if took_over else "")
            + (" claimed by the cluster's agent" if agent else ""),
            attempt=cs.attempts,
        )
        return cs, "claimed"


class _Heartbeat(threading.Thread):
    """Extends the leg's lease while the work runs (own database connection)."""

    def __init__(self, cs_id: int, attempt: int) -> None:
        super().__init__(daemon=True, name=f"lease-{cs_id}")
        self.cs_id, self.attempt = cs_id, attempt
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = lease_seconds() / 3
        try:
            while not self.stopped.wait(interval):
                ClusterSync.objects.filter(
                    pk=self.cs_id, state=SyncState.SYNCING, attempts=self.attempt
                ).update(lease_until=lease_from_now())
        except Exception:  # the finish step decides; a missed heartbeat only risks a harmless takeover
            log.warning("heartbeat of cluster sync %s failed", self.cs_id, exc_info=True)
        finally:
            close_old_connections()

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=5)


def run_cluster_sync(cs_id: int) -> str:
    """Sync one leg; returns what happened (for logs and tests)."""
    cs, why = _claim(cs_id)
    if cs is None:
        return why
    started = time.monotonic()
    rollout = cs.rollout
    mapping, group = rollout.mapping, rollout.mapping.cluster_group
    attempt = cs.attempts
    heartbeat = _Heartbeat(cs.pk, attempt)
    heartbeat.start()
    outcome: ports.ApplyOutcome | None = None
    health: ports.HealthOutcome | None = None
    error, transient, blocked = "", False, False
    try:
        inventory = previous_inventory(cs)
        blocked = rereview_blocks(cs, inventory)
        if not blocked:
            outcome = ports.apply(cs.cluster, mapping, cs.desired, inventory, prune=group.prune,
                                  wave_timeout=float(group.health_timeout_seconds))
        if outcome is None:
            pass  # blocked by a new review: nothing applied
        elif not outcome.ok:
            error, transient = outcome.error or "apply failed", outcome.transient
        else:
            # hooks ran to their end inside the apply (and may be deleted by their policy): not waited for
            refs = [r["ref"] for r in outcome.results
                    if r.get("action") not in ("deleted", "failed", "skipped") and not _hook(r)]
            health = ports.wait_healthy(cs.cluster, refs, timeout=float(group.health_timeout_seconds))
            if not health.healthy:
                error = f"not healthy: {health.reason or health.state}"
    except Exception as exc:
        secrets = ports.credentials(cs.cluster).secrets()
        error = describe(exc, cs.cluster.api_url, secrets).message[:2000] or type(exc).__name__
        transient = is_retriable(exc)
    finally:
        heartbeat.stop()
    if blocked:  # the leg is recorded as blocked (or owned by a newer attempt): nothing to finish
        advance_rollout(rollout.pk)
        return "blocked"
    result = _finish(cs.pk, attempt, outcome, health, error, transient, rollout=rollout)
    metrics.cluster_sync(result if result in _COUNTED_RESULTS else "lost", time.monotonic() - started)
    conclude(rollout.pk, mapping, cs.cluster_id, result)
    return result


def previous_inventory(cs: ClusterSync) -> list[dict[str, Any]]:
    """What the last sync of the leg's mapping left on its cluster (for prune)."""
    state = SyncedState.objects.filter(mapping=cs.rollout.mapping, cluster=cs.cluster_id).first()
    return list(state.inventory) if state else []


def rereview_blocks(cs: ClusterSync, inventory: list[dict[str, Any]]) -> bool:
    """A claimed leg reviewed against a live state: does the review still hold? (services/rereview.py). If
    the live state changed, the gate reviews the leg again and a blocking decision blocks it (recorded);
    returns whether nothing may be applied. For a pull-mode cluster the live state is its agent's last
    report."""
    rollout = cs.rollout
    before = (cs.evaluation or {}).get("reviewed")
    if not isinstance(before, dict):
        return False
    live = ports.live_state(cs.cluster, rollout.mapping, cs.desired, inventory,
                            rollout.mapping.cluster_group.prune)
    changed = rereview.changes(before, live)
    if not changed:
        return False
    again = rereview.review_again(rollout, cs, live)
    return _record_rereview(cs.pk, cs.attempts, again, changed)


def conclude(rollout_id: int, mapping: Any, cluster_id: int, result: str) -> None:
    """After a leg's outcome is recorded (by a worker or from an agent's result): move the rollout on at
    once (no broker round trip; if this process dies here, reconcile does it), and wake legs of other
    mappings waiting for this one on this cluster (the periodic reconcile is the safety net)."""
    from fleet.rollouts.services.fanout import advance_coalesced

    advance_coalesced(rollout_id)
    if result in ("synced", "failed"):
        dependencies.wake_dependents(mapping, cluster_id)


def _hook(result: dict[str, Any]) -> bool:
    return bool((result.get("step") or {}).get("hook"))


def advance_rollout(rollout_id: int) -> None:
    from fleet.rollouts.services.fanout import advance_coalesced

    advance_coalesced(rollout_id)


def _record_rereview(cs_id: int, attempt: int, result: ports.PolicyResult, changed: list[str]) -> bool:
    """Keep the gate's new decision for the leg (reviewed again because its live state changed since
    review) and audit it; a blocking decision blocks the leg. Returns whether it blocked."""
    blocked = result.outcome in (Decision.BLOCKED, "cannot_review")
    with atomic():
        rollout_id = ClusterSync.objects.filter(pk=cs_id).values_list("rollout_id", flat=True).get()
        rollout = locked_rollout(rollout_id)
        cs = ClusterSync.objects.select_for_update(of=("self",)).select_related("cluster").get(pk=cs_id)
        cs.rollout = rollout
        if cs.state != SyncState.SYNCING or cs.attempts != attempt:
            return True  # another attempt owns the leg now: apply nothing here
        reason = f"{rereview.REASON}: " + "; ".join(changed[:10])
        if len(changed) > 10:
            reason += f"; and {len(changed) - 10} more"
        cs.evaluation = {**result.summary, "rereviewed": reason[:2000]}
        cs.decision = Decision.BLOCKED if blocked else result.outcome
        fields = ["evaluation", "decision"]
        if blocked:
            cs.state, cs.finished_at, cs.lease_until = SyncState.BLOCKED, timezone.now(), None
            cs.error = f"blocked by policy after a new review ({reason})"[:2000]
            fields += ["state", "finished_at", "lease_until", "error"]
            if rollout.decision != Decision.BLOCKED:
                rollout.decision = Decision.BLOCKED
                rollout.save(update_fields=["decision", "updated"])
        cs.save(update_fields=fields)
        sync_event(
            cs,
            "sync.rereviewed",
            f"{reason[:1500]}; the gate decided {cs.decision}" + ("; nothing was applied" if blocked else ""),
            reason=rereview.REASON,
            changes=changed[:50],
            decision=cs.decision,
            evaluation=result.summary.get("evaluation_id"),
        )
    return blocked


# What _finish answers, as the result label of fleetgate_cluster_syncs (anything else: the lease was lost).
_COUNTED_RESULTS = frozenset({"synced", "retrying", "failed"})

# What the finish step writes (not the stored desired objects, plan or evaluation: big JSON, unchanged).
_FINISH_FIELDS = [
    "state",
    "error",
    "finished_at",
    "lease_until",
    "retry_at",
    "results",
    "counts",
    "health",
    "health_detail",
]


def _finish(
    cs_id: int,
    attempt: int,
    outcome: ports.ApplyOutcome | None,
    health: ports.HealthOutcome | None,
    error: str,
    transient: bool,
    *,
    rollout: Rollout | None = None,
) -> str:
    """Record a leg's outcome if the leg is still syncing under ``attempt``. ``rollout``: the leg's rollout as
    its claim read it (the push path); its mapping and commit do not change, and the one thing read of it
    that may have changed since, its state, is read again where it counts (a retry). Without it (the pull
    path), the rollout is read here."""
    with atomic():
        cs = ClusterSync.objects.select_for_update(of=("self",)).select_related("cluster").get(pk=cs_id)
        if cs.state != SyncState.SYNCING or cs.attempts != attempt:
            return "lost the lease; another attempt owns the outcome"
        if rollout is None or rollout.pk != cs.rollout_id:
            rollout = current_rollout(cs.rollout_id)
            rollout_state = rollout.state
        else:
            rollout_state = None  # read below only if a retry depends on it
        cs.rollout = rollout
        now = timezone.now()
        if outcome is not None:
            cs.results = outcome.results
            cs.counts = outcome.counts
            _remember(rollout, cs, outcome, health, ok=not error)
        if health is not None:
            cs.health = health.state
            cs.health_detail = health.detail
        if not error:
            cs.state, cs.error, cs.finished_at, cs.lease_until = SyncState.SYNCED, "", now, None
            cs.save(update_fields=_FINISH_FIELDS)
            sync_event(cs, "sync.succeeded", _summary(cs.counts), counts=cs.counts, health=cs.health)
            return "synced"
        if transient and attempt < max_attempts() and rollout_state is None:
            rollout_state = Rollout.objects.filter(pk=rollout.pk).values_list("state", flat=True).get()
        if transient and attempt < max_attempts() and rollout_state == RolloutState.SYNCING:
            delay = retry_delay(attempt)
            cs.state, cs.error = SyncState.QUEUED, error
            cs.retry_at = now + timedelta(seconds=delay)
            cs.lease_until = lease_from_now(delay)
            cs.save(update_fields=_FINISH_FIELDS)
            sync_event(cs, "sync.retrying", f"attempt {attempt} failed, retry in {delay:g}s: {error}"[:2000])
            if ports.is_pull(cs.cluster):
                doorbell.ring(cs.cluster_id)  # the agent's next poll after retry_at claims it again
            else:
                dispatch.send(tasks.sync_cluster, cs.pk, countdown=delay, task_id=cs.task_id)
            return "retrying"
        cs.state, cs.error, cs.finished_at, cs.lease_until = SyncState.FAILED, error, now, None
        cs.save(update_fields=_FINISH_FIELDS)
        sync_event(cs, "sync.failed", error[:2000], counts=cs.counts)
        return "failed"


def _summary(counts: dict[str, Any]) -> str:
    return ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing to apply"


# What a successful sync writes to its synced state (the other columns are the drift checks' and the agent's).
_REMEMBERED = ["commit", "rollout", "inventory", "applied", "health", "synced_at", "drift_status", "drift"]


def _remember(rollout: Any, cs: ClusterSync, outcome: ports.ApplyOutcome, health: Any, ok: bool) -> None:
    """Keep what is on the cluster: after a success the commit and objects; after a failure at least the
    inventory, so a later sync can prune what this one created.

    A success writes its row with one upsert (INSERT ... ON CONFLICT (mapping, cluster) DO UPDATE), which
    locks the row as the select-for-update did; the row's other columns (drift check times, pull-mode live
    state) are left as they are. Was a locked read, a savepoint, an insert and an update (5 queries) on a
    first sync, 2 on later ones (issue 19)."""
    if ok:
        SyncedState.objects.bulk_create(
            [
                SyncedState(
                    mapping=rollout.mapping,
                    cluster=cs.cluster,
                    commit=rollout.commit,
                    rollout=rollout,
                    inventory=outcome.inventory,
                    applied=outcome.applied,
                    health=health.state if health else "",
                    synced_at=timezone.now(),
                    drift_status=DriftStatus.IN_SYNC,
                    drift=[],
                )
            ],
            update_conflicts=True,
            unique_fields=["mapping", "cluster"],
            update_fields=_REMEMBERED,
        )
        return
    state, _ = SyncedState.objects.select_for_update().get_or_create(
        mapping=rollout.mapping, cluster=cs.cluster
    )
    known = {tuple(sorted(r.items())) for r in state.inventory}
    state.inventory = state.inventory + [
        r for r in outcome.inventory if tuple(sorted(r.items())) not in known
    ]
    state.save()
