"""Charts in OCI registries (``oci://``), through the ``oras`` client (OCI distribution API, auth challenges).

What Fleetgate adds around oras: the requests session goes through the SSRF guard and a timeout; no
retries with back-off (oras' own decorator would wait minutes offline), no Docker credential files (only
the stored chart repository's credentials); the manifest's digest is computed from its bytes and checked
against the registry's ``Docker-Content-Digest`` and the pin; the chart layer
(``application/vnd.cncf.helm.chart.content.v1.tar+gzip``) is checked against its size limit and digest.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from fleet.core import urlguard

from .errors import ChartError, withheld_hint
from .http import copy_limited
from .spec import ChartSpec, RepoCredentials, ResolvedChart
from .versions import is_exact, select

HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def _registry_class() -> Any:
    import oras.provider
    import requests.adapters

    class TimeoutAdapter(requests.adapters.HTTPAdapter):
        timeout: float = 30.0

        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if not kwargs.get("timeout"):
                kwargs["timeout"] = self.timeout
            return super().send(request, **kwargs)

    class ChartRegistry(oras.provider.Registry):  # type: ignore[misc]
        def do_request(self, *args: Any, **kwargs: Any) -> Any:
            # oras' retry decorator sleeps 3**n seconds per failure; Fleetgate fails at once instead
            return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)

    return ChartRegistry, TimeoutAdapter


class OciClient:
    def __init__(
        self,
        *,
        deny_networks: Sequence[urlguard.IPNetwork],
        timeout: float,
        ca_file: str | None,
        plain_http_hosts: Sequence[str] = (),
    ) -> None:
        self.deny_networks = tuple(deny_networks)
        self.timeout = timeout
        self.ca_file = ca_file
        self.plain_http_hosts = tuple(plain_http_hosts)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._registries: dict[tuple[str, str, str, str], Any] = {}

    def close(self) -> None:
        for reg in self._registries.values():
            reg.session.close()
        self._registries.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _ca_path(self, creds: RepoCredentials) -> str | bool:
        if not creds.ca_bundle.strip() and not self.ca_file:
            return True
        import certifi

        parts = [Path(certifi.where()).read_text()]
        if self.ca_file:
            parts.append(Path(self.ca_file).read_text())
        parts.append(creds.ca_bundle)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fleetgate-oci-")
        path = Path(self._tmp.name) / f"ca-{hashlib.sha256(''.join(parts).encode()).hexdigest()[:16]}.pem"
        path.write_text("\n".join(parts))
        return str(path)

    def _registry(self, host: str, creds: RepoCredentials, what: str) -> Any:
        key = (host, creds.username, creds.ca_bundle, creds.withheld)
        reg = self._registries.get(key)
        if reg is not None:
            return reg
        registry_cls, adapter_cls = _registry_class()
        insecure = host in self.plain_http_hosts
        scheme = "http" if insecure else "https"
        backend = "token"
        probe_session = _session(adapter_cls, self.timeout, self.deny_networks)
        try:
            answer = probe_session.get(
                f"{scheme}://{host}/v2/", verify=self._ca_path(creds), timeout=self.timeout
            )
            challenge = answer.headers.get("WWW-Authenticate", "")
            if challenge.lower().startswith("basic"):
                backend = "basic"
        except Exception as exc:  # requests' errors, and the guard's refusal inside them
            raise _network_error(exc, host, what) from None
        finally:
            probe_session.close()
        reg = registry_cls(
            hostname=host, insecure=insecure, tls_verify=self._ca_path(creds), auth_backend=backend
        )
        reg.session = _session(adapter_cls, self.timeout, self.deny_networks)
        reg.auth.session = reg.session
        reg.auth.load_configs = lambda *a, **k: None  # no ~/.docker/config.json: only stored credentials
        reg.auth._basic_auth = None
        if creds.username:
            reg.auth.set_basic_auth(creds.username, creds.password)
        reg.fleetgate_withheld = creds.withheld  # for the auth refusal's message
        self._registries[key] = reg
        return reg

    def _request(
        self, reg: Any, url: str, what: str, *, headers: dict[str, str] | None = None, stream: bool = False
    ) -> Any:
        host = urlsplit(url).netloc
        try:
            response = reg.do_request(url, "GET", headers=dict(headers or {}), stream=stream)
        except ValueError as exc:  # "Cannot respond to request for authentication."
            raise ChartError(
                "auth_failed", f"{what}: {host} asks for credentials Fleetgate cannot give ({str(exc)[:100]})"
            ) from None
        except Exception as exc:
            raise _network_error(exc, host, what) from None
        if response.status_code in (401, 403):
            response.close()
            said = "refused the stored credentials" if reg.auth._basic_auth else "needs credentials"
            raise ChartError(
                "auth_failed",
                f"{what}: {host} {said} (HTTP {response.status_code}); "
                + withheld_hint(RepoCredentials(withheld=getattr(reg, "fleetgate_withheld", ""))),
            )
        if response.status_code == 404:
            response.close()
            raise ChartError("not_found", f"{what}: the registry has no such chart or version")
        if response.status_code != 200:
            response.close()
            raise ChartError("network_required", f"{what}: {host} answered HTTP {response.status_code}")
        return response

    def resolve(self, spec: ChartSpec, creds: RepoCredentials) -> ResolvedChart:
        what = spec.describe()
        ref = spec.oci_reference[len("oci://") :]
        host, _, path = ref.partition("/")
        namespace, _, name = path.rpartition("/")
        reg = self._registry(host, creds, what)
        container = _container(host, namespace, name)
        if spec.digest:
            reference = spec.digest
        elif is_exact(spec.version):
            reference = spec.version.replace("+", "_")
        else:
            response = self._request(reg, f"{reg.prefix}://{container.tags_url()}", what)
            try:
                tags = [
                    t.replace("_", "+") for t in (response.json().get("tags") or []) if isinstance(t, str)
                ]
            except ValueError:
                raise ChartError("invalid", f"{what}: the registry's tag list is not JSON") from None
            try:
                chosen = select(spec.version, tags)
            except ValueError as exc:
                raise ChartError("invalid", f"{what}: {exc}") from None
            if chosen is None:
                raise ChartError(
                    "not_found", f"{what}: no tag matches (tags: {', '.join(tags[:20]) or 'none'})"
                )
            reference = chosen.replace("+", "_")
        url = f"{reg.prefix}://{container.manifest_url(reference)}"
        response = self._request(reg, url, what, headers={"Accept": ", ".join(MANIFEST_TYPES)}, stream=True)
        body = _read_limited(response, MAX_MANIFEST_BYTES, what, "manifest")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        said = response.headers.get("Docker-Content-Digest", "")
        if said and said != digest:
            raise ChartError(
                "digest_mismatch", f"{what}: the manifest's digest is {digest}, the registry said {said}"
            )
        if spec.digest and digest != spec.digest:
            raise ChartError(
                "digest_mismatch", f"{what}: the manifest's digest is {digest}, not the pinned {spec.digest}"
            )
        try:
            manifest = json.loads(body)
        except ValueError:
            raise ChartError("invalid", f"{what}: the manifest is not JSON") from None
        layers = [
            layer
            for layer in manifest.get("layers") or []
            if isinstance(layer, dict) and layer.get("mediaType") == HELM_LAYER
        ]
        if len(layers) != 1 or not str(layers[0].get("digest", "")).startswith("sha256:"):
            raise ChartError(
                "invalid", f"{what}: the manifest is not a Helm chart (one layer of {HELM_LAYER})"
            )
        version = reference.replace("_", "+") if reference != spec.digest else spec.version
        return ResolvedChart(
            spec,
            name,
            version,
            digest,
            f"oci://{host}/{path}@{digest}",
            layer_digest=str(layers[0]["digest"]),
            layer_size=int(layers[0].get("size") or 0),
        )

    def download(self, resolved: ResolvedChart, creds: RepoCredentials, out: BinaryIO, max_bytes: int) -> str:
        what = resolved.spec.describe()
        if resolved.layer_size > max_bytes:
            raise ChartError(
                "too_large",
                f"{what}: the chart is {resolved.layer_size} bytes, more than the limit of {max_bytes}",
            )
        ref = resolved.spec.oci_reference[len("oci://") :]
        host, _, path = ref.partition("/")
        namespace, _, name = path.rpartition("/")
        reg = self._registry(host, creds, what)
        container = _container(host, namespace, name)
        url = f"{reg.prefix}://{container.get_blob_url(resolved.layer_digest)}"
        response = self._request(reg, url, what, stream=True)
        try:
            _, digest = copy_limited(
                response.iter_content(64 * 1024), out, max_bytes,
                f"{what}: the chart is more than the limit of {max_bytes} bytes",
            )
        except ChartError:
            raise
        except Exception:
            raise ChartError("network_required", f"{what}: the download from {host} broke off") from None
        finally:
            response.close()
        return digest


def _session(adapter_cls: Any, timeout: float, networks: Sequence[urlguard.IPNetwork]) -> Any:
    from http.cookiejar import DefaultCookiePolicy

    import requests

    session = requests.Session()
    session.trust_env = False  # no proxies or netrc from the worker's environment
    session.max_redirects = 3
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    for prefix in ("https://", "http://"):
        adapter = adapter_cls(max_retries=0)
        adapter.timeout = timeout
        urlguard.guard_pool_manager(adapter.poolmanager, networks, what="chart repository URL")
        session.mount(prefix, adapter)
    return session


def _container(host: str, namespace: str, name: str) -> Any:
    import oras.container

    container = oras.container.Container(name, registry=host)
    container.registry = host
    container.namespace = namespace or None
    container.repository = name
    return container


def _read_limited(response: Any, limit: int, what: str, thing: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise ChartError("too_large", f"{what}: the {thing} is more than {limit} bytes")
            chunks.append(chunk)
    finally:
        response.close()
    return b"".join(chunks)


def _network_error(exc: BaseException, host: str, what: str) -> ChartError:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, urlguard.URLRefused):
            return ChartError("refused", f"{what}: {cur}")
        for arg in getattr(cur, "args", ()):
            if isinstance(arg, BaseException) and id(arg) not in seen:
                inner = _network_error(arg, host, what) if isinstance(arg, urlguard.URLRefused) else None
                if inner is not None:
                    return inner
        cur = cur.__cause__ or cur.__context__ or getattr(cur, "reason", None)
    import requests

    detail = (
        "TLS verification failed"
        if isinstance(exc, requests.exceptions.SSLError)
        else ("no answer in time" if isinstance(exc, requests.exceptions.Timeout) else "cannot connect")
    )
    return ChartError(
        "network_required",
        f"{what}: {host} cannot be reached ({detail}); the chart needs "
        "network access to the registry (or pin helm.digest of a chart already in the cache)",
    )
