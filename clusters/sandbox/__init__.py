"""Fleetgate's Kubernetes API sandbox: many virtual clusters behind one HTTP(S) server on 127.0.0.1.

It speaks the real Kubernetes REST API (discovery, CRUD, server-side apply with field managers and
conflicts, merge/strategic/JSON patches, list with selectors, watch, status subresource, Status errors),
so the official ``kubernetes`` client and ``kubectl`` work against it. See README.md in this directory.

    from clusters.sandbox import SandboxServer

    with SandboxServer() as server:
        cluster = server.add_cluster("dev", token="secret", rollout_delay=0)
        cluster.url            # http://127.0.0.1:PORT/clusters/dev
        cluster.faults.fail_next(2, 503)
"""

from .controller import FAIL_ANNOTATION, NEVER_READY_ANNOTATION
from .errors import ApiError
from .faults import Faults
from .server import ClusterSettings, SandboxCluster, SandboxServer

__all__ = [
    "FAIL_ANNOTATION",
    "NEVER_READY_ANNOTATION",
    "ApiError",
    "ClusterSettings",
    "Faults",
    "SandboxCluster",
    "SandboxServer",
]
