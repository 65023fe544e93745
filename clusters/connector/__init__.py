"""Fleetgate's Kubernetes connector: one cluster, the official ``kubernetes`` client, no database.

    from clusters.connector import ClusterCredentials, Connector

    with Connector(ClusterCredentials(name="dev", server=url, token=token, ca_data=pem)) as kube:
        kube.check()                                   # Connectivity(reachable, version, error)
        plan = kube.plan(manifests, mapping="web-prod", previous_inventory=inventory)
        sync = kube.apply(manifests, mapping="web-prod", prune=True, previous_inventory=inventory)
        inventory = sync.inventory                     # store it for the next sync
        kube.wait_healthy(sync.inventory, timeout=300)  # HealthReport(state, reason, objects)
        kube.drift(sync.applied)                       # DriftReport(objects=[changed/deleted])

See docs/clusters.md.
"""

from clusters.connector.client import ConnectorOptions
from clusters.connector.connector import Connector
from clusters.connector.credentials import ClusterCredentials
from clusters.connector.errors import ApiFailure, ConnectorError, FieldConflict
from clusters.connector.objects import (
    MANAGED_BY_LABEL,
    MANAGER,
    PRUNE_ANNOTATION,
    TRACKING_ANNOTATION,
    ObjectRef,
)
from clusters.connector.results import (
    Connectivity,
    DriftReport,
    HealthReport,
    ObjectResult,
    Plan,
    PlanItem,
    SyncResult,
)
from clusters.connector.retry import RetryPolicy

__all__ = [
    "MANAGED_BY_LABEL",
    "MANAGER",
    "PRUNE_ANNOTATION",
    "TRACKING_ANNOTATION",
    "ApiFailure",
    "ClusterCredentials",
    "Connectivity",
    "Connector",
    "ConnectorError",
    "ConnectorOptions",
    "DriftReport",
    "FieldConflict",
    "HealthReport",
    "ObjectRef",
    "ObjectResult",
    "Plan",
    "PlanItem",
    "RetryPolicy",
    "SyncResult",
]
