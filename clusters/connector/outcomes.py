"""How a sync's connector results are shaped for recording: one place for the push path
(``fleet.rollouts.ports``) and the pull-mode agent (``clusters.agent``), so both record the same thing.

- :func:`apply_outcome`: a :class:`~clusters.connector.results.SyncResult` as an :class:`ApplyOutcome`
  (ok, per-object results as JSON, counts, inventory, applied bodies, the first errors, transient?);
- :func:`health_refs`: which applied objects a sync waits on for health (not deleted, failed, skipped or
  hooks: hooks ran to their end inside the apply);
- :func:`health_outcome`, :func:`drift_outcome`: a HealthReport / DriftReport as plain data.

No Django, no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusters.connector.errors import RETRIABLE_STATUS
from clusters.connector.results import DriftReport, HealthReport, ObjectResult, SyncResult


@dataclass
class ApplyOutcome:
    ok: bool
    results: list[dict[str, Any]]
    counts: dict[str, int]
    inventory: list[dict[str, str]]
    applied: list[dict[str, Any]]
    error: str = ""
    transient: bool = False  # worth trying again later (unreachable, 5xx, 429)
    #: the objects' health as the apply's answers showed it (SyncResult.observed): for the health wait's
    #: first poll (``Connector.wait_healthy(observed=...)``); in memory only, never recorded
    observed: dict[Any, Any] = field(default_factory=dict, repr=False)


_TRANSPORT = (
    "connection refused",
    "connect timeout",
    "read timeout",
    "connection lost",
    "http transport error",
)


def transient(result: ObjectResult) -> bool:
    """Worth another attempt later: the server was unreachable or overloaded (5xx, 429), not a refusal."""
    status = result.status
    if status is not None:
        return status in RETRIABLE_STATUS
    return (result.message or "").lower().startswith(_TRANSPORT)


def apply_outcome(result: SyncResult) -> ApplyOutcome:
    """What a sync records of an apply: the first five failures as the error; transient when any failure
    is (one transient failure may cause others, e.g. 404s after a lost connection)."""
    failed = [r for r in result.results if r.failed]
    error = "; ".join(f"{r.ref.kind} {r.ref.name}: {r.message}" for r in failed[:5])
    return ApplyOutcome(
        ok=not failed,
        results=[r.to_dict() for r in result.results],
        counts=result.counts,
        inventory=result.inventory,
        applied=result.applied,
        error=error,
        transient=any(transient(r) for r in failed),
        observed=result.observed,
    )


def _hook(result: dict[str, Any]) -> bool:
    return bool((result.get("step") or {}).get("hook"))


def health_refs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects a successful apply waits on for health (its ``results`` as JSON)."""
    return [
        r["ref"] for r in results if r.get("action") not in ("deleted", "failed", "skipped") and not _hook(r)
    ]


@dataclass
class HealthOutcome:
    state: str  # Healthy | Progressing | Degraded | Missing
    reason: str
    detail: dict[str, Any]

    @property
    def healthy(self) -> bool:
        return self.state == "Healthy"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "detail": self.detail}


def health_outcome(report: HealthReport) -> HealthOutcome:
    return HealthOutcome(report.state, report.reason, report.to_dict())


@dataclass
class DriftOutcome:
    drifted: bool
    objects: list[dict[str, Any]]
    errors: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "objects": self.objects, "errors": self.errors}


def drift_outcome(report: DriftReport) -> DriftOutcome:
    return DriftOutcome(report.drifted, [o.to_dict() for o in report.objects], list(report.errors))
