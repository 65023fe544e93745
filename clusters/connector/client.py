"""Building the official ``kubernetes`` client (DynamicClient) for one cluster's credentials.

- Token: a bearer ``Authorization`` header. Client certificate: the key pair is loaded into an SSL
  context from 0600 files in a private temporary directory that is deleted at once (the ``ssl`` module
  only loads key pairs from files). CA bundle: passed as data (``ca_cert_data``), never written.
- Every request gets a connect/read timeout; urllib3's own retries are off (``retry.call`` decides).
- Discovery is cached in a file of this connector's own (in ``cache_dir`` or a temporary directory),
  not in the client's default ``$TMPDIR/osrcp-<md5(host)>.json`` that clusters on one host:port share;
  Kubernetes' own API groups are shared by server version within the process (``discovery.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError, api_exception
from kubernetes.dynamic.resource import Resource
from urllib3.util.ssl_ import create_urllib3_context

from clusters.connector import retry
from clusters.connector.credentials import CLIENT_CERTIFICATE, ClusterCredentials
from clusters.connector.discovery import Discovery
from clusters.connector.errors import ConnectorError, describe
from fleet.core import urlguard

USER_AGENT = "fleetgate-connector"
CHECK_RETRY = retry.RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0, deadline=10.0)


@dataclass(frozen=True)
class ConnectorOptions:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retry: retry.RetryPolicy = field(default_factory=retry.RetryPolicy)
    cache_dir: str | None = None  # discovery cache directory (default: a temporary one per connector)
    pool_size: int = 4  # HTTP connections kept per cluster
    crd_timeout: float = 60.0  # seconds to wait for a new CRD to be Established and discovered
    # Kubernetes' own API groups discovered once per server version in the process (discovery.py)
    shared_discovery: bool = True
    # networks never connected to (SSRF guard; None: link-local and cloud metadata; (): none)
    deny_networks: tuple[urlguard.IPNetwork, ...] | None = None


class _TimedDynamicClient(DynamicClient):
    """A DynamicClient whose every request (discovery included) has a connect/read timeout."""

    def __init__(
        self, api: k8s.ApiClient, timeout: tuple[float, float], cache_file: str, shared: bool = True
    ) -> None:
        self._fg_timeout = timeout
        super().__init__(
            api, cache_file=cache_file, discoverer=lambda dyn, path: Discovery(dyn, path, shared=shared)
        )

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        params.setdefault("_request_timeout", self._fg_timeout)
        return super().request(method, path, body=body, **params)

    def get_or_none(self, resource: Resource, name: str, namespace: str | None) -> dict[str, Any] | None:
        """GET one object as JSON; None when the server answers 404. Other failures raise the dynamic
        client's errors, as ``request`` does. (``request`` turns a 404 into NotFoundError with the formatted
        traceback of the ApiException attached: on Python 3.11 that formatting parses source lines and
        cost more than the request itself, and a first rollout's reads are mostly 404s.)"""
        path = resource.path(name=name, namespace=namespace)
        serialized = self.client.param_serialize(
            "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        response = self.client.call_api(*serialized, _request_timeout=self._fg_timeout)
        data = response.read()
        if response.status == 404:
            return None
        if not 200 <= response.status <= 299:
            try:
                self.client.response_deserialize(response, {})
            except ApiException as exc:
                raise api_exception(exc) from None
        return json.loads(data)  # type: ignore[no-any-return]


def _client_cert_context(creds: ClusterCredentials) -> ssl.SSLContext:
    context = create_urllib3_context()
    tmp = tempfile.mkdtemp(prefix="fleetgate-tls-")  # mode 0700
    try:
        cert = os.path.join(tmp, "client.crt")
        key = os.path.join(tmp, "client.key")
        for path, text in ((cert, creds.client_certificate), (key, creds.client_key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ConnectorError(f"the client certificate or key is not usable: {exc.reason}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return context


def build_api_client(creds: ClusterCredentials, options: ConnectorOptions) -> k8s.ApiClient:
    """An ApiClient for resolved credentials (see ``ClusterCredentials.resolved``)."""
    if not creds.server:
        raise ConnectorError("the cluster has no API server URL")
    config = k8s.Configuration()
    config.host = creds.server.rstrip("/")
    config.retries = False
    config.verify_ssl = not creds.insecure_skip_tls_verify
    config.connection_pool_maxsize = options.pool_size
    if creds.ca_data:
        config.ca_cert_data = creds.ca_data
    if creds.token:
        config.api_key = {"authorization": creds.token}
        config.api_key_prefix = {"authorization": "Bearer"}
    ssl_context = None
    if creds.auth_method == CLIENT_CERTIFICATE:
        if not (creds.client_certificate and creds.client_key):
            raise ConnectorError("client-certificate authentication needs a certificate and a key")
        ssl_context = _client_cert_context(creds)
    api = k8s.ApiClient(config)
    api.user_agent = USER_AGENT
    if creds.impersonate:
        # Kubernetes user impersonation: every request (discovery included) acts as this user, and the
        # cluster's RBAC decides what it may read, dry-run and apply
        api.set_default_header("Impersonate-User", creds.impersonate)
    networks = options.deny_networks
    if networks is None:
        networks = urlguard.parse_networks(urlguard.DEFAULT_DENY_CIDRS)
    # every connection (redirects too) resolves the host, refuses a denied address and connects to the
    # address it checked: a DNS answer changed after the URL was saved (rebinding) cannot reach metadata
    urlguard.guard_pool_manager(api.rest_client.pool_manager, networks, what="API server URL")
    if ssl_context is not None:
        # urllib3 hands this context to every new connection; verification settings still come from
        # cert_reqs/ca_cert_data above.
        api.rest_client.pool_manager.connection_pool_kw["ssl_context"] = ssl_context
    return api


class KubeClient:
    """One cluster's client: lazy DynamicClient, resource lookup cache, retried calls."""

    def __init__(self, credentials: ClusterCredentials, options: ConnectorOptions | None = None) -> None:
        self.options = options or ConnectorOptions()
        self.credentials = credentials.resolved()
        self._secrets = credentials.secrets() + self.credentials.secrets()
        self.timeout = (self.options.connect_timeout, self.options.read_timeout)
        self._tmp_cache: str | None = None
        self._api: k8s.ApiClient | None = None
        self._dyn: _TimedDynamicClient | None = None
        self._resources: dict[tuple[str, str], Resource] = {}
        self._lock = threading.Lock()
        self.retries = 0  # transient failures retried so far (for reports and tests)

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def api(self) -> k8s.ApiClient:
        if self._api is None:
            self._api = build_api_client(self.credentials, self.options)
        return self._api

    def cache_file(self) -> str:
        if self.options.cache_dir:
            directory = self.options.cache_dir
            os.makedirs(directory, mode=0o700, exist_ok=True)
        else:
            if self._tmp_cache is None:
                self._tmp_cache = tempfile.mkdtemp(prefix="fleetgate-discovery-")
            directory = self._tmp_cache
        ident = f"{self.credentials.name}\n{self.credentials.server}".encode()
        return os.path.join(directory, f"discovery-{hashlib.sha256(ident).hexdigest()[:24]}.json")

    @property
    def dyn(self) -> _TimedDynamicClient:
        if self._dyn is None:
            with self._lock:
                if self._dyn is None:
                    self._dyn = self.call(
                        lambda: _TimedDynamicClient(
                            self.api, self.timeout, self.cache_file(), self.options.shared_discovery
                        )
                    )
        return self._dyn

    def flush_discovery(self) -> None:
        """Write the discovery cache file when discovery learnt something since it was last written."""
        dyn = self._dyn
        if dyn is not None:
            dyn.resources.flush()

    def close(self) -> None:
        self.flush_discovery()
        if self._api is not None:
            self._api.close()
            self._api = None
        self._dyn = None
        if self._tmp_cache is not None:
            shutil.rmtree(self._tmp_cache, ignore_errors=True)
            self._tmp_cache = None

    # -- calls -----------------------------------------------------------------------------------
    def _on_retry(self, attempt: int, exc: BaseException, wait: float) -> None:
        self.retries += 1

    def call(self, fn: Any, policy: retry.RetryPolicy | None = None) -> Any:
        return retry.call(fn, policy or self.options.retry, self._on_retry)

    def failure(self, exc: BaseException) -> Any:
        return describe(exc, self.credentials.server, self._secrets)

    def resource(self, api_version: str, kind: str, refresh: bool = False) -> Resource:
        """The API resource serving ``kind`` in ``api_version`` (discovery, cached; ResourceNotFoundError)."""
        key = (api_version, kind)
        if not refresh and key in self._resources:
            return self._resources[key]
        group, _, version = api_version.rpartition("/")
        dyn = self.dyn
        if refresh:
            self.call(dyn.resources.invalidate_cache)
        found = self.call(
            lambda: dyn.resources.get(
                prefix="apis" if group else "api", group=group, api_version=version, kind=kind
            )
        )
        self._resources[key] = found
        return found

    def forget_resource(self, api_version: str, kind: str) -> None:
        self._resources.pop((api_version, kind), None)

    def version(self) -> dict[str, Any]:
        """``/version``, then the authenticated ``/apis`` (so that bad credentials show), briefly retried."""
        policy = self.options.retry if self.options.retry.attempts < CHECK_RETRY.attempts else CHECK_RETRY
        info = self.call(lambda: k8s.VersionApi(self.api).get_code(_request_timeout=self.timeout), policy)
        self.call(lambda: k8s.ApisApi(self.api).get_api_versions(_request_timeout=self.timeout), policy)
        return {"gitVersion": info.git_version, "platform": info.platform}


__all__ = ["ConnectorOptions", "KubeClient", "ResourceNotFoundError", "build_api_client"]
