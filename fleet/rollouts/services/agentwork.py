"""Pull mode: the legs of a pull-mode cluster, handed to its agent and recorded from its answers.

The rollout is the same for push and pull (gate, approvals, batches, windows, halt threshold, rollback,
dependencies): ``fanout.advance`` queues a pull-mode leg without a Celery task and rings the cluster's
doorbell (``fleet/rollouts/doorbell.py``). The agent's poll (:func:`poll`) claims its queued legs with the
push path's own claim (``sync._claim(..., agent=True)``: attempt number, lease, the same checks), the agent
heartbeats (:func:`heartbeat`) while it applies, and its result (:func:`record_result`) is recorded by the
push path's own finish step (``sync._finish``) and moves the rollout on (``sync.conclude``). A leg whose
lease expires goes back to queued (``reconcile.agent_lost``, event ``sync.agent_lost``), never failed or
synced on a guess; the old attempt's result is then refused.

Every function here takes the agent's credential's cluster and touches only that cluster's legs and rows.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from clusters import services as cluster_services
from clusters.agent.digest import work_digest
from clusters.connector import Connectivity
from clusters.models import Cluster
from fleet.observability import metrics
from fleet.rollouts import doorbell, ports
from fleet.rollouts.choices import RolloutState, SyncState
from fleet.rollouts.models import ClusterSync, SyncedState
from fleet.rollouts.services import drift as drift_service
from fleet.rollouts.services import sync
from fleet.rollouts.services.common import lease_seconds
from fleet.rollouts.services.reconcile import agent_lost

# Legs handed out per poll. The agent works its legs one at a time, heartbeating the one it applies: a leg
# handed out with others would wait unheartbeated and lose its lease. It polls again when one is done.
MAX_WORK_PER_POLL = 1
ACTIVE = (RolloutState.QUEUED, RolloutState.SYNCING)


class NotYours(Exception):
    """No such leg of this agent's cluster (the API answers 404)."""


class Stale(Exception):
    """The leg is not this attempt's any more (lease lost, finished, cancelled, superseded): 409."""


# -- handing out work --------------------------------------------------------------------------------------
def requeue_lost(cluster: Cluster) -> int:
    """The cluster's syncing legs whose lease expired go back to queued (``reconcile.agent_lost``): the
    agent that held them stopped heartbeating. Done by each poll for its own cluster, and by reconcile."""
    lost = list(
        ClusterSync.objects.select_related(
            "rollout__mapping__cluster_group", "rollout__mapping__repository", "rollout__commit", "cluster"
        ).filter(cluster=cluster, state=SyncState.SYNCING, rollout__state__in=ACTIVE,
                 lease_until__lt=timezone.now())
    )
    return sum(agent_lost(cs) for cs in lost)


def _claimable(cluster: Cluster) -> list[int]:
    soon = timezone.now() + timedelta(seconds=1)
    return list(
        ClusterSync.objects.filter(cluster=cluster, state=SyncState.QUEUED)
        .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=soon))
        .order_by("queued_at", "id")
        .values_list("pk", flat=True)[:MAX_WORK_PER_POLL]
    )


def _restrict(mapping: Any) -> dict[str, Any] | None:
    rules = ports.allow_rules(mapping)
    return None if rules is None else dataclasses.asdict(rules)


def work_item(cs: ClusterSync, inventory: list[dict[str, Any]]) -> dict[str, Any]:
    """A claimed leg as the agent receives it (docs/api.md "Pull mode: the agent API"): the objects the
    gate passed, the previous inventory, the prune flag and their content digest."""
    rollout = cs.rollout
    mapping, group = rollout.mapping, rollout.mapping.cluster_group
    objects = list(cs.desired or [])
    return {
        "id": cs.pk,
        "attempt": cs.attempts,
        "lease_seconds": int(lease_seconds()),
        "rollout": rollout.pk,
        "mapping": ports.mapping_key(mapping),
        "namespace": mapping.target_namespace or "default",
        "objects": objects,
        "inventory": inventory,
        "prune": bool(group.prune),
        "wave_timeout": float(group.health_timeout_seconds),
        "health_timeout": float(group.health_timeout_seconds),
        "restrict": _restrict(mapping),
        "impersonate": ports.identity(mapping),
        "digest": work_digest(objects, inventory, bool(group.prune)),
    }


def claim_work(cluster: Cluster) -> list[dict[str, Any]]:
    """Claim the cluster's queued legs (at most MAX_WORK_PER_POLL) with the push path's claim, and return
    them as Work. A claimed leg whose reviewed live state changed since review goes through the gate again
    first (``sync.rereview_blocks``, against the agent's last report); a blocked one is not handed out."""
    requeue_lost(cluster)
    out = []
    for cs_id in _claimable(cluster):
        cs, _why = sync._claim(cs_id, agent=True)
        if cs is None:
            continue
        try:
            inventory = sync.previous_inventory(cs)
            if sync.rereview_blocks(cs, inventory):
                sync.advance_rollout(cs.rollout_id)
                continue
            out.append(work_item(cs, inventory))
        except Exception as exc:  # the gate or a read failed: the attempt fails as a worker's would
            error = f"{type(exc).__name__}: {exc}"[:2000]
            result = sync._finish(cs.pk, cs.attempts, None, None, error, False)
            sync.conclude(cs.rollout_id, cs.rollout.mapping, cs.cluster_id, result)
    return out


def poll(cluster: Cluster, wait: float) -> list[dict[str, Any]]:
    """Work for the cluster's agent: claimed at once when there is some, else after the doorbell rings, or
    nothing after ``wait`` seconds. While waiting the poll holds no database connection and sleeps; the
    process's doorbell watcher reads the cache for every waiting poll at once (fleet/rollouts/doorbell.py)."""
    deadline = time.monotonic() + max(0.0, wait)
    bell = doorbell.current(cluster.pk)
    while True:
        work = claim_work(cluster)
        if work or time.monotonic() >= deadline:
            return work
        _release_connection()
        rang, bell = doorbell.wait(cluster.pk, bell, deadline - time.monotonic())
        if not rang:
            return []


def _release_connection() -> None:
    """A waiting poll holds no database connection: a thousand agents waiting must not hold a thousand
    PostgreSQL connections (the next query opens one again). Not inside a transaction (tests, callers)."""
    if not connection.in_atomic_block:
        connection.close()


# -- while working, and the result -------------------------------------------------------------------------
def _leg(cluster: Cluster, cs_id: int) -> ClusterSync:
    cs = (
        ClusterSync.objects.select_related(
            "rollout__mapping__cluster_group", "rollout__mapping__repository", "rollout__commit", "cluster"
        ).filter(pk=cs_id, cluster=cluster).first()
    )
    if cs is None:
        raise NotYours("No such work for this cluster.")
    return cs


def _owned(cs: ClusterSync, attempt: Any) -> None:
    if cs.state != SyncState.SYNCING or cs.attempts != attempt:
        why = (f"the leg is {cs.state}" if cs.state != SyncState.SYNCING
               else f"attempt {cs.attempts} owns the leg now, not attempt {attempt}")
        raise Stale(f"This work is not yours any more ({why}): stop and do not report it.")


def heartbeat(cluster: Cluster, cs_id: int, attempt: int) -> int:
    """Extend the lease of the agent's attempt; raises Stale (409) when the attempt lost the leg."""
    cs = _leg(cluster, cs_id)
    _owned(cs, attempt)
    extended = ClusterSync.objects.filter(
        pk=cs.pk, state=SyncState.SYNCING, attempts=attempt
    ).update(lease_until=timezone.now() + timedelta(seconds=lease_seconds()))
    if not extended:
        raise Stale("This work is not yours any more: stop and do not report it.")
    return int(lease_seconds())


def _outcomes(
    body: dict[str, Any],
) -> tuple[ports.ApplyOutcome | None, ports.HealthOutcome | None, str, bool]:
    """The agent's result as the push path's (outcome, health, error, transient): what run_cluster_sync
    would have from the same apply and health wait."""
    ok = bool(body.get("ok"))
    results, inventory = list(body.get("results") or []), list(body.get("inventory") or [])
    outcome = None
    if ok or results or inventory:
        outcome = ports.ApplyOutcome(
            ok=ok, results=results, counts=dict(body.get("counts") or {}), inventory=inventory,
            applied=list(body.get("applied") or []), error=str(body.get("error") or ""),
            transient=bool(body.get("transient")),
        )
    given = body.get("health")
    health = None
    if isinstance(given, dict) and given.get("state"):
        health = ports.HealthOutcome(str(given["state"]), str(given.get("reason") or ""),
                                     dict(given.get("detail") or {}))
    error, transient = "", False
    if not ok:
        error = str(body.get("error") or "") or "the agent reported a failure"
        transient = bool(body.get("transient"))
    elif health is None:
        error = "the agent reported no health"
    elif not health.healthy:
        error = f"not healthy: {health.reason or health.state}"
    return outcome, health, error[:2000], transient


def record_result(cluster: Cluster, cs_id: int, body: dict[str, Any]) -> str:
    """Record the agent's result for its attempt with the push path's finish step, then move the rollout
    on. Returns synced, failed or retrying; raises Stale (409, nothing recorded) when another attempt owns
    the leg or the content is not what was handed out (digest)."""
    cs = _leg(cluster, cs_id)
    attempt = body.get("attempt")
    _owned(cs, attempt)
    group = cs.rollout.mapping.cluster_group
    expected = work_digest(list(cs.desired or []), sync.previous_inventory(cs), bool(group.prune))
    if str(body.get("digest") or "") != expected:
        raise Stale("The result's digest is not that of this work's content: nothing recorded.")
    outcome, health, error, transient = _outcomes(body)
    result = sync._finish(cs.pk, cs.attempts, outcome, health, error, transient)
    if result not in sync._COUNTED_RESULTS:
        raise Stale("This work is not yours any more (the lease was lost): nothing recorded.")
    started = cs.started_at or timezone.now()
    metrics.cluster_sync(result, max(0.0, (timezone.now() - started).total_seconds()))
    sync.conclude(cs.rollout_id, cs.rollout.mapping, cs.cluster_id, result)
    return result


# -- what the agent manages, and its reports ---------------------------------------------------------------
def _states(cluster: Cluster) -> list[SyncedState]:
    return list(
        SyncedState.objects.select_related(
            "mapping__cluster_group__allow_list", "mapping__repository", "commit", "cluster"
        ).filter(cluster=cluster, mapping__enabled=True).exclude(inventory=[])
    )


def managed(cluster: Cluster) -> list[dict[str, Any]]:
    """What the agent manages on its cluster: per mapping synced there, the objects applied and the
    inventory (for its drift checks and reports), whether the group self-heals, and the group's allow-list
    (``restrict``, as in Work), which the agent's self-heal applies within."""
    return [
        {
            "mapping": ports.mapping_key(state.mapping),
            "namespace": state.mapping.target_namespace or "default",
            "applied": state.applied,
            "inventory": state.inventory,
            "self_heal": bool(state.mapping.cluster_group.self_heal),
            "impersonate": ports.identity(state.mapping),
            "restrict": _restrict(state.mapping),  # a self-heal stays inside the group's allow-list
        }
        for state in _states(cluster)
    ]


def record_report(cluster: Cluster, body: dict[str, Any]) -> int:
    """The agent's report: the cluster is reachable (version, last seen; a status change is audited as a
    push check's is), and per mapping the live objects (for plans and reviews) and drift and self-heal,
    recorded and audited by the push path's own drift recording (services/drift.py). Returns how many
    mappings were taken (unknown ones are ignored)."""
    version = str(body.get("kubernetes_version") or cluster.kubernetes_version or "")
    cluster_services.record_check(cluster, Connectivity(True, version=version))
    by_key = {ports.mapping_key(s.mapping): s for s in _states(cluster)}
    now = timezone.now()
    accepted = 0
    for entry in body.get("mappings") or []:
        if not isinstance(entry, dict):
            continue
        state = by_key.get(str(entry.get("mapping") or ""))
        if state is None:
            continue
        accepted += 1
        live = entry.get("live")
        if isinstance(live, list):
            state.live, state.live_reported_at = live, now
            state.save(update_fields=["live", "live_reported_at"])
        found = entry.get("drift")
        if isinstance(found, dict):
            drift_service.record_check(state, ports.DriftOutcome(
                bool(found.get("drifted")), list(found.get("objects") or []),
                [str(e) for e in found.get("errors") or []],
            ))
        healed = entry.get("healed")
        if isinstance(healed, dict):
            drift_service.record_heal(state, not healed.get("error"), dict(healed.get("counts") or {}),
                                      str(healed.get("error") or ""))
    return accepted
