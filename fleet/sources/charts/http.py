"""HTTP(S) for chart repositories: urllib3 through the project's SSRF guard, with size limits.

Every connection resolves its host and refuses denied addresses (``fleet.core.urlguard``), then connects to
the address it checked; redirects go through the same guarded pool (at most 3; urllib3 drops the
``Authorization`` header when a redirect leaves the host).  Connection failures are not retried, so an
offline worker answers at once.  A body larger than the limit is refused while it streams.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import urllib3

from fleet.core import urlguard

from .errors import ChartError, withheld_hint
from .spec import RepoCredentials, redact


@dataclass(frozen=True)
class Downloaded:
    status: int
    size: int
    digest: str  # sha256:... of the body
    etag: str = ""


def ssl_context(ca_bundle: str = "", ca_file: str | None = None) -> ssl.SSLContext:
    """The system trust store, plus the repository's own CA (PEM) and FLEETGATE_CHART_CA_FILE if given."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if ca_bundle.strip():
        try:
            ctx.load_verify_locations(cadata=ca_bundle)
        except (ssl.SSLError, ValueError, TypeError):  # TypeError: text that is not ASCII
            raise ChartError("invalid", "the repository's CA bundle is not PEM certificates") from None
    return ctx


def copy_limited(chunks: Iterable[bytes], out: BinaryIO, max_bytes: int, too_large: str) -> tuple[int, str]:
    """Write a download's chunks to ``out``, refusing it (``too_large``) past ``max_bytes``; returns the size
    and the ``sha256:`` digest of what was written."""
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise ChartError("too_large", too_large)
        digest.update(chunk)
        out.write(chunk)
    return size, "sha256:" + digest.hexdigest()


class HttpClient:
    def __init__(
        self, *, deny_networks: Sequence[urlguard.IPNetwork], timeout: float, ca_file: str | None = None
    ) -> None:
        self.deny_networks = tuple(deny_networks)
        self.timeout = timeout
        self.ca_file = ca_file
        self._pools: dict[str, urllib3.PoolManager] = {}

    def _pool(self, ca_bundle: str) -> urllib3.PoolManager:
        pool = self._pools.get(ca_bundle)
        if pool is None:
            pool = urllib3.PoolManager(
                num_pools=4,
                ssl_context=ssl_context(ca_bundle, self.ca_file),
                retries=urllib3.Retry(total=3, connect=0, read=0, status=0, redirect=3),
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
            )
            urlguard.guard_pool_manager(pool, self.deny_networks, what="chart repository URL")
            self._pools[ca_bundle] = pool
        return pool

    def get(
        self,
        url: str,
        out: BinaryIO,
        *,
        what: str,
        max_bytes: int,
        credentials: RepoCredentials | None = None,
        send_auth: bool = True,
        etag: str = "",
    ) -> Downloaded:
        """GET ``url`` into ``out`` (nothing written on 304).  ``what`` names the chart and repository in
        errors.  Raises ChartError: network_required, auth_failed, not_found, too_large, refused."""
        creds = credentials or RepoCredentials()
        headers = {"User-Agent": "fleetgate", "Accept": "*/*"}
        if send_auth and creds.username:
            headers.update(urllib3.make_headers(basic_auth=f"{creds.username}:{creds.password}"))
        if etag:
            headers["If-None-Match"] = etag
        shown = redact(url)
        try:
            response = self._pool(creds.ca_bundle).request("GET", url, headers=headers, preload_content=False)
        except urlguard.URLRefused as exc:
            raise ChartError("refused", f"{what}: {exc}") from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, urlguard.URLRefused):
                raise ChartError("refused", f"{what}: {reason}") from None
            detail = (
                "TLS verification failed"
                if isinstance(reason, urllib3.exceptions.SSLError)
                else (
                    "no answer in time"
                    if isinstance(reason, urllib3.exceptions.TimeoutError)
                    else "cannot connect"
                )
            )
            raise ChartError(
                "network_required",
                f"{what}: {shown} cannot be reached ({detail}); the chart "
                "needs network access to the repository (or pin helm.digest of a chart "
                "already in the cache)"
                + ("; " + withheld_hint(creds) + ", nor its CA bundle" if creds.withheld else ""),
            ) from None
        try:
            status = response.status
            if status == 304:
                return Downloaded(304, 0, "", etag)
            if status in (401, 403):
                said = "refused the stored credentials" if creds.username else "needs credentials"
                raise ChartError("auth_failed", f"{what}: {shown} {said} (HTTP {status}); "
                                 + withheld_hint(creds))
            if status == 404:
                raise ChartError("not_found", f"{what}: {shown} answered 404 Not Found")
            if status != 200:
                raise ChartError("network_required", f"{what}: {shown} answered HTTP {status}")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ChartError(
                    "too_large", f"{what}: {shown} is {int(length)} bytes, more than the limit of {max_bytes}"
                )
            try:
                size, digest = copy_limited(
                    response.stream(64 * 1024), out, max_bytes, f"{what}: {shown} is more than the limit of "
                    f"{max_bytes} bytes"
                )
            except urllib3.exceptions.HTTPError:
                raise ChartError("network_required", f"{what}: the download from {shown} broke off") from None
            return Downloaded(200, size, digest, response.headers.get("ETag") or "")
        finally:
            response.release_conn()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.clear()
        self._pools.clear()
