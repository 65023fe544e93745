"""Django-side cluster services: credentials from the model, connectivity checks written to the Cluster.

The connector (clusters.connector) is database-free; these functions are the bridge that views, admin
actions, management commands and Celery tasks call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clusters.choices import ClusterStatus, ConnectionMode
from clusters.connector import ClusterCredentials, Connectivity, Connector, ConnectorOptions
from clusters.connector.errors import scrub
from clusters.models import Cluster
from fleet.audit.services import record
from fleet.core import urlguard

log = logging.getLogger(__name__)


def credentials_from_cluster(cluster: Cluster) -> ClusterCredentials:
    """The connector's view of a Cluster's credentials (decrypted in memory only)."""
    return ClusterCredentials(
        name=cluster.name,
        server=cluster.api_url,
        auth_method=cluster.auth_method,
        token=cluster.token or "",
        client_certificate=cluster.client_certificate or "",
        client_key=cluster.client_key or "",
        ca_data=cluster.ca_data or "",
        insecure_skip_tls_verify=cluster.insecure_skip_tls_verify,
        kubeconfig=cluster.kubeconfig or "",
        kubeconfig_context=cluster.kubeconfig_context or "",
    )


def connector_options(**overrides: Any) -> ConnectorOptions:
    """Options from settings (optional): FLEETGATE_KUBE_CONNECT_TIMEOUT, FLEETGATE_KUBE_READ_TIMEOUT,
    FLEETGATE_KUBE_DISCOVERY_CACHE_DIR (default: a temporary directory per connector),
    FLEETGATE_KUBE_SHARED_DISCOVERY (Kubernetes' own groups discovered once per server version)."""
    values: dict[str, Any] = {
        "connect_timeout": float(getattr(settings, "FLEETGATE_KUBE_CONNECT_TIMEOUT", 5.0)),
        "read_timeout": float(getattr(settings, "FLEETGATE_KUBE_READ_TIMEOUT", 30.0)),
        "cache_dir": getattr(settings, "FLEETGATE_KUBE_DISCOVERY_CACHE_DIR", None) or None,
        "shared_discovery": bool(getattr(settings, "FLEETGATE_KUBE_SHARED_DISCOVERY", True)),
        "deny_networks": urlguard.deny_networks(),
    }
    values.update(overrides)
    return ConnectorOptions(**values)


def connector_for(cluster: Cluster, **options: Any) -> Connector:
    """A Connector for the cluster; use it as a context manager."""
    return Connector(credentials_from_cluster(cluster), connector_options(**options))


def probe(cluster: Cluster, **options: Any) -> Connectivity:
    """Contact the cluster (no database access); the error text never carries a credential."""
    creds = credentials_from_cluster(cluster)
    try:
        with Connector(creds, connector_options(**options)) as kube:
            result = kube.check()
    except Exception as exc:  # bad credentials that cannot even build a client (kubeconfig, key)
        result = Connectivity(False, error=f"{type(exc).__name__}: {exc}")
    result.error = scrub(result.error, creds.secrets())
    return result


@dataclass
class CheckOutcome:
    cluster_id: int
    name: str
    reachable: bool
    status: str
    version: str
    error: str
    changed: bool


def record_check(cluster: Cluster, result: Connectivity, *, audit_always: str = "") -> CheckOutcome:
    """Write a probe's result into the Cluster; audit a status change (or every check: ``audit_always``)."""
    # A queryset update: no post_save signal (group membership does not depend on status), no `updated`.
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        before = {"status": locked.status, "kubernetes_version": locked.kubernetes_version}
        if result.reachable:
            values: dict[str, Any] = {
                "status": ClusterStatus.REACHABLE,
                "kubernetes_version": result.version[:64],
                "last_seen": timezone.now(),
                "last_error": "",
            }
        else:
            values = {"status": ClusterStatus.UNREACHABLE, "last_error": result.error[:2000]}
        Cluster.objects.filter(pk=locked.pk).update(**values)
        for name, value in values.items():
            setattr(locked, name, value)
        after = {"status": locked.status, "kubernetes_version": locked.kubernetes_version}
        changed = before["status"] != locked.status
        message = (
            f"reachable, Kubernetes {result.version}" if result.reachable else f"unreachable: {result.error}"
        )
        if audit_always:
            record(audit_always, locked, before=before, after=after, message=message[:500])
        elif changed:
            record("cluster.status_change", locked, before=before, after=after, message=message[:500])
    for name in ("status", "kubernetes_version", "last_seen", "last_error"):
        setattr(cluster, name, getattr(locked, name))
    return CheckOutcome(
        locked.pk,
        locked.name,
        result.reachable,
        locked.status,
        locked.kubernetes_version,
        locked.last_error,
        changed,
    )


def agent_silence() -> timedelta:
    """How long a pull-mode cluster's agent may stay silent before the cluster is unreachable."""
    return timedelta(seconds=3 * max(int(settings.FLEETGATE_AGENT_REPORT_INTERVAL),
                                     int(settings.FLEETGATE_AGENT_POLL_WAIT)))


def agent_outcome(cluster: Cluster) -> CheckOutcome:
    """A pull-mode cluster is never probed (Fleetgate holds no credential and may not reach it): its status
    comes from its agent's reports. A cluster whose agent has been silent for three report intervals
    becomes unreachable (audited as a status change)."""
    seen = cluster.agent_seen
    silent = seen is None or timezone.now() - seen > agent_silence()
    if silent and cluster.status == ClusterStatus.REACHABLE:
        why = "pull mode: the agent has not called since " + (seen.isoformat() if seen else "it was set up")
        return record_check(cluster, Connectivity(False, error=why))
    return CheckOutcome(cluster.pk, cluster.name, cluster.status == ClusterStatus.REACHABLE, cluster.status,
                        cluster.kubernetes_version, cluster.last_error, False)


def check_cluster(cluster: Cluster, **options: Any) -> CheckOutcome:
    """Probe one cluster and record status, version, last_seen and last_error (audited on status change).
    A pull-mode cluster is not probed: see :func:`agent_outcome`."""
    if cluster.connection_mode == ConnectionMode.PULL:
        return agent_outcome(cluster)
    return record_check(cluster, probe(cluster, **options))


def test_connection(cluster: Cluster, **options: Any) -> CheckOutcome:
    """A person's "test connection": like check_cluster, and always audited as ``cluster.test``. A pull-mode
    cluster answers from its agent's last report (Fleetgate does not contact it)."""
    if cluster.connection_mode == ConnectionMode.PULL:
        outcome = agent_outcome(cluster)
        if not outcome.reachable and not outcome.error:
            seen = cluster.agent_seen
            outcome.error = (f"pull mode: the agent last called at {seen.isoformat()}" if seen
                             else "pull mode: no report from the cluster's agent yet")
        return outcome
    return record_check(cluster, probe(cluster, **options), audit_always="cluster.test")


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def check_clusters(
    clusters: Iterable[Cluster] | None = None, workers: int = 8, **options: Any
) -> list[CheckOutcome]:
    """Probe many clusters concurrently (network only in threads), then record each in this thread. Pull-mode
    clusters are not probed; one whose agent went silent is marked unreachable (:func:`agent_outcome`)."""
    every = list(clusters if clusters is not None else Cluster.objects.all())
    chosen = [c for c in every if c.connection_mode != ConnectionMode.PULL]
    pulled = [agent_outcome(c) for c in every if c.connection_mode == ConnectionMode.PULL]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda c: probe(c, **options), chosen))
    outcomes = []
    for cluster, result in zip(chosen, results, strict=True):
        try:
            outcomes.append(record_check(cluster, result))
        except Cluster.DoesNotExist:  # deleted while it was being probed
            continue
    return outcomes + pulled


# -- sandbox registration ------------------------------------------------------------------------------
DEFAULT_SANDBOX_LABELS: dict[str, list[str]] = {"env": ["dev", "staging", "prod"], "region": ["eu", "us"]}


def parse_label_spec(items: Iterable[str]) -> dict[str, list[str]]:
    """``["env=dev,staging,prod", "region=eu,us"]`` -> ``{"env": [...], "region": [...]}``."""
    spec: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not choices:
            raise ValueError(f"labels must look like key=value1,value2 (got {item!r})")
        spec[key.strip()] = choices
    return spec


def spread_labels(count: int, spec: dict[str, list[str]] | None = None) -> list[dict[str, str]]:
    """Labels for ``count`` clusters so that every combination appears before any repeats: the first key
    varies fastest (dev, staging, prod, dev...), the next one once per full cycle of the first, and so on."""
    spec = DEFAULT_SANDBOX_LABELS if spec is None else spec
    out = []
    for i in range(count):
        labels, stride = {}, 1
        for key, values in spec.items():
            labels[key] = values[(i // stride) % len(values)]
            stride *= len(values)
        out.append(labels)
    return out


@dataclass(frozen=True)
class SandboxEntry:
    name: str
    url: str
    token: str
    ca_data: str = ""


def _saver(cluster: Cluster) -> Callable[[], Cluster]:
    def save() -> Cluster:
        cluster.save()
        return cluster

    return save


def register_sandbox_clusters(
    entries: list[SandboxEntry], labels: list[dict[str, str]] | None = None, relabel: bool = True
) -> list[tuple[Cluster, bool]]:
    """Create or update one token-authenticated Cluster per sandbox cluster (audited); returns
    (cluster, created) pairs. Existing rows of the same name get the new URL, token and CA, and the
    labels only with ``relabel`` (so labels edited since are kept)."""
    from fleet.access.writes import save_in_scope
    from fleet.audit.redact import snapshot

    out = []
    for i, entry in enumerate(entries):
        wanted = labels[i] if labels and i < len(labels) else {}
        with transaction.atomic():
            cluster = Cluster.objects.filter(name=entry.name).first()
            created = cluster is None
            before = None if cluster is None else snapshot(cluster)
            if cluster is None:
                cluster = Cluster(name=entry.name, description="Fleetgate sandbox cluster")
            cluster.api_url = entry.url
            cluster.auth_method = "token"
            cluster.token = entry.token
            cluster.ca_data = entry.ca_data
            cluster.insecure_skip_tls_verify = False
            if created or relabel:
                cluster.labels = {**(cluster.labels or {}), **wanted}
            cluster.full_clean()
            # The one audited save (a system write: no user, no scope check; membership follows labels).
            save_in_scope(None, _saver(cluster), before=before, creating=created)
        out.append((cluster, created))
    return out
