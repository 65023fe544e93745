"""The agent's access to its own cluster: in-cluster service account or a kubeconfig, and the connectors
built from it (the same ``clusters.connector.Connector`` the push path uses).

In-cluster: the token and CA under ``/var/run/secrets/kubernetes.io/serviceaccount`` and the API server
from ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``. The token file is read again for every new
connector, so a rotated (projected) service account token is picked up.
Kubeconfig: parsed by ``clusters.kubeconfig`` (one context, inline credentials only: no exec plugins).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clusters.connector import ClusterCredentials, Connector, ConnectorOptions, RetryPolicy
from clusters.connector.credentials import KUBECONFIG, TOKEN

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubeAccessError(Exception):
    """The agent cannot tell how to reach its cluster."""


class NotInCluster(KubeAccessError):
    """Neither a kubeconfig was given nor does the process run in a pod."""


def in_cluster_credentials(
    sa_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
) -> ClusterCredentials:
    """The pod's service account credentials. Raises NotInCluster when the environment or the files
    are missing."""
    environ = os.environ if environ is None else environ
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "") or "443"
    root = Path(sa_dir)
    token_file, ca_file = root / "token", root / "ca.crt"
    if not host:
        raise NotInCluster("KUBERNETES_SERVICE_HOST is not set: not running in a pod (give --kubeconfig)")
    try:
        token = token_file.read_text().strip()
    except OSError:
        raise NotInCluster(f"no service account token at {token_file} (give --kubeconfig)") from None
    if not token:
        raise NotInCluster(f"the service account token at {token_file} is empty")
    try:
        ca = ca_file.read_text()
    except OSError:
        raise NotInCluster(f"no service account CA at {ca_file}") from None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return ClusterCredentials(
        name="in-cluster", server=f"https://{host}:{port}", auth_method=TOKEN, token=token, ca_data=ca
    )


def in_cluster_namespace(sa_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR) -> str:
    """The pod's namespace (from the service account's ``namespace`` file), or '' when unknown."""
    try:
        return (Path(sa_dir) / "namespace").read_text().strip()
    except OSError:
        return ""


def kubeconfig_credentials(path: str, context: str = "") -> ClusterCredentials:
    """The credentials of ``context`` (or the current one) in the kubeconfig file at ``path``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KubeAccessError(f"cannot read the kubeconfig {path}: {exc.strerror}") from None
    creds = ClusterCredentials(
        name=context or "kubeconfig", auth_method=KUBECONFIG, kubeconfig=text, kubeconfig_context=context
    )
    try:
        return creds.resolved()
    except ValueError as exc:
        raise KubeAccessError(f"the kubeconfig {path} cannot be used: {exc}") from None


def agent_connector_options(cache_dir: str | None = None) -> ConnectorOptions:
    """The connector options of the agent: the push path's retry policy per request (3 tries, 0.2 s apart
    and doubling, 30 s at most) and no network deny-list (the agent reaches only its own API server, which
    in a pod may be any address)."""
    return ConnectorOptions(
        retry=RetryPolicy(attempts=3, base_delay=0.2, deadline=30.0),
        cache_dir=cache_dir,
        deny_networks=(),
    )


class KubeAccess:
    """Connectors for the agent's cluster, reused while the credentials stay the same (keyed by them and
    the impersonated user), as ``fleet.rollouts.ports.connect`` reuses them per process."""

    def __init__(self, source: Callable[[], ClusterCredentials], options: ConnectorOptions) -> None:
        self.source = source
        self.options = options
        self._lock = threading.Lock()
        self._connectors: dict[tuple[str, str], Connector] = {}

    def credentials(self, impersonate: str = "") -> ClusterCredentials:
        creds = self.source()
        if impersonate:
            creds = dataclasses.replace(creds, impersonate=impersonate)
        return creds

    @contextmanager
    def connect(self, impersonate: str = "") -> Iterator[Connector]:
        creds = self.credentials(impersonate)
        key = (impersonate, hashlib.sha256(repr(sorted(vars(creds).items())).encode()).hexdigest())
        with self._lock:
            kube = self._connectors.pop(key, None)
            stale = [k for k in self._connectors if k[0] == impersonate]  # older credentials (rotated token)
            for k in stale:
                self._connectors.pop(k).close()
        if kube is None:
            kube = Connector(creds, self.options)
        try:
            yield kube
        except BaseException:
            kube.close()
            raise
        with self._lock:
            old = self._connectors.pop(key, None)
            if old is not None and old is not kube:
                old.close()
            self._connectors[key] = kube

    def version(self) -> str:
        """The cluster's Kubernetes version (``v1.x.y``), or '' when it cannot be read now."""
        try:
            with self.connect() as kube:
                return kube.check().version or ""
        except Exception:
            return ""

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` with the agent's own credentials (no impersonation)."""
        from clusters.connector.client import build_api_client

        return build_api_client(self.credentials(), self.options)

    def close(self) -> None:
        with self._lock:
            for kube in self._connectors.values():
                kube.close()
            self._connectors.clear()
