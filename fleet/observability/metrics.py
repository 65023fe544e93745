"""Fleetgate's event metrics: counted where the event happens, in whichever process it happens (web,
Celery worker), and added up across processes by ``/metrics`` (prometheus_client's multiprocess mode, see
``fleet.observability.multiproc``). State that lives in the database (rollouts by state, clusters, queues)
is not counted here but read when scraped (``fleet.observability.collector``).

Label values are bounded: results and outcomes come from the code's own enumerations (passed on as strings,
so that a new outcome shows up without a change here), engine names from the engine, never user input."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

# Seconds: a sync applies and waits for health (up to the group's health timeout); the gate evaluates
# policies x objects in milliseconds to seconds (timeout FLEETGATE_REGO_TIMEOUT).
SYNC_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
GATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

CLUSTER_SYNCS = Counter(
    "fleetgate_cluster_syncs",
    "Attempts of one rollout's sync on one cluster, by result (synced, failed, retrying, lost).",
    ["result"],
)
CLUSTER_SYNC_SECONDS = Histogram(
    "fleetgate_cluster_sync_duration_seconds",
    "Duration of one sync attempt on one cluster (apply, prune, wait for health), by result.",
    ["result"],
    buckets=SYNC_BUCKETS,
)
GATE_DECISIONS = Counter(
    "fleetgate_gate_decisions",
    "Policy gate decisions for one target (a mapping on a cluster), by outcome and Rego engine.",
    ["outcome", "engine"],
)
GATE_SECONDS = Histogram(
    "fleetgate_gate_evaluation_duration_seconds",
    "Time the gate took to evaluate one target's objects against its bound policies, by Rego engine.",
    ["engine"],
    buckets=GATE_BUCKETS,
)
GATE_FINDINGS = Counter(
    "fleetgate_gate_findings",
    "Policy findings of stored gate decisions, by policy language (Rego/conftest, Rego/Gatekeeper, "
    "VAP (CEL), Kyverno) and effect (deny, warn, dryrun, waived, error).",
    ["language", "effect"],
)
WEBHOOK_DELIVERIES = Counter(
    "fleetgate_webhook_deliveries",
    "Git webhook deliveries received, by result (queued, ping, ignored, rejected, not_found, throttled, "
    "error) and HTTP status answered.",
    ["result", "code"],
)
AUDIT_VERIFICATIONS = Counter(
    "fleetgate_audit_verifications",
    "Verifications of the audit hash chain, by result (ok, broken).",
    ["result"],
)
# The most recent verification of any process (kept when that process ends).
AUDIT_LAST_VERIFICATION_TIME = Gauge(
    "fleetgate_audit_last_verification_timestamp_seconds",
    "When the audit chain was last verified (Unix time).",
    multiprocess_mode="mostrecent",
)
AUDIT_LAST_VERIFICATION_OK = Gauge(
    "fleetgate_audit_last_verification_ok",
    "1 when the last verification of the audit chain found it intact, 0 when it found it broken.",
    multiprocess_mode="mostrecent",
)


def cluster_sync(result: str, seconds: float) -> None:
    CLUSTER_SYNCS.labels(result=result).inc()
    CLUSTER_SYNC_SECONDS.labels(result=result).observe(seconds)


def gate_decision(outcome: str, engine: str, seconds: float) -> None:
    engine = engine or "none"
    GATE_DECISIONS.labels(outcome=outcome, engine=engine).inc()
    GATE_SECONDS.labels(engine=engine).observe(seconds)


def gate_findings(language: str, effect: str, count: int = 1) -> None:
    GATE_FINDINGS.labels(language=language or "unknown", effect=effect).inc(count)


def webhook_delivery(result: str, code: int) -> None:
    WEBHOOK_DELIVERIES.labels(result=result, code=str(code)).inc()


def audit_verification(ok: bool) -> None:
    AUDIT_VERIFICATIONS.labels(result="ok" if ok else "broken").inc()
    AUDIT_LAST_VERIFICATION_TIME.set(time.time())
    AUDIT_LAST_VERIFICATION_OK.set(1 if ok else 0)
