"""The legs of a rollout on their clusters: claim them, apply (ordered server-side apply, prune), wait for
health, and record each outcome exactly once.

A task syncs a slice of a rollout's legs (``run_slice``, FLEETGATE_SYNC_SLICE legs): one claim, one finish
and one advance for the slice, the clusters' work in parallel threads (issue 19). A retry or a redispatch
syncs one leg the same way (``run_cluster_sync``).

Safety against lost or duplicated tasks: a worker claims a leg under its row lock (state queued, or
syncing with an expired lease) and numbers its attempt; while it works a heartbeat extends the lease;
it records the outcome only if the leg is still syncing under its attempt number. A killed worker's leg
is taken over by another worker once its lease expires (``reconcile``), and a duplicate task finds the
leg owned or finished and does nothing."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from clusters.connector.errors import describe, is_retriable
from fleet.audit.sealing import sealing_deferred
from fleet.audit.services import batched
from fleet.core.bulk import update_rows
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
    """Claim one leg (``_claim_many`` of one): a pull-mode cluster's agent poll (``agent=True``,
    services/agentwork.py) and a single push leg's task (a retry, a redispatch)."""
    return _claim_many([cs_id], agent=agent)[cs_id]


def _claim_many(cs_ids: Sequence[int], *, agent: bool = False) -> dict[int, tuple[ClusterSync | None, str]]:
    """Claim legs under their row locks, in one transaction: number each attempt and take its lease, or say
    why not. The one claim of both paths: a push worker's slice task (``agent=False``) and a pull-mode
    cluster's agent poll (``agent=True``). Each path claims only its own clusters' legs, so a stray task for
    a pull-mode leg does nothing.

    A slice costs the same statements as one leg (issue 19): the legs locked with one SELECT (in id order, so
    two slices never wait for each other crosswise), each rollout read once, the dependencies looked up once
    per rollout, the claimed legs written with one bulk UPDATE and their ``sync.started`` events with one
    INSERT (``audit.batched``). The rarer outcomes (cancelled, deferred, waiting) write their leg alone."""
    out: dict[int, tuple[ClusterSync | None, str]] = {pk: (None, "gone") for pk in cs_ids}
    with atomic(), batched():
        legs = list(
            ClusterSync.objects.select_for_update(of=("self",)).select_related("cluster")
            .filter(pk__in=list(cs_ids)).order_by("pk")
        )
        rollouts: dict[int, Rollout] = {}
        now = timezone.now()
        fresh: dict[int, list[ClusterSync]] = defaultdict(list)  # not taken over: dependencies checked
        claim: list[tuple[ClusterSync, bool]] = []
        for cs in legs:
            rollout = rollouts.get(cs.rollout_id)
            if rollout is None:
                rollout = rollouts[cs.rollout_id] = current_rollout(cs.rollout_id)
            cs.rollout = rollout
            out[cs.pk] = (None, _unclaimable(cs, rollout, now, agent))
            if out[cs.pk][1]:
                continue
            if cs.state == SyncState.SYNCING:
                claim.append((cs, True))
            else:
                fresh[cs.rollout_id].append(cs)
        for rollout_id, waiting in fresh.items():
            rollout = rollouts[rollout_id]
            # Checked again here, not only when the legs were queued: a dependency may have moved since.
            found = dependencies.waits(rollout.mapping, [cs.cluster_id for cs in waiting])
            freed = False
            for cs in waiting:
                waits = found.get(cs.cluster_id)
                if not waits:
                    claim.append((cs, False))
                    continue
                cs.state, cs.lease_until = SyncState.WAITING, None
                cs.waiting_for = [w.to_dict() for w in waits]
                cs.save(update_fields=["state", "lease_until", "waiting_for"])
                sync_event(cs, "sync.waiting", dependencies.describe(waits, cs.cluster.name)[:2000],
                           waiting_for=cs.waiting_for)
                out[cs.pk] = (None, "waiting for dependencies")
                freed = True
            if freed:
                dispatch.send(tasks.advance, rollout_id)  # their slots are free for other legs
        lease = lease_from_now()
        for cs, took_over in claim:
            cs.state = SyncState.SYNCING
            cs.attempts += 1
            cs.started_at = cs.started_at or now
            cs.lease_until = lease
            cs.retry_at = None
            sync_event(
                cs,
                "sync.started",
                f"attempt {cs.attempts}"
                + (f" (taken over from {'an agent' if agent else 'a worker'} that stopped)"
                   if took_over else "")
                + (" claimed by the cluster's agent" if agent else ""),
                attempt=cs.attempts,
            )
            out[cs.pk] = (cs, "claimed")
        if claim:
            # One UPDATE with the same values for every claimed leg (the rows are locked: the attempt
            # numbered above is the stored one plus one); not bulk_update's CASE per row and field.
            ClusterSync.objects.filter(pk__in=[cs.pk for cs, _ in claim]).update(
                state=SyncState.SYNCING, attempts=F("attempts") + 1,
                started_at=Coalesce(F("started_at"), Value(now)), lease_until=lease, retry_at=None,
            )
    return out


def _unclaimable(cs: ClusterSync, rollout: Rollout, now: Any, agent: bool) -> str:
    """Why the locked leg ``cs`` cannot be claimed now ('' when it can); a leg of a cancelled, superseded,
    paused or stopped rollout is moved (and audited) here."""
    if ports.is_pull(cs.cluster) != agent:
        return ("a pull-mode cluster: its agent claims the leg" if not agent
                else "a push-mode cluster: a worker syncs it")
    if cs.state == SyncState.SYNCING and cs.lease_until and cs.lease_until > now:
        return "owned by another worker"
    if cs.state not in (SyncState.QUEUED, SyncState.SYNCING):
        return f"already {cs.state}"
    if cs.retry_at and cs.retry_at > now + timedelta(seconds=1) and cs.state == SyncState.QUEUED:
        return "not yet time to retry"
    if rollout.state in (RolloutState.CANCELLED, RolloutState.SUPERSEDED):
        cs.state = SyncState.CANCELLED if rollout.state == RolloutState.CANCELLED else SyncState.SUPERSEDED
        cs.finished_at = now
        cs.save(update_fields=["state", "finished_at"])
        sync_event(cs, f"sync.{cs.state}", f"the rollout is {rollout.state}")
        return str(cs.state)
    if rollout.paused or rollout.state != RolloutState.SYNCING:
        cs.state = SyncState.PENDING
        cs.lease_until = None
        cs.save(update_fields=["state", "lease_until"])
        sync_event(cs, "sync.deferred", f"the rollout is {'paused' if rollout.paused else rollout.state}")
        return "deferred"
    return ""


class _Heartbeat(threading.Thread):
    """Extends the leases of a slice's legs while their work runs (own database connection): one UPDATE per
    beat for the whole slice, each leg matched with its attempt."""

    def __init__(self, legs: Sequence[tuple[int, int]]) -> None:
        super().__init__(daemon=True, name=f"lease-{legs[0][0]}+{len(legs) - 1}")
        self.legs = list(legs)
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = lease_seconds() / 3
        mine = Q()
        for pk, attempt in self.legs:
            mine |= Q(pk=pk, attempts=attempt)
        try:
            while not self.stopped.wait(interval):
                try:
                    ClusterSync.objects.filter(mine, state=SyncState.SYNCING).update(
                        lease_until=lease_from_now())
                except Exception:  # a beat missed (a deadlock, a dropped connection): the next one may do
                    log.warning("heartbeat of cluster syncs %s failed", [pk for pk, _ in self.legs],
                                exc_info=True)
                    close_old_connections()
        finally:
            close_old_connections()

    def stop(self) -> None:
        """Stop beating and wait for a beat in progress to end (before the legs are finished)."""
        self.stopped.set()
        if self.is_alive():
            self.join()


@dataclass
class _Work:
    """One claimed leg of a slice and what its sync found."""

    cs: ClusterSync
    inventory: list[dict[str, Any]]
    started: float = field(default_factory=time.monotonic)
    outcome: ports.ApplyOutcome | None = None
    health: ports.HealthOutcome | None = None
    error: str = ""
    transient: bool = False
    live: ports.LiveState | None = None
    blocked: bool = False
    ended: float | None = None  # when its work on the cluster ended (the attempt's duration, for metrics)

    def failed(self, exc: Exception) -> None:
        self.ended = time.monotonic()
        secrets = ports.credentials(self.cs.cluster).secrets()
        self.error = describe(exc, self.cs.cluster.api_url, secrets).message[:2000] or type(exc).__name__
        self.transient = is_retriable(exc)


def run_cluster_sync(cs_id: int) -> str:
    """Sync one leg (a retry, a redispatch); returns what happened to it (for logs and tests). The rollout
    goes on from here as from a slice (``run_slice``)."""
    return run_slice([cs_id]).get(cs_id, "gone")


def run_slice(cs_ids: Sequence[int]) -> dict[int, str]:
    """Sync a slice of a rollout's legs (the coordinator queues a task per slice, FLEETGATE_SYNC_SLICE legs):
    claim them together, apply to their clusters in parallel threads (one per leg: the work is HTTP), finish
    them together, then move the rollout on once. When that advance queues legs again, this task takes the
    first slice of them itself, without a round trip through the broker, for up to
    FLEETGATE_SYNC_CHAIN_SECONDS; later slices go through the broker, so other work gets its turn. Returns
    what happened to each leg (for logs and tests)."""
    results: dict[int, str] = {}
    ids = list(cs_ids)
    chain_until = time.monotonic() + float(settings.FLEETGATE_SYNC_CHAIN_SECONDS)
    while ids:
        with sealing_deferred():  # the round's claim, finish and advance: one audit seal
            ids = _round(ids, results, chain=time.monotonic() < chain_until)
    return results


def _round(ids: list[int], results: dict[int, str], *, chain: bool) -> list[int]:
    """Claim, sync and record one slice (``results`` gets each leg's outcome); returns the next slice's legs
    when this task is to sync them itself (``chain``), else none."""
    claimed = _claim_many(ids)
    by_rollout: dict[int, list[ClusterSync]] = defaultdict(list)
    for pk, (cs, why) in claimed.items():
        if cs is None:
            results[pk] = why
        else:
            by_rollout[cs.rollout_id].append(cs)
    if not by_rollout:
        return []
    # One heartbeat for every leg claimed: a slice holds one rollout's legs, a stray call maybe more.
    heartbeat = _Heartbeat([(cs.pk, cs.attempts) for legs in by_rollout.values() for cs in legs])
    heartbeat.start()
    try:
        work = [_sync(legs) for legs in by_rollout.values()]
    finally:
        heartbeat.stop()
    following: list[int] = []
    for done in work:
        keep: list[int] | None = [] if chain and not following else None
        results.update(_record(done, keep))
        following = keep or following
    return following


def _sync(legs: list[ClusterSync]) -> list[_Work]:
    """Claimed legs of one rollout: read their live state where a review depends on it (a new review where it
    changed: this thread, database), apply, wait for health (threads, HTTP). Errors are each leg's own."""
    rollout = legs[0].rollout
    work = [_Work(cs, []) for cs in legs]
    try:
        inventories = previous_inventories(rollout.mapping, legs)
    except Exception as exc:
        for w in work:
            w.failed(exc)
        return work
    for w in work:
        w.inventory = inventories.get(w.cs.cluster_id, [])
    reviewed = [w for w in work if isinstance((w.cs.evaluation or {}).get("reviewed"), dict)]
    _each(reviewed, _read_live)
    for w in reviewed:  # the gate again where the live state changed (database: this thread)
        if w.live is not None:
            try:
                w.blocked = _rereview(w.cs, w.live)
            except Exception as exc:  # the leg's attempt fails (retried if transient), not the slice
                w.failed(exc)
    _each([w for w in work if not w.blocked and not w.error], _apply)
    return work


def _record(work: list[_Work], keep: list[int] | None) -> dict[int, str]:
    """Record the outcomes of one rollout's synced legs and move the rollout on (``keep``: see
    ``fanout.advance``). A leg blocked by a new review was recorded then (or is owned by a newer attempt)."""
    rollout = work[0].cs.rollout
    results = {w.cs.pk: "blocked" for w in work if w.blocked}
    done = [w for w in work if not w.blocked]
    if done:
        finished = _finish_apart(
            [(w.cs.pk, w.cs.attempts, w.outcome, w.health, w.error, w.transient) for w in done], rollout
        )
        for w in done:
            result = results[w.cs.pk] = finished.get(w.cs.pk, "gone")
            metrics.cluster_sync(result if result in _COUNTED_RESULTS else "lost",
                                 (w.ended or time.monotonic()) - w.started)
    conclude_many(rollout.pk, rollout.mapping, {w.cs.cluster_id: results[w.cs.pk] for w in work}, keep=keep)
    return results


def _finish_apart(found: list[Found], rollout: Rollout) -> dict[int, str]:
    """``_finish_many`` for the slice; if that fails (the database refused one leg's outcome), each leg on its
    own, so one leg's error does not lose its slice-mates' outcomes. A leg that cannot be recorded keeps its
    lease until it lapses; then reconcile sends it again."""
    try:
        return _finish_many(found, rollout=rollout)
    except Exception:
        if len(found) == 1:
            raise
        log.exception("recording the outcomes of cluster syncs %s together failed; one by one",
                      [item[0] for item in found])
    out: dict[int, str] = {}
    for item in found:
        try:
            out.update(_finish_many([item], rollout=rollout))
        except Exception:
            log.exception("recording the outcome of cluster sync %s failed", item[0])
            out[item[0]] = "not recorded"
    return out


def _each(work: list[_Work], step: Any) -> None:
    """``step(w)`` for every leg: in this thread for one, else one thread per leg (HTTP to the clusters; the
    steps run no queries: credentials and the allow-list came with the claim), from the process's pool."""
    if len(work) <= 1:
        for w in work:
            step(w)
        return
    list(_pool(len(work)).map(step, work))


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool)
_POOL_LOCK = threading.Lock()


def _pool(size: int) -> ThreadPoolExecutor:
    """The process's thread pool for legs, kept between slices (starting threads for every slice cost more
    than the slice's bookkeeping), at least ``size`` threads; a new one in a forked child (Celery's prefork
    pool), which has none of its parent's threads."""
    global _POOL
    with _POOL_LOCK:
        pid = os.getpid()
        if _POOL is None or _POOL[0] != pid or _POOL[1] < size:
            if _POOL is not None and _POOL[0] == pid:
                _POOL[2].shutdown(wait=False)
            from fleet.rollouts.services.fanout import slice_size

            threads = max(size, slice_size())
            _POOL = (pid, threads, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="leg"))
        return _POOL[2]


def _read_live(w: _Work) -> None:
    """A leg reviewed against a live state: read it now (does the review still hold? ``_rereview``)."""
    mapping = w.cs.rollout.mapping
    try:
        w.live = ports.live_state(w.cs.cluster, mapping, w.cs.desired, w.inventory,
                                  mapping.cluster_group.prune)
    except Exception as exc:
        w.failed(exc)


def _apply(w: _Work) -> None:
    cs, mapping = w.cs, w.cs.rollout.mapping
    group = mapping.cluster_group
    try:
        w.outcome = ports.apply(cs.cluster, mapping, cs.desired, w.inventory, prune=group.prune,
                                wave_timeout=float(group.health_timeout_seconds), live=w.live)
        if not w.outcome.ok:
            w.error, w.transient = w.outcome.error or "apply failed", w.outcome.transient
            return
        # hooks ran to their end inside the apply (and may be deleted by their policy): not waited for
        refs = [r["ref"] for r in w.outcome.results
                if r.get("action") not in ("deleted", "failed", "skipped") and not _hook(r)]
        w.health = ports.wait_healthy(cs.cluster, refs, timeout=float(group.health_timeout_seconds),
                                      observed=w.outcome.observed)
        if not w.health.healthy:
            w.error = f"not healthy: {w.health.reason or w.health.state}"
    except Exception as exc:
        w.failed(exc)
    finally:
        w.ended = w.ended or time.monotonic()


def previous_inventories(mapping: Any, legs: Sequence[ClusterSync]) -> dict[int, list[dict[str, Any]]]:
    """What the last sync of ``mapping`` left on each leg's cluster (for prune): one query for the slice."""
    rows = (
        SyncedState.objects.filter(mapping=mapping, cluster__in=[cs.cluster_id for cs in legs])
        .order_by()  # a dict by cluster: the model's ordering would join the clusters for nothing
        .values_list("cluster_id", "inventory")
    )
    return {cluster_id: list(inventory or []) for cluster_id, inventory in rows}


def previous_inventory(cs: ClusterSync) -> list[dict[str, Any]]:
    """What the last sync of the leg's mapping left on its cluster (for prune)."""
    return previous_inventories(cs.rollout.mapping, [cs]).get(cs.cluster_id, [])


def rereview_blocks(cs: ClusterSync, inventory: list[dict[str, Any]]) -> bool:
    """A claimed leg reviewed against a live state: does the review still hold? (services/rereview.py). If
    the live state changed, the gate reviews the leg again and a blocking decision blocks it (recorded);
    returns whether nothing may be applied. For a pull-mode cluster the live state is its agent's last
    report."""
    if not isinstance((cs.evaluation or {}).get("reviewed"), dict):
        return False
    mapping = cs.rollout.mapping
    live = ports.live_state(cs.cluster, mapping, cs.desired, inventory, mapping.cluster_group.prune)
    return _rereview(cs, live)


def _rereview(cs: ClusterSync, live: ports.LiveState) -> bool:
    """The review of a leg against ``live``: when the live state changed since, the gate reviews the leg
    again (database) and a blocking decision blocks it; returns whether it blocked."""
    changed = rereview.changes(cs.evaluation["reviewed"], live)
    if not changed:
        return False
    again = rereview.review_again(cs.rollout, cs, live)
    return _record_rereview(cs.pk, cs.attempts, again, changed)


def advance_and_sync(rollout_id: int) -> str:
    """The advance task: move the rollout on (``fanout.advance``); when that queues push legs, sync their
    first slice here as a slice task's chain does (FLEETGATE_SYNC_CHAIN_SECONDS above 0), without a round
    trip through the broker before the rollout's first applies."""
    from fleet.rollouts.services.fanout import advance

    keep: list[int] | None = [] if float(settings.FLEETGATE_SYNC_CHAIN_SECONDS) > 0 else None
    state = advance(rollout_id, keep=keep)
    if keep:
        run_slice(keep)
    return state


def conclude(rollout_id: int, mapping: Any, cluster_id: int, result: str) -> None:
    """After one leg's outcome is recorded (from an agent's result): ``conclude_many`` of one."""
    conclude_many(rollout_id, mapping, {cluster_id: result})


def conclude_many(
    rollout_id: int, mapping: Any, results: dict[int, str], *, keep: list[int] | None = None
) -> None:
    """After legs' outcomes are recorded (``results``: cluster id -> result): move the rollout on at once (no
    broker round trip; if this process dies here, reconcile does it), and wake legs of other mappings
    waiting for this one on these clusters (the periodic reconcile is the safety net). ``keep``: see
    ``fanout.advance``."""
    from fleet.rollouts.services.fanout import advance_coalesced

    advance_coalesced(rollout_id, keep=keep)
    ended = [cluster_id for cluster_id, result in results.items() if result in ("synced", "failed")]
    if ended:
        dependencies.wake_dependents(mapping, *ended)


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
    """Record one leg's outcome (``_finish_many`` of one): a pull-mode agent's result."""
    found: Found = (cs_id, attempt, outcome, health, error, transient)
    return _finish_many([found], rollout=rollout).get(cs_id, "gone")


# (leg id, attempt, apply outcome, health, error, transient): what a sync found, for ``_finish_many``.
Found = tuple[int, int, "ports.ApplyOutcome | None", "ports.HealthOutcome | None", str, bool]


def _finish_many(found: Sequence[Found], *, rollout: Rollout | None = None) -> dict[int, str]:
    """Record legs' outcomes, each only if its leg is still syncing under its attempt, in one transaction.
    ``rollout``: the legs' rollout as their claim read it (the push path); its mapping and commit do not
    change, and the one thing read of it that may have changed since, its state, is read again where it
    counts (a retry). Without it (the pull path), the rollout is read here.

    A slice costs the statements of one leg (issue 19): the legs locked with one SELECT, written with one bulk
    UPDATE, the successes' synced states with one upsert, the events with one INSERT (``audit.batched``)."""
    by_id = {item[0]: item for item in found}
    out: dict[int, str] = {}
    with atomic(), batched():
        legs = list(
            ClusterSync.objects.select_for_update(of=("self",)).select_related("cluster")
            .filter(pk__in=list(by_id)).order_by("pk")
        )
        now = timezone.now()
        rollouts: dict[int, Rollout] = {rollout.pk: rollout} if rollout is not None else {}
        states: dict[int, str] = {}  # rollout states read again (only a retry depends on one)
        done: list[ClusterSync] = []
        remembered: list[SyncedState] = []
        owned = []
        for cs in legs:
            if cs.state != SyncState.SYNCING or cs.attempts != by_id[cs.pk][1]:
                out[cs.pk] = "lost the lease; another attempt owns the outcome"
                continue
            leg_rollout = rollouts.get(cs.rollout_id)
            if leg_rollout is None:
                leg_rollout = rollouts[cs.rollout_id] = current_rollout(cs.rollout_id)
                states[cs.rollout_id] = leg_rollout.state
            cs.rollout = leg_rollout
            owned.append(cs)
        _lock_synced_states([cs for cs in owned if by_id[cs.pk][2] is not None])
        for cs in owned:
            _, attempt, outcome, health, error, transient = by_id[cs.pk]
            leg_rollout = cs.rollout
            if outcome is not None:
                cs.results = outcome.results
                cs.counts = outcome.counts
                if not error:
                    remembered.append(_synced_state(leg_rollout, cs, outcome, health))
                else:
                    _remember_failed(leg_rollout, cs, outcome)
            if health is not None:
                cs.health = health.state
                cs.health_detail = health.detail
            done.append(cs)
            if not error:
                cs.state, cs.error, cs.finished_at, cs.lease_until = SyncState.SYNCED, "", now, None
                sync_event(cs, "sync.succeeded", _summary(cs.counts), counts=cs.counts, health=cs.health)
                out[cs.pk] = "synced"
                continue
            if transient and attempt < max_attempts() and cs.rollout_id not in states:
                states[cs.rollout_id] = Rollout.objects.filter(pk=cs.rollout_id).values_list(
                    "state", flat=True).get()
            if transient and attempt < max_attempts() and states[cs.rollout_id] == RolloutState.SYNCING:
                delay = retry_delay(attempt)
                cs.state, cs.error = SyncState.QUEUED, error
                cs.retry_at = now + timedelta(seconds=delay)
                cs.lease_until = lease_from_now(delay)
                sync_event(cs, "sync.retrying",
                           f"attempt {attempt} failed, retry in {delay:g}s: {error}"[:2000])
                if ports.is_pull(cs.cluster):
                    doorbell.ring(cs.cluster_id)  # the agent's next poll after retry_at claims it again
                else:
                    dispatch.send(tasks.sync_cluster, cs.pk, countdown=delay, task_id=cs.task_id)
                out[cs.pk] = "retrying"
                continue
            cs.state, cs.error, cs.finished_at, cs.lease_until = SyncState.FAILED, error, now, None
            sync_event(cs, "sync.failed", error[:2000], counts=cs.counts)
            out[cs.pk] = "failed"
        if done:
            update_rows(done, _FINISH_FIELDS, group=False)  # one statement (not bulk_update's CASE per row)
        if remembered:
            # One INSERT ... ON CONFLICT (mapping, cluster) DO UPDATE of the columns a sync sets; the row's
            # other columns (drift check times, pull-mode live state) are left as they are.
            SyncedState.objects.bulk_create(
                remembered, update_conflicts=True, unique_fields=["mapping", "cluster"],
                update_fields=_REMEMBERED,
            )
    return out


def _lock_synced_states(legs: list[ClusterSync]) -> None:
    """Lock the synced states the finish writes, first and in id order: the upsert and a failed leg's
    inventory write would otherwise lock them in leg order, which a drift check's bulk update or another
    finish of the same mapping could cross (a deadlock would lose the slice's outcomes). One query."""
    if not legs:
        return
    clusters: dict[int, list[int]] = defaultdict(list)
    for cs in legs:
        clusters[cs.rollout.mapping_id].append(cs.cluster_id)
    mine = Q()
    for mapping_id, cluster_ids in clusters.items():
        mine |= Q(mapping_id=mapping_id, cluster_id__in=cluster_ids)
    list(SyncedState.objects.select_for_update().filter(mine).order_by("pk").values_list("pk", flat=True))


def _summary(counts: dict[str, Any]) -> str:
    return ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing to apply"


# What a successful sync writes to its synced state (the other columns are the drift checks' and the agent's).
_REMEMBERED = ["commit", "rollout", "inventory", "applied", "health", "synced_at", "drift_status", "drift"]


def _synced_state(rollout: Any, cs: ClusterSync, outcome: ports.ApplyOutcome, health: Any) -> SyncedState:
    """What a successful sync keeps of what is on the cluster: the commit and the objects."""
    return SyncedState(
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


def _remember_failed(rollout: Any, cs: ClusterSync, outcome: ports.ApplyOutcome) -> None:
    """After a failure keep at least the inventory, so a later sync can prune what this one created."""
    state, _ = SyncedState.objects.select_for_update().get_or_create(
        mapping=rollout.mapping, cluster=cs.cluster
    )
    known = {tuple(sorted(r.items())) for r in state.inventory}
    state.inventory = state.inventory + [
        r for r in outcome.inventory if tuple(sorted(r.items())) not in known
    ]
    state.save()
