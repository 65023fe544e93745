"""State read from the database (and the broker) when ``/metrics`` is scraped, so that the numbers are the
same whichever process serves the scrape. A fixed number of queries, whatever the size of the fleet: each
family is one aggregate (``tests/observability/test_metrics.py`` counts them)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.db.models import Count, Max
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

BROKER_TIMEOUT = 3.0  # seconds to connect to the broker for the queue lengths


def _counts(queryset: Any, field: str, known: list[str]) -> dict[str, int]:
    """``{value: rows}`` of ``field`` with every known value present (0 when none)."""
    counts = dict.fromkeys(known, 0)
    for row in queryset.order_by().values(field).annotate(n=Count("pk")):
        counts[str(row[field])] = row["n"]
    return counts


def rollouts_by_state() -> dict[str, int]:
    from fleet.rollouts.choices import RolloutState
    from fleet.rollouts.models import Rollout

    return _counts(Rollout.objects.all(), "state", list(RolloutState.values))


def clusters_by_reachability() -> dict[str, int]:
    from clusters.choices import ClusterStatus
    from clusters.models import Cluster

    return _counts(Cluster.objects.all(), "status", list(ClusterStatus.values))


def clusters_by_drift() -> dict[str, int]:
    """Clusters with at least one synced mapping in each drift status (a cluster may count in several)."""
    from fleet.rollouts.choices import DriftStatus
    from fleet.rollouts.models import SyncedState

    counts = dict.fromkeys(DriftStatus.values, 0)
    rows = SyncedState.objects.order_by().values("drift_status").annotate(n=Count("cluster", distinct=True))
    for row in rows:
        counts[str(row["drift_status"])] = row["n"]
    return counts


def policies_blocking() -> int:
    """Policies with an unwaived deny violation in the latest evaluation of some (mapping, cluster)."""
    from policies.choices import Enforcement
    from policies.models import Evaluation, Violation

    latest = Evaluation.objects.order_by().values("mapping_id", "cluster_id").annotate(last=Max("id"))
    return int(
        Violation.objects.order_by()
        .filter(evaluation_id__in=latest.values("last"), enforcement=Enforcement.DENY, waived_by__isnull=True)
        .aggregate(n=Count("policy_name", distinct=True))["n"]
        or 0
    )


def audit_chain_length() -> int:
    """Events appended to the audit log so far, in one query: the head's sequence number (archived events
    included) and the events recorded but not sealed into the chain yet."""
    from django.db import connection

    from fleet.audit.models import AuditChainHead, AuditEvent

    quote = connection.ops.quote_name
    events, head, sequence = (
        quote(AuditEvent._meta.db_table),
        quote(AuditChainHead._meta.db_table),
        quote("sequence"),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT COUNT(*) FROM {events} WHERE {sequence} IS NULL)"  # noqa: S608 (quoted names)
            f" + COALESCE((SELECT {sequence} FROM {head} WHERE {quote('id')} = 1), 0)"
        )
        return int(cursor.fetchone()[0])


def queue_lengths() -> dict[str, int] | None:
    """Messages waiting in each queue the Celery app consumes, as the broker's transport counts them (Redis:
    LLEN of the queue's lists, one per priority; the embedded SQLite broker: its visible message rows;
    RabbitMQ: the queue's message count). None when the broker cannot be reached."""
    from fleet.celery import app

    names = sorted(app.amqp.queues.keys()) or [app.conf.task_default_queue]
    lengths: dict[str, int] = {}
    try:
        with app.connection_for_read(connect_timeout=BROKER_TIMEOUT) as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT
            )
            for name in names:
                # A channel per queue: a passive declare of a missing queue closes its channel (AMQP).
                with connection.channel() as channel:
                    try:
                        lengths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                    except connection.channel_errors:
                        lengths[name] = 0  # not declared yet, or (Redis) an empty queue has no list
    except Exception as exc:  # the broker is down: say so, do not fail the scrape
        log.warning("metrics: queue lengths unavailable: %s", type(exc).__name__)
        return None
    return lengths


class FleetStateCollector(Collector):
    """Gauges computed at scrape time from the database and the broker."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield _labelled("fleetgate_rollouts", "Rollouts by state.", "state", rollouts_by_state())
        yield _labelled(
            "fleetgate_clusters",
            "Registered clusters by reachability.",
            "reachability",
            clusters_by_reachability(),
        )
        yield _labelled(
            "fleetgate_clusters_by_drift",
            "Clusters with at least one synced mapping in each drift status.",
            "drift",
            clusters_by_drift(),
        )
        yield GaugeMetricFamily(
            "fleetgate_policies_blocking",
            "Policies with an unwaived deny violation in the latest evaluation of a mapping on a cluster.",
            value=policies_blocking(),
        )
        yield GaugeMetricFamily(
            "fleetgate_audit_chain_length",
            "Events appended to the audit hash chain.",
            value=audit_chain_length(),
        )
        lengths = queue_lengths()
        yield GaugeMetricFamily(
            "fleetgate_broker_up",
            "1 when the Celery broker answered this scrape.",
            value=int(lengths is not None),
        )
        yield _labelled(
            "fleetgate_celery_queue_length", "Tasks waiting in each Celery queue.", "queue", lengths or {}
        )


def _labelled(name: str, documentation: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], count)
    return family
