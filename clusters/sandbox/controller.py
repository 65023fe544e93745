"""A cheap workload controller: one timer thread per server fills in workload status after a delay."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .objects import now

log = logging.getLogger(__name__)

FAIL_ANNOTATION = "sandbox.fleetgate.io/fail"
NEVER_READY_ANNOTATION = "sandbox.fleetgate.io/never-ready"
MANAGER = "kube-controller-manager"


class Timer:
    """One thread running callbacks at their due time (a heap, not a thread per object)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopped = False
            self._thread = threading.Thread(target=self._run, name="sandbox-controller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                log.exception("sandbox controller callback failed")


def _flag(obj: dict[str, Any], annotation: str) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(annotation, "").lower() == "true"


def _condition(
    ctype: str, status: str, reason: str, message: str, old: dict[str, Any] | None, update_time: bool = True
) -> dict[str, Any]:
    prior = {c.get("type"): c for c in (old or {}).get("conditions") or []}.get(ctype) or {}
    same = prior.get("status") == status
    ts = now()
    cond: dict[str, Any] = {"type": ctype, "status": status}
    if update_time:
        cond["lastUpdateTime"] = (
            prior.get("lastUpdateTime", ts) if same and prior.get("reason") == reason else ts
        )
    cond["lastTransitionTime"] = prior.get("lastTransitionTime", ts) if same else ts
    cond["reason"] = reason
    cond["message"] = message
    return cond


def _count(value: Any, default: int) -> int:
    """An integer spec field; without schema validation it may hold anything, which must not crash the
    controller (the write that stored it would answer 500)."""
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _nonzero(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}


def template_hash(obj: dict[str, Any]) -> str:
    text = json.dumps((obj.get("spec") or {}).get("template") or {}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def workload_status(obj: dict[str, Any], fail: bool, never_ready: bool, nodes: int) -> dict[str, Any]:
    """The status a settled controller would write for a Deployment, StatefulSet, DaemonSet or Job."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    old = obj.get("status") or {}
    gen = obj["metadata"].get("generation", 1)
    name = obj["metadata"]["name"]
    fail = fail or _flag(obj, FAIL_ANNOTATION)
    never_ready = never_ready or _flag(obj, NEVER_READY_ANNOTATION)
    if kind == "Job":
        return _job_status(spec, old, fail, never_ready)
    desired = nodes if kind == "DaemonSet" else _count(spec.get("replicas", 1), 0)
    ready = 0 if (fail or never_ready) else desired
    rs = f"{name}-{template_hash(obj)}"
    if fail:
        progressing = _condition(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            f'ReplicaSet "{rs}" has timed out progressing.',
            old,
        )
    elif never_ready:
        progressing = _condition(
            "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs}" is progressing.', old
        )
    else:
        progressing = _condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs}" has successfully progressed.',
            old,
        )
    if ready >= desired:
        available = _condition(
            "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", old
        )
    else:
        available = _condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            old,
        )
    conditions = [available, progressing]
    if kind == "DaemonSet":
        status = _nonzero(
            {
                "observedGeneration": gen,
                "currentNumberScheduled": desired,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": desired,
                "numberReady": ready,
                "updatedNumberScheduled": desired,
                "numberAvailable": ready,
                "numberUnavailable": desired - ready,
            }
        )
    elif kind == "StatefulSet":
        status = _nonzero(
            {
                "observedGeneration": gen,
                "replicas": desired,
                "readyReplicas": ready,
                "currentReplicas": desired,
                "updatedReplicas": desired,
                "availableReplicas": ready,
            }
        )
        status["currentRevision"] = status["updateRevision"] = rs
        status["collisionCount"] = 0
    else:
        status = _nonzero(
            {
                "observedGeneration": gen,
                "replicas": desired,
                "updatedReplicas": desired,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": desired - ready,
            }
        )
    status["conditions"] = conditions
    return status


def _job_status(spec: dict[str, Any], old: dict[str, Any], fail: bool, never_ready: bool) -> dict[str, Any]:
    ts = now()
    start = old.get("startTime", ts)
    if never_ready:
        return {
            "startTime": start,
            "active": _count(spec.get("parallelism", 1), 1) or 1,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        }
    if fail:
        return {
            "startTime": start,
            "failed": _count(spec.get("backoffLimit", 6), 6) + 1,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "conditions": [
                _condition(
                    "FailureTarget",
                    "True",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    old,
                    update_time=False,
                ),
                _condition(
                    "Failed",
                    "True",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    old,
                    update_time=False,
                ),
            ],
        }
    return {
        "startTime": start,
        "completionTime": old.get("completionTime", ts),
        "succeeded": _count(spec.get("completions", 1), 1) or 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            _condition(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                old,
                update_time=False,
            ),
            _condition(
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                old,
                update_time=False,
            ),
        ],
    }
