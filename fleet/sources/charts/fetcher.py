"""``ChartFetcher``: resolve chart references to digests and keep the archives in a cache keyed by digest.

* ``resolve(spec)`` asks the repository which archive the reference means now: the index repository's
  ``index.yaml`` (the entry's ``digest``), the OCI registry's manifest (its digest), or, for one archive URL,
  the archive itself (its digest; the ETag saves the download when unchanged).  Results are kept for the
  fetcher's life (one render run), so a run asks each repository once.  A pinned ``digest`` that is already
  in the cache resolves without the network.
* ``fetch(resolved)`` returns ``<cache>/sha256/<hex>.tgz``, downloading it only when absent; the download
  is checked against the digest (a mismatch is refused and nothing is stored) and the size limit.
* Beside each archive the cache records which credential scopes fetched it (``RepoCredentials.scope``, or
  ``anonymous``): a cached archive is served (by ``fetch``, or a pinned digest by ``resolve``) only when it
  was fetched anonymously or with the caller's own credentials; otherwise it is asked of the repository
  again with the caller's credentials (none when withheld), so a private chart that one group's credentials
  brought is never handed to another group from the cache, whatever URL that group writes.  So a
  chart republished under the same version gets a new digest in the index, a new input hash and a new
  download, and an unchanged one is never downloaded twice.
* Credentials come from ``credentials(url)`` (the stored chart repositories, longest URL prefix first);
  they are sent only to the repository's own host (not to archive URLs elsewhere, as Helm), never logged,
  and never in an error.

Django-free: the Django side (``fleet.sources.services.charts``) builds one per render run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from fleet.core import urlguard
from fleet.sources.render.errors import RenderError
from fleet.sources.render.yamlsafe import load_one

from .errors import ChartError
from .http import HttpClient
from .oci import OciClient
from .spec import DIGEST, ChartSpec, RepoCredentials, ResolvedChart, redact
from .versions import select

DEFAULT_MAX_CHART_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_INDEX_BYTES = 64 * 1024 * 1024
ANONYMOUS = "anonymous"

CredentialLookup = Callable[[str], RepoCredentials | None]


@dataclass
class FetchStats:
    index_downloads: int = 0
    index_not_modified: int = 0
    chart_downloads: int = 0
    cache_hits: int = 0


class ChartFetcher:
    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        credentials: CredentialLookup | None = None,
        deny_networks: Sequence[urlguard.IPNetwork] | None = None,
        timeout: float = 30.0,
        max_chart_bytes: int = DEFAULT_MAX_CHART_BYTES,
        max_index_bytes: int = DEFAULT_MAX_INDEX_BYTES,
        ca_file: str | None = None,
        offline: bool = False,
    ) -> None:
        self.root = Path(cache_dir)
        self.credentials = credentials or (lambda url: None)
        networks = tuple(
            deny_networks
            if deny_networks is not None
            else urlguard.parse_networks(urlguard.DEFAULT_DENY_CIDRS)
        )
        self.http = HttpClient(deny_networks=networks, timeout=timeout, ca_file=ca_file)
        self.oci = OciClient(deny_networks=networks, timeout=timeout, ca_file=ca_file)
        self.max_chart_bytes = max_chart_bytes
        self.max_index_bytes = max_index_bytes
        self.offline = offline
        self.stats = FetchStats()
        self._resolved: dict[ChartSpec, ResolvedChart] = {}
        self._indexes: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.http.close()
        self.oci.close()

    def __enter__(self) -> ChartFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- cache

    def archive_path(self, digest: str) -> Path:
        if not DIGEST.match(digest):
            raise ChartError("invalid", f"{digest!r} is not a sha256 digest")
        return self.root / "sha256" / f"{digest.split(':', 1)[1]}.tgz"

    def _meta_path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def _read_meta(self, kind: str, key: str) -> dict[str, Any]:
        try:
            data = json.loads(self._meta_path(kind, key).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_meta(self, kind: str, key: str, data: dict[str, Any], body: bytes | None = None) -> None:
        path = self._meta_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if body is not None:
            _atomic_write(path.with_suffix(".body"), body)
        _atomic_write(path, json.dumps(data).encode())

    def _creds(self, url: str) -> RepoCredentials:
        return self.credentials(url) or RepoCredentials()

    def _scope(self, url: str) -> str:
        """Which credentials a fetch for ``url`` uses: ``anonymous`` (none, or withheld), the stored
        repository's scope, or (credentials without one, outside Django) a hash of them."""
        creds = self._creds(url)
        if creds.withheld:
            return ANONYMOUS
        if creds.scope:
            return creds.scope
        if creds.username or creds.password:
            secret = f"fleetgate-chart-scope\0{creds.username}\0{creds.password}".encode()
            return "credentials:" + hashlib.sha256(secret).hexdigest()
        return ANONYMOUS

    @staticmethod
    def _repo_url(spec: ChartSpec) -> str:
        return spec.oci_reference if spec.kind == "oci" else (spec.repo or spec.chart)

    def _servable(self, digest: str, scope: str) -> bool:
        """Is the archive ``digest`` in the cache and fetched anonymously or by ``scope``?  (An archive
        without a record, from an older cache, is fetched again once.)"""
        if not DIGEST.match(digest) or not self.archive_path(digest).is_file():
            return False
        scopes = self._read_meta("archive", digest).get("scopes")
        return isinstance(scopes, list) and (ANONYMOUS in scopes or scope in scopes)

    def _offline(self, spec: ChartSpec) -> ChartError:
        return ChartError(
            "network_required",
            f"{spec.describe()}: fetching charts is switched off "
            "(FLEETGATE_CHART_OFFLINE); the chart needs network access to the repository, or "
            "helm.digest of a chart already in the cache",
        )

    # ---- resolve

    def resolve(self, spec: ChartSpec, *, file: str | None = None) -> ResolvedChart:
        spec = spec.check(file=file)
        found = self._resolved.get(spec)
        if found is not None:
            return found
        try:
            # a pinned digest already in the cache resolves without the network only when the archive was
            # fetched anonymously or with this caller's credentials: the cache must not hand a private
            # chart that another group's credentials brought to a group whose credentials are withheld
            scope = self._scope(self._repo_url(spec))
            pinned = spec.digest
            if pinned and spec.kind != "oci" and self._servable(pinned, scope):
                resolved = ResolvedChart(spec, spec.name, spec.version, spec.digest, spec.chart)
            elif (pinned and spec.kind == "oci" and (meta := self._read_meta("oci", pinned))
                  and self._servable(str(meta.get("layer", "")), scope)):
                resolved = ResolvedChart(
                    spec,
                    spec.name,
                    spec.version or str(meta.get("version", "")),
                    spec.digest,
                    str(meta["url"]),
                    layer_digest=str(meta["layer"]),
                    layer_size=int(meta.get("size", 0)),
                )
            elif self.offline:
                raise self._offline(spec)
            elif spec.kind == "oci":
                resolved = self.oci.resolve(spec, self._creds(spec.oci_reference))
                self._write_meta(
                    "oci",
                    resolved.digest,
                    {
                        "url": resolved.url,
                        "layer": resolved.layer_digest,
                        "size": resolved.layer_size,
                        "version": resolved.version,
                    },
                )
            elif spec.kind == "http":
                resolved = self._resolve_index(spec)
            else:
                resolved = self._resolve_url(spec.chart, spec, name=spec.name, version=spec.version, repo="")
        except ChartError as exc:
            if file and not exc.file:
                exc.file = file
                exc.args = (exc._text(),)
            raise
        self._resolved[spec] = resolved
        return resolved

    def _index(self, spec: ChartSpec) -> dict[str, Any]:
        repo = spec.repo.rstrip("/") + "/"
        cached = self._indexes.get(repo)
        if cached is not None:
            return cached
        url = urljoin(repo, "index.yaml")
        meta = self._read_meta("index", repo)
        body_path = self._meta_path("index", repo).with_suffix(".body")
        etag = str(meta.get("etag", "")) if body_path.is_file() else ""
        what = f"{spec.describe()}: the repository index"
        with tempfile.TemporaryFile() as out:
            got = self.http.get(
                url,
                out,
                what=what,
                max_bytes=self.max_index_bytes,
                credentials=self._creds(spec.repo),
                etag=etag,
            )
            if got.status == 304:
                self.stats.index_not_modified += 1
                body = body_path.read_bytes()
            else:
                self.stats.index_downloads += 1
                out.seek(0)
                body = out.read()
                self._write_meta(
                    "index", repo, {"etag": got.etag, "digest": got.digest, "at": time.time()}, body
                )
        try:
            data = load_one(body, file="index.yaml", max_bytes=self.max_index_bytes)
        except RenderError as exc:
            raise ChartError("invalid", f"{spec.describe()}: index.yaml cannot be read: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise ChartError("invalid", f"{spec.describe()}: index.yaml has no entries")
        self._indexes[repo] = data
        return data

    def _resolve_index(self, spec: ChartSpec) -> ResolvedChart:
        index = self._index(spec)
        entries = index["entries"].get(spec.chart)
        if not isinstance(entries, list) or not entries:
            raise ChartError("not_found", f"{spec.describe()}: the repository has no chart {spec.chart!r}")
        by_version = {str(e.get("version")): e for e in entries if isinstance(e, dict) and e.get("version")}
        try:
            chosen = select(spec.version, list(by_version))
        except ValueError as exc:
            raise ChartError("invalid", f"{spec.describe()}: {exc}") from None
        if chosen is None:
            known = ", ".join(sorted(by_version)[-10:])
            raise ChartError("not_found", f"{spec.describe()}: no version matches (versions: {known})")
        entry = by_version[chosen]
        urls = [u for u in entry.get("urls") or [] if isinstance(u, str)]
        if not urls:
            raise ChartError("invalid", f"{spec.describe()}: the index entry of {chosen} has no URL")
        url = urljoin(spec.repo.rstrip("/") + "/", urls[0])
        digest = str(entry.get("digest") or "")
        if digest and ":" not in digest:
            digest = "sha256:" + digest
        if spec.digest and digest and digest != spec.digest:
            raise ChartError(
                "digest_mismatch",
                f"{spec.describe()}: the index names {digest}, not the pinned {spec.digest}",
            )
        digest = digest or spec.digest
        if not DIGEST.match(digest):
            # an index without digests: the archive itself is downloaded to know what it is
            return self._resolve_url(url, spec, name=spec.chart, version=chosen, repo=spec.repo)
        return ResolvedChart(spec, spec.chart, chosen, digest, url)

    def _resolve_url(
        self, url: str, original: ChartSpec, *, name: str, version: str, repo: str
    ) -> ResolvedChart:
        """An archive URL: its digest is known only by downloading it (skipped when the ETag still holds)."""
        meta = self._read_meta("url", url)
        scope = self._scope(repo or url)
        cached = bool(meta.get("digest")) and self._servable(str(meta["digest"]), scope)
        etag = str(meta.get("etag", "")) if cached else ""
        tmp = self._tmp_file()
        try:
            with tmp.open("wb") as out:
                got = self.http.get(
                    url,
                    out,
                    what=original.describe(),
                    max_bytes=self.max_chart_bytes,
                    credentials=self._creds(repo or url),
                    send_auth=_same_host(url, repo or url),
                    etag=etag,
                )
            if got.status == 304:
                digest = str(meta["digest"])
            else:
                self.stats.chart_downloads += 1
                digest = got.digest
                if original.digest and digest != original.digest:
                    raise ChartError(
                        "digest_mismatch",
                        f"{original.describe()}: the archive's digest is {digest}, "
                        f"not the pinned {original.digest}; nothing was stored",
                    )
                self._store(tmp, digest, scope)
                self._write_meta("url", url, {"etag": got.etag, "digest": digest})
        finally:
            tmp.unlink(missing_ok=True)
        return ResolvedChart(original, name, version, digest, url)

    # ---- fetch

    def fetch(self, resolved: ResolvedChart) -> Path:
        """The cached archive of ``resolved``, downloaded and verified first when absent or fetched by
        other credentials than this caller's (and not anonymously)."""
        spec = resolved.spec
        scope = self._scope(self._repo_url(spec))
        path = self.archive_path(resolved.archive_digest)
        if self._servable(resolved.archive_digest, scope):
            self.stats.cache_hits += 1
            return path
        if self.offline:
            raise self._offline(spec)
        tmp = self._tmp_file()
        try:
            with tmp.open("wb") as out:
                if spec.kind == "oci":
                    got = self.oci.download(
                        resolved, self._creds(spec.oci_reference), out, self.max_chart_bytes
                    )
                else:
                    repo = spec.repo or spec.chart
                    got = self.http.get(
                        resolved.url,
                        out,
                        what=spec.describe(),
                        max_bytes=self.max_chart_bytes,
                        credentials=self._creds(repo),
                        send_auth=_same_host(resolved.url, repo),
                    ).digest
            self.stats.chart_downloads += 1
            if got != resolved.archive_digest:
                raise ChartError(
                    "digest_mismatch",
                    f"{spec.describe()}: the downloaded archive's digest is {got}, "
                    f"not {resolved.archive_digest} as the repository says; nothing was stored",
                )
            return self._store(tmp, got, scope)
        finally:
            tmp.unlink(missing_ok=True)

    def _tmp_file(self) -> Path:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", suffix=".part")
        os.close(fd)
        return Path(name)

    def _store(self, tmp: Path, digest: str, scope: str) -> Path:
        path = self.archive_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)  # content-addressed: a concurrent writer stores the same bytes
        # which credentials fetched it (a concurrent writer may drop a scope: that one downloads again)
        scopes = self._read_meta("archive", digest).get("scopes")
        known = [str(s) for s in scopes] if isinstance(scopes, list) else []
        if scope not in known:
            self._write_meta("archive", digest, {"scopes": sorted({*known, scope})})
        return path


def _same_host(url: str, repo: str) -> bool:
    a, b = urlsplit(url), urlsplit(repo)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(name, path)


__all__ = ["ChartFetcher", "FetchStats", "redact"]
