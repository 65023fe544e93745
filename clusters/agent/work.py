"""One Work item: check its digest, apply it with the connector exactly as the push path does
(``fleet.rollouts.services.sync.run_cluster_sync`` through ``fleet.rollouts.ports``: ordered server-side
apply with force, the mapping's prune, the group's allow-list and impersonation, then the health wait on
what was applied), heartbeat while working, and report the result once.

A digest mismatch applies nothing and reports ``ok: false``. A lost lease (409 on a heartbeat) means
another attempt owns the leg: the agent stops and reports nothing. A 409 on the result is the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from clusters.agent.backoff import Backoff
from clusters.agent.client import AgentClient, ApiError, Conflict, Unauthorized, Unreachable, retrying
from clusters.agent.digest import digest_matches, work_digest
from clusters.agent.kube import KubeAccess
from clusters.connector.errors import describe, is_retriable
from clusters.connector.outcomes import (
    ApplyOutcome,
    HealthOutcome,
    apply_outcome,
    health_outcome,
    health_refs,
)

log = logging.getLogger("fleetgate.agent")


def restrict_rules(data: Any) -> Any:
    """The Work's ``restrict`` (a group allow-list as JSON: the fields of ``clusters.allowlist.Rules``,
    lists for tuples) as ``Rules``, or None when unrestricted."""
    if not data:
        return None
    from dataclasses import fields

    from clusters.allowlist import Rules

    if not isinstance(data, dict):
        raise ValueError("restrict is not an object")

    def tup(value: Any) -> Any:
        return tuple(tup(v) for v in value) if isinstance(value, list | tuple) else value

    known = {f.name for f in fields(Rules)}
    return Rules(**{k: tup(v) for k, v in data.items() if k in known})


class Heartbeat(threading.Thread):
    """Extends the leg's lease every ``lease_seconds / 3`` while the work runs. A 409 sets ``lost``; an
    unreachable Fleetgate is tried again at the next beat (the lease is what protects the leg)."""

    def __init__(
        self,
        client: AgentClient,
        token: Callable[[], str],
        work_id: int,
        attempt: int,
        lease_seconds: float,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{work_id}")
        self.client, self.token = client, token
        self.work_id, self.attempt = work_id, attempt
        self.interval = max(1.0, float(lease_seconds or 60) / 3)
        self.on_beat = on_beat
        self.stopped = threading.Event()
        self.lost = threading.Event()
        self.unauthorized = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                answer = self.client.heartbeat(self.token(), self.work_id, self.attempt)
                if answer.get("lease_seconds"):
                    self.interval = max(1.0, float(answer["lease_seconds"]) / 3)
            except Conflict as exc:
                log.warning(
                    "lease lost: another attempt owns this work; it will not be reported",
                    extra={
                        "event": "work.lease_lost",
                        "work": self.work_id,
                        "attempt": self.attempt,
                        "error": str(exc),
                    },
                )
                self.lost.set()
                return
            except Unauthorized as exc:
                log.error(
                    "heartbeat refused: the agent credential is not accepted",
                    extra={"event": "agent.unauthorized", "work": self.work_id, "error": str(exc)},
                )
                self.unauthorized.set()
                return
            except Exception as exc:
                log.warning(
                    "heartbeat failed; trying again at the next beat",
                    extra={"event": "work.heartbeat_failed", "work": self.work_id, "error": str(exc)},
                )
            if self.on_beat is not None:
                self.on_beat()

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=10)


def execute(
    kube: KubeAccess, work: dict[str, Any]
) -> tuple[ApplyOutcome | None, HealthOutcome | None, str, bool]:
    """Apply one Work (digest already checked) as the push path does; returns (outcome, health, error,
    transient) exactly as ``run_cluster_sync`` shapes them."""
    outcome: ApplyOutcome | None = None
    health: HealthOutcome | None = None
    error, transient = "", False
    impersonate = str(work.get("impersonate") or "")
    try:
        with kube.connect(impersonate) as connector:
            result = connector.apply(
                list(work.get("objects") or []),
                mapping=str(work["mapping"]),
                default_namespace=str(work.get("namespace") or "default"),
                prune=bool(work.get("prune")),
                previous_inventory=list(work.get("inventory") or []),
                force=True,
                restrict=restrict_rules(work.get("restrict")),
                wave_timeout=_float(work.get("wave_timeout")),
            )
        outcome = apply_outcome(result)
        if not outcome.ok:
            error, transient = outcome.error or "apply failed", outcome.transient
        else:
            # hooks ran to their end inside the apply (and may be deleted by their policy): not waited for
            refs = health_refs(outcome.results)
            with kube.connect() as connector:  # the push path waits with the cluster's own credentials too
                report = connector.wait_healthy(
                    refs, timeout=_float(work.get("health_timeout")) or 300.0, observed=outcome.observed
                )
            health = health_outcome(report)
            if not health.healthy:
                error = f"not healthy: {health.reason or health.state}"
    except Exception as exc:
        creds = kube.credentials()
        error = describe(exc, creds.server, creds.secrets()).message[:2000] or type(exc).__name__
        transient = is_retriable(exc)
    return outcome, health, error, transient


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def result_body(
    work: dict[str, Any],
    outcome: ApplyOutcome | None,
    health: HealthOutcome | None,
    error: str,
    transient: bool,
) -> dict[str, Any]:
    """The ``POST work/<id>/result`` body."""
    return {
        "attempt": work.get("attempt"),
        "digest": work.get("digest"),
        "ok": not error,
        "results": outcome.results if outcome else [],
        "counts": outcome.counts if outcome else {},
        "inventory": outcome.inventory if outcome else [],
        "applied": outcome.applied if outcome else [],
        "error": error,
        "transient": transient,
        "health": health.to_dict() if health else None,
    }


def digest_error(work: dict[str, Any]) -> str:
    """'' when the Work's digest matches its content, else why it does not (nothing is applied)."""
    objects, inventory = work.get("objects"), work.get("inventory")
    if not isinstance(objects, list) or not isinstance(inventory, list):
        return "digest mismatch: the work's objects or inventory are not lists; nothing was applied"
    prune = work.get("prune")
    if not isinstance(prune, bool):
        return "digest mismatch: the work's prune flag is not a boolean; nothing was applied"
    expected = str(work.get("digest") or "")
    if digest_matches(expected, objects, inventory, prune):
        return ""
    return (
        f"digest mismatch: the work says {expected[:80] or 'nothing'} but its content hashes to "
        f"{work_digest(objects, inventory, prune)}; nothing was applied"
    )


class WorkRunner:
    """Runs Work items for the agent's loop."""

    def __init__(
        self,
        client: AgentClient,
        kube: KubeAccess,
        token: Callable[[], str],
        stop: threading.Event,
        backoff: Callable[[], Backoff],
        on_beat: Callable[[], None] | None = None,
        result_attempts: int = 0,
    ) -> None:
        self.client, self.kube, self.token = client, kube, token
        self.stop, self.backoff, self.on_beat = stop, backoff, on_beat
        self.result_attempts = result_attempts

    def run(self, work: dict[str, Any]) -> str:
        """Process one Work; returns what was recorded ('synced', 'failed', 'retrying'), 'lost' (409: not
        reported) or 'unreported' (Fleetgate could not be told; the lease will expire and it is requeued).
        Raises Unauthorized when the credential is refused."""
        work_id, attempt = int(work["id"]), int(work.get("attempt") or 0)
        ctx = {
            "work": work_id,
            "attempt": attempt,
            "mapping": work.get("mapping"),
            "rollout": work.get("rollout"),
        }
        log.info(
            "work received",
            extra={"event": "work.received", **ctx, "objects": len(work.get("objects") or [])},
        )
        mismatch = digest_error(work)
        if mismatch:
            log.error(
                "work refused: digest mismatch, nothing applied",
                extra={"event": "work.digest_mismatch", **ctx, "error": mismatch},
            )
            return self._report(work, result_body(work, None, None, mismatch, False), ctx)
        heartbeat = Heartbeat(
            self.client, self.token, work_id, attempt, float(work.get("lease_seconds") or 60), self.on_beat
        )
        heartbeat.start()
        try:
            outcome, health, error, transient = execute(self.kube, work)
        finally:
            heartbeat.stop()
        if heartbeat.unauthorized.is_set():
            raise Unauthorized("the agent credential was refused during a heartbeat", 401)
        if heartbeat.lost.is_set():
            return "lost"
        log.info(
            "work applied" if not error else "work failed",
            extra={
                "event": "work.applied" if not error else "work.failed",
                **ctx,
                "counts": outcome.counts if outcome else {},
                "health": health.state if health else "",
                "error": error,
                "transient": transient,
            },
        )
        return self._report(work, result_body(work, outcome, health, error, transient), ctx)

    def _report(self, work: dict[str, Any], body: dict[str, Any], ctx: dict[str, Any]) -> str:
        try:
            answer = retrying(
                lambda: self.client.result(self.token(), int(work["id"]), body),
                "work result",
                backoff=self.backoff(),
                stop=self.stop,
                attempts=self.result_attempts,
            )
        except Unauthorized:
            raise
        except Conflict as exc:
            log.warning(
                "result not recorded: another attempt owns this work",
                extra={"event": "work.lease_lost", **ctx, "error": str(exc)},
            )
            return "lost"
        except ApiError as exc:
            log.error(
                "result refused by Fleetgate",
                extra={"event": "work.result_refused", **ctx, "error": str(exc)},
            )
            return "refused"
        except Unreachable as exc:
            log.error(
                "result could not be reported; the lease will expire and the work is handed out again",
                extra={"event": "work.unreported", **ctx, "error": str(exc)},
            )
            return "unreported"
        recorded = str(answer.get("recorded") or "")
        log.info("result recorded", extra={"event": "work.reported", **ctx, "recorded": recorded})
        return recorded
