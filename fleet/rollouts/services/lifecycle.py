"""From a commit to a queued rollout: create (superseding older ones), render, evaluate, plan, decide."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Count
from django.utils import timezone

from clusters import selectors
from clusters.models import Cluster
from fleet.core import bulk
from fleet.core.fields import secret_field_names
from fleet.rollouts import dispatch, ports, tasks
from fleet.rollouts.choices import (
    SUPERSEDABLE_STATES,
    UNSTARTED_SYNC_STATES,
    Decision,
    RolloutState,
    RolloutTrigger,
    SyncState,
)
from fleet.rollouts.models import Approval, ClusterSync, Rollout
from fleet.rollouts.services import approval as approval_rule
from fleet.rollouts.services import fanout, rereview, strategy
from fleet.rollouts.services.common import atomic, locked_rollout, note, sync_event, transition
from fleet.sources.models import Commit, PathMapping


def create_rollout(
    commit: Commit,
    mapping: PathMapping,
    *,
    trigger: str = RolloutTrigger.COMMIT,
    user: Any = None,
    clusters: Iterable[Cluster] | None = None,
    rollback_of: Rollout | None = None,
) -> Rollout:
    """A new rollout of ``commit`` for ``mapping`` (to ``clusters``, default: the group's members).

    Rollouts of the same mapping that have not started syncing are superseded (their approvals lapse),
    unless this one is a "sync now" of what is already synced. Preparation is queued after commit."""
    if commit.repository_id != mapping.repository_id:
        raise ValueError("the commit is not from the mapping's repository")
    with atomic():
        targets = list(clusters) if clusters is not None else list(mapping.cluster_group.members.all())
        rollout = Rollout.objects.create(
            mapping=mapping,
            commit=commit,
            trigger=trigger,
            created_by=user if getattr(user, "pk", None) else None,
            rollback_of=rollback_of,
        )
        ClusterSync.objects.bulk_create([ClusterSync(rollout=rollout, cluster=c) for c in targets])
        note(
            rollout,
            "rollout.created",
            f"{trigger} rollout of {commit.sha[:10]} to {len(targets)} cluster(s)",
            trigger=trigger,
            commit=commit.sha,
            clusters=len(targets),
        )
        if trigger != RolloutTrigger.SYNC_NOW:
            supersede_older(rollout)
        dispatch.send(tasks.prepare, rollout.pk)
    return rollout


def supersede_older(newer: Rollout) -> list[int]:
    """Supersede rollouts of the same mapping that have not started, and the unstarted legs of those
    that have; approvals given to them lapse."""
    done = []
    older = (
        Rollout.objects.filter(mapping=newer.mapping_id, pk__lt=newer.pk)
        .exclude(trigger=RolloutTrigger.SYNC_NOW)
        .filter(state__in=[*SUPERSEDABLE_STATES, RolloutState.SYNCING, RolloutState.HALTED])
        .values_list("pk", flat=True)
    )
    for pk in list(older):
        rollout = locked_rollout(pk)
        if rollout.state in SUPERSEDABLE_STATES:
            lapsed = Approval.objects.filter(rollout=rollout, lapsed=False).update(lapsed=True)
            ClusterSync.objects.filter(rollout=rollout).exclude(
                state__in=[SyncState.SYNCED, SyncState.FAILED, SyncState.SYNCING]
            ).update(state=SyncState.SUPERSEDED, finished_at=timezone.now())
            reason = f"superseded by rollout {newer.pk} ({newer.commit.sha[:10]})"
            if lapsed:
                reason += f"; {lapsed} approval(s) lapsed"
            transition(rollout, RolloutState.SUPERSEDED, reason, superseded_by=newer)
            done.append(pk)
        else:  # syncing or halted: legs not yet started are superseded; in-flight ones finish
            count = ClusterSync.objects.filter(rollout=rollout, state__in=UNSTARTED_SYNC_STATES).update(
                state=SyncState.SUPERSEDED, finished_at=timezone.now()
            )
            if count:
                note(rollout, "rollout.legs_superseded", f"{count} cluster(s) left to rollout {newer.pk}")
                rollout.superseded_by = newer
                rollout.save(update_fields=["superseded_by", "updated"])
                dispatch.send(tasks.advance, rollout.pk)
    return done


# --------------------------------------------------------------------------------------------- prepare


def prepare(rollout_id: int) -> str:
    """Render, evaluate and plan; then wait for approval, wait for a sync request, or queue.

    Each phase commits its state, so a prepare that dies resumes at the phase it reached."""
    for _ in range(4):
        state = Rollout.objects.filter(pk=rollout_id).values_list("state", flat=True).first()
        if state == RolloutState.PENDING:
            _render(rollout_id)
        elif state == RolloutState.RENDERED:
            sliced = _evaluate(rollout_id)
            if sliced is not None:  # the slices' tasks decide the rollout
                return sliced
        elif state == RolloutState.EVALUATED:
            return _after_gate(rollout_id)
        else:
            return str(state)
    return str(state)


# A leg's JSON columns: loaded only where a step reads them (decoding them is most of loading 10,000 legs)
_BULKY = frozenset({"evaluation", "desired", "plan", "results", "counts", "health_detail", "waiting_for"})
# A cluster's access, left out where a step does not connect to it (the render, the batches): not decrypted,
# and not held for every leg at once (a real kubeconfig or CA bundle is kilobytes).
_ACCESS = tuple(
    f"cluster__{name}" for name in sorted(secret_field_names(Cluster) | {"client_certificate", "ca_data"})
)
# Legs rendered per round: the render lookup holds each leg's objects (decoded from the stored render) until
# they are written, so a rollout's render holds at most this many at once, whatever its size.
RENDER_CHUNK = 1000


def _render(rollout_id: int) -> None:
    """Each leg's objects from the stored renders (or rendered now), a chunk of legs at a time; the last
    chunk's write and the move to rendered in one transaction. A render that fails fails the rollout, its
    legs cancelled with the reason. Nothing is written once the rollout has left pending (cancelled,
    superseded, or rendered by another prepare of it)."""
    rollout = Rollout.objects.select_related("mapping__cluster_group", "commit__repository").get(
        pk=rollout_id
    )
    error = ""
    after, legs, total = 0, 0, 0
    while True:
        syncs = list(
            rollout.syncs.select_related("cluster").defer(*_BULKY, *_ACCESS).filter(pk__gt=after)
            .order_by("pk")[:RENDER_CHUNK]
        )
        last = len(syncs) < RENDER_CHUNK
        declared: dict[str, Any] | None = None
        objects: dict[int, list[dict[str, Any]]] = {}
        try:
            objects = ports.render_mapping(rollout.commit, rollout.mapping, [s.cluster for s in syncs])
            if last:  # the batches and limits of its fleet.yaml rolloutStrategy (services/strategy.py)
                declared = ports.rollout_strategy(rollout.commit, rollout.mapping)
        except ports.ManifestsUnavailable as exc:  # a render failed, the commit is gone, git failed
            error = f"render failed: {exc}"
        except Exception as exc:  # git unreachable etc.: the rollout fails with the reason, nothing applied
            error = f"render failed: {type(exc).__name__}: {exc}"
        with atomic():
            locked = locked_rollout(rollout_id)
            if locked.state != RolloutState.PENDING:
                return
            if error:
                locked.syncs.update(state=SyncState.CANCELLED, error=error[:2000])
                transition(locked, RolloutState.FAILED, error[:2000])
                return
            for cs in syncs:
                cs.desired = objects.get(cs.cluster_id, [])
            bulk.update_rows(syncs, ["desired"])
            legs += len(syncs)
            total += sum(len(v) for v in objects.values())
            if not last:
                after = syncs[-1].pk
                continue
            fields: dict[str, Any] = {"strategy": declared} if declared else {}
            transition(locked, RolloutState.RENDERED, f"{total} object(s) for {legs} cluster(s)", **fields)
            if declared:
                note(locked, "rollout.strategy", f"rollout strategy from {declared['file']}"
                     + (f": {'; '.join(declared['notes'])}" if declared.get("notes") else ""),
                     strategy=declared)
            return


def _read_live(rollout: Rollout, syncs: list[ClusterSync]) -> dict[int, ports.LiveState | str]:
    """Each target's live state (the objects it holds now, what a sync would prune), read in parallel
    through the connector; the reason instead when it cannot be read. One query for the inventories."""
    from fleet.rollouts.models import SyncedState

    inventories = dict(
        SyncedState.objects.filter(
            mapping=rollout.mapping_id, cluster__in=[s.cluster_id for s in syncs]
        ).values_list("cluster_id", "inventory")
    )
    group = rollout.mapping.cluster_group

    def one(cs: ClusterSync) -> ports.LiveState | str:
        try:
            return ports.live_state(
                cs.cluster, rollout.mapping, cs.desired, inventories.get(cs.cluster_id, []), group.prune
            )
        except Exception as exc:
            reason = f"the live state of {cs.cluster.name} could not be read: {type(exc).__name__}: {exc}"
            return reason[:1000]
        finally:
            close_old_connections()

    if not syncs:
        return {}
    workers = max(1, min(8, group.max_parallel, len(syncs)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {cs.cluster_id: live for cs, live in zip(syncs, pool.map(one, syncs), strict=True)}


def _evaluate(rollout_id: int) -> str | None:
    """The gate of a rendered rollout: its legs not yet gated, read, reviewed and decided in slices of
    FLEETGATE_PREPARE_SLICE legs. At most one slice is gated here, as one slice (``_gate_slice``; returns
    None: prepare goes on with the rollout's new state); more are a task per slice (``evaluate_slice``),
    spread over the worker processes, and the slice that ends last decides the rollout (returns the
    rollout's state, still rendered). Legs gated already (a prepare sent again by reconcile after a slice
    was lost with its worker) are not gated again."""
    ids = list(
        ClusterSync.objects.filter(rollout=rollout_id, decision=Decision.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    size = prepare_slice_size()
    if len(ids) <= size:
        _gate_slice(rollout_id, ids)
        return None
    parts = fanout.slices(ids, size)
    with atomic():
        rollout = locked_rollout(rollout_id)
        if rollout.state != RolloutState.RENDERED:
            return str(rollout.state)
        rollout.save(update_fields=["updated"])  # reconcile sends prepare again a lease after the last slice
        note(
            rollout,
            "rollout.gate_sliced",
            f"the gate of {len(ids)} cluster(s) in {len(parts)} slice(s) of at most {size}",
            clusters=len(ids),
            slices=len(parts),
        )
        for part in parts:
            dispatch.send(tasks.evaluate_slice, rollout_id, *part)
    return str(RolloutState.RENDERED)


def prepare_slice_size() -> int:
    """Legs per gate task of a rollout's prepare (FLEETGATE_PREPARE_SLICE)."""
    return max(1, int(settings.FLEETGATE_PREPARE_SLICE))


def evaluate_slice(rollout_id: int, leg_ids: Sequence[int]) -> str:
    """The task of one slice of a big rollout's gate (``_gate_slice``); the slice that decides the rollout
    goes on as prepare does (``_after_gate``). Returns the rollout's state."""
    state = _gate_slice(rollout_id, leg_ids)
    return _after_gate(rollout_id) if state == RolloutState.EVALUATED else state


def _gate_slice(rollout_id: int, leg_ids: Sequence[int]) -> str:
    """The gate for a slice of a rendered rollout's legs (those not gated yet: an empty ``decision``): their
    live states read, reviewed by the bound policies (``ports.policy_decisions``: an Evaluation per cluster,
    one ``policy.decision`` audit event for the slice), their plans from the live states where an approval or
    a manual sync needs them, and their decision, gate summary, state (blocked) and plan stored under the
    rollout's lock. Only this slice's legs are loaded. The slice that leaves no leg ungated decides the
    rollout (``_decide``), in the same transaction, so no two slices do; a slice of a rollout that is no
    longer rendered (cancelled, superseded, decided) does nothing. A leg gated already (a slice run twice) is
    left as it is. Returns the rollout's state."""
    rollout = Rollout.objects.select_related(
        "mapping__cluster_group", "commit__repository", "created_by"
    ).get(pk=rollout_id)
    if rollout.state != RolloutState.RENDERED:
        return str(rollout.state)
    syncs = list(
        ClusterSync.objects.filter(rollout=rollout_id, pk__in=list(leg_ids), decision=Decision.PENDING)
        .select_related("cluster")
        .defer(*_BULKY.difference({"desired"}))
    )
    planned = _gate(rollout, syncs) if syncs else False
    with atomic():
        rollout = locked_rollout(rollout_id)
        if rollout.state != RolloutState.RENDERED:
            return str(rollout.state)
        if syncs:
            ungated = set(
                ClusterSync.objects.filter(pk__in=[cs.pk for cs in syncs], decision=Decision.PENDING)
                .order_by()
                .values_list("pk", flat=True)
            )
            fields = ["decision", "evaluation", "state", *(["plan"] if planned else [])]
            bulk.update_rows([cs for cs in syncs if cs.pk in ungated], fields)
        if ClusterSync.objects.filter(rollout=rollout_id, decision=Decision.PENDING).exists():
            rollout.save(update_fields=["updated"])  # other slices are at work: reconcile waits a lease
            return str(rollout.state)
        _decide(rollout)
    return str(rollout.state)


def _gate(rollout: Rollout, syncs: list[ClusterSync]) -> bool:
    """Read, review and decide ``syncs`` (legs of one rollout) in memory: each leg's ``decision``,
    ``evaluation``, ``state`` (blocked) and, where an approval or a manual sync shows one, ``plan``. Returns
    whether plans were made."""
    lives = _read_live(rollout, syncs)
    try:
        targets, reviews = ports.review_targets(
            [(cs.cluster, cs.desired, lives.get(cs.cluster_id)) for cs in syncs],
            create_only_allowed=rollout.mapping.cluster_group.create_only_review,
        )
        results = ports.policy_decisions(
            rollout.commit,
            rollout.mapping,
            targets,
            reviews=reviews,
            user_info=ports.review_user(rollout.created_by, rollout.commit.author_email),
        )
    except Exception as exc:  # fail closed
        failure = ports.PolicyResult(
            "blocked", {"outcome": "blocked", "errors": [f"{type(exc).__name__}: {exc}"]}
        )
        results = {cs.cluster_id: failure for cs in syncs}
    for cs in syncs:
        result = results.get(cs.cluster_id) or ports.PolicyResult("blocked", {"errors": ["not evaluated"]})
        # "cannot review" blocks the leg like a deny; the summary keeps the outcome and its reason. A leg's
        # decision is never left empty: empty is how the slices tell a leg not gated yet.
        outcome = result.outcome if result.outcome in (Decision.PASSED, Decision.WARNED) else Decision.BLOCKED
        cs.decision = outcome
        cs.evaluation = result.summary
        live = lives.get(cs.cluster_id)
        if isinstance(live, ports.LiveState):  # compared again when the leg syncs (services/rereview.py)
            cs.evaluation["reviewed"] = rereview.reviewed(live)
        if cs.decision == Decision.BLOCKED:
            cs.state = SyncState.BLOCKED
    # Slices see the legs other slices blocked already, so a later slice's rule can only be laxer than an
    # earlier one's, and the rule when the rollout is decided the laxest: a plan needed then, each slice made.
    _rule, approval, manual = _needs_plan(rollout)
    return _plans_from_live(rollout, syncs, lives) if approval or manual else False


def _decide(rollout: Rollout) -> None:
    """The gate's outcome for the whole rollout, from its legs' decisions (caller holds the lock; every leg
    is gated): blocked when every leg is, else evaluated, naming the first blocked clusters or the warned
    count. The rollout's transition event is the gate's summary for the rollout (recorded once)."""
    legs = ClusterSync.objects.filter(rollout=rollout).order_by()  # no join for the model's ordering
    counts = {row["decision"]: row["n"] for row in legs.values("decision").annotate(n=Count("id"))}
    total = sum(counts.values())
    blocked_count = counts.get(Decision.BLOCKED, 0)
    warned = counts.get(Decision.WARNED, 0)
    if blocked_count:
        first = (
            ClusterSync.objects.filter(rollout=rollout, decision=Decision.BLOCKED)
            .order_by("cluster__name")
            .values_list("cluster__name", "evaluation")[:5]
        )
        blocked = [name + _first_message(summary or {}) for name, summary in first]
        reason = f"blocked by policy on {blocked_count} cluster(s): " + "; ".join(blocked)
        if blocked_count == total:
            transition(rollout, RolloutState.BLOCKED, reason[:2000], decision=Decision.BLOCKED)
            return
        # A deny stops the rollout of that cluster only: its leg stays blocked, the others go on.
        transition(
            rollout,
            RolloutState.EVALUATED,
            f"{reason}; the other {total - blocked_count} cluster(s) proceed"[:2000],
            decision=Decision.BLOCKED,
        )
        return
    decision = Decision.WARNED if warned else Decision.PASSED
    transition(
        rollout,
        RolloutState.EVALUATED,
        f"policy gate {decision}" + (f" with warnings on {warned} cluster(s)" if warned else ""),
        decision=decision,
    )


def _first_message(summary: dict[str, Any]) -> str:
    for v in summary.get("violations") or []:
        if v.get("enforcement") == "deny" and not v.get("waived_by"):
            return f" ({v.get('policy_name', '')}: {v.get('message', '')})"
    reasons = summary.get("reasons") or []
    if reasons:
        return f" ({reasons[0]})"
    errors = summary.get("errors") or []
    if errors:
        first = errors[0]
        return f" (error: {first.get('message', first) if isinstance(first, dict) else first})"
    return ""


def _needs_plan(rollout: Rollout) -> tuple[Any, bool, bool]:
    """(approval rule, approval needed, manual sync): a plan is shown before either."""
    group = rollout.mapping.cluster_group
    # The strictest group any of the rollout's clusters belongs to decides (services/approval.py).
    rule = approval_rule.rule_for(rollout)
    approval = rule.required and not (
        rollout.trigger == RolloutTrigger.SYNC_NOW and approval_rule.previously_approved(rollout, rule)
    )
    manual = group.sync_mode == "manual" and rollout.trigger == RolloutTrigger.COMMIT
    return rule, approval, manual


def _plans_from_live(
    rollout: Rollout, syncs: list[ClusterSync], lives: dict[int, ports.LiveState | str]
) -> bool:
    """Plans for the legs the gate let through, from the live state the gate read (not read again)."""
    group = rollout.mapping.cluster_group
    todo = [
        cs
        for cs in syncs
        if cs.decision != Decision.BLOCKED and isinstance(lives.get(cs.cluster_id), ports.LiveState)
    ]

    def one(cs: ClusterSync) -> dict[str, Any]:
        live = lives[cs.cluster_id]
        try:
            known = live if isinstance(live, ports.LiveState) else None
            return ports.plan(cs.cluster, rollout.mapping, cs.desired, [], group.prune, live=known)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"[:1000], "items": [], "counts": {}}
        finally:
            close_old_connections()

    if not todo:
        return False
    workers = max(1, min(8, group.max_parallel, len(todo)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for cs, plan in zip(todo, pool.map(one, todo), strict=True):
            cs.plan = plan
    return True


def _plan_all(rollout: Rollout) -> None:
    """The server-side dry-run diff for each target, stored before approval or a manual sync."""
    from fleet.rollouts.models import SyncedState

    syncs = list(rollout.syncs.select_related("cluster").exclude(state=SyncState.BLOCKED)
                 .defer(*_BULKY.difference({"desired"})))
    inventories = dict(
        SyncedState.objects.filter(
            mapping=rollout.mapping_id, cluster__in=[s.cluster_id for s in syncs]
        ).values_list("cluster_id", "inventory")
    )
    group = rollout.mapping.cluster_group

    def one(cs: ClusterSync) -> dict[str, Any]:
        try:
            return ports.plan(
                cs.cluster, rollout.mapping, cs.desired, inventories.get(cs.cluster_id, []), group.prune
            )
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"[:1000], "items": [], "counts": {}}
        finally:
            close_old_connections()

    workers = max(1, min(8, group.max_parallel, len(syncs)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        plans = list(pool.map(one, syncs))
    for cs, plan in zip(syncs, plans, strict=True):
        cs.plan = plan
    bulk.update_rows(syncs, ["plan"])


def _after_gate(rollout_id: int) -> str:
    rollout = Rollout.objects.select_related("mapping__cluster_group").get(pk=rollout_id)
    group = rollout.mapping.cluster_group
    rule, approval, manual = _needs_plan(rollout)
    if (approval or manual) and not any(cs.get("plan") for cs in rollout.syncs.values("plan")):
        _plan_all(rollout)
    with atomic():
        rollout = locked_rollout(rollout_id)
        if rollout.state != RolloutState.EVALUATED or rollout.approval_required or rollout.manual:
            return str(rollout.state)
        if approval:
            transition(
                rollout,
                RolloutState.AWAITING_APPROVAL,
                approval_rule.describe(rule, group),
                approval_required=True,
                approvals_required=rule.count,
                manual=manual,
            )
            return str(rollout.state)
        if manual:
            rollout.manual = True
            rollout.save(update_fields=["manual", "updated"])
            note(rollout, "rollout.ready", "waiting for a sync request (the group syncs manually)")
            return str(rollout.state)
        queue(rollout)
    return str(rollout.state)


# --------------------------------------------------------------------------------------------- queue


def assign_batches(rollout: Rollout) -> int:
    """Canary clusters (the group's canary selector) first, then batches of the group's size or
    percentage; or the partitions of the mapping's fleet.yaml rolloutStrategy (services/strategy.py).
    Returns the number of batches."""
    group = rollout.mapping.cluster_group
    syncs = list(
        rollout.syncs.select_related("cluster").filter(state=SyncState.PENDING).order_by("cluster__name")
        .defer(*_BULKY, *_ACCESS)
    )
    if strategy.declared(rollout) is not None:
        planned = _assign_fleet_batches(rollout, syncs)
        if planned is not None:
            return planned
    canaries = [s for s in syncs if selectors.matches(group.canary_selector, s.cluster.labels or {})]
    rest = [s for s in syncs if s not in canaries]
    batches: list[Sequence[ClusterSync]] = [canaries] if canaries else []
    if rest:
        if group.batch_size:
            size = group.batch_size
        elif group.batch_percent:
            size = max(1, math.ceil(len(syncs) * group.batch_percent / 100))
        else:
            size = len(rest)
        batches += [rest[i : i + size] for i in range(0, len(rest), size)]
    for number, batch in enumerate(batches):
        for cs in batch:
            cs.batch = number
            cs.canary = cs in canaries
    bulk.update_rows(syncs, ["batch", "canary"])
    return len(batches)


def _assign_fleet_batches(rollout: Rollout, pending: list[ClusterSync]) -> int | None:
    """The fleet.yaml strategy's plan stored on the rollout, and its partitions as batches (None: the
    strategy leaves the group's batches). A pending leg of a cluster in no partition is cancelled with the
    reason: Fleet does not roll out to it."""
    every = list(rollout.syncs.select_related("cluster").order_by("cluster__name").defer(*_BULKY, *_ACCESS))
    found = strategy.plan(rollout, every)
    if found is None:
        return None
    rollout.strategy = {**rollout.strategy, **found.to_dict(),
                        "notes": list(dict.fromkeys([*rollout.strategy.get("notes", []), *found.notes]))}
    rollout.save(update_fields=["strategy", "updated"])
    note(rollout, "rollout.strategy", strategy.describe(rollout), **found.to_dict())
    if found.batches is None:
        return None
    number = {name: i for i, batch in enumerate(found.batches) for name in batch.clusters}
    left = [cs for cs in pending if cs.cluster.name not in number]
    now = timezone.now()
    for cs in pending:
        cs.batch = number.get(cs.cluster.name, len(found.batches))
        cs.canary = False
    for cs in left:
        cs.state = SyncState.CANCELLED
        cs.finished_at = now
        cs.error = (f"in no partition of {rollout.strategy.get('file', 'fleet.yaml')} rolloutStrategy: not "
                    "rolled out (as in Fleet)")
    bulk.update_rows(pending, ["batch", "canary", "state", "finished_at", "error"])
    for cs in left:
        cs.rollout = rollout
        sync_event(cs, "sync.cancelled", cs.error)
    return len(found.batches)


def queue(rollout: Rollout, reason: str = "") -> None:
    """Queue the rollout (caller holds its lock): batches assigned, the first batch dispatched."""
    count = assign_batches(rollout)
    transition(
        rollout,
        RolloutState.QUEUED,
        reason or f"{count} batch(es)",
        batch_count=count,
        current_batch=0,
        next_batch_at=None,
        started_at=rollout.started_at or timezone.now(),
    )
    dispatch.send(tasks.advance, rollout.pk)
