"""What names a chart outside the repository: ``ChartSpec``, credentials, and the resolved chart.

Three forms, as Fleet, Argo CD and Flux users write them::

    ChartSpec(chart="web", repo="https://charts.example.com", version="1.2.0")   # index.yaml repository
    ChartSpec(chart="oci://registry.example.com/charts/web", version="1.2.0")     # OCI registry
    ChartSpec(chart="web", repo="oci://registry.example.com/charts", version="^1.2") # the same, split
    ChartSpec(chart="https://example.com/web-1.2.0.tgz")                           # one archive URL

``version`` is an exact version, a constraint (``^1.2``, ``~1.2.3``, ``>=1.0 <2.0``, ``1.x``; commas are
read as AND like Helm does) or empty for the newest version that is not a pre-release.  ``digest``
(``sha256:...``) pins the archive (index repositories, archive URLs) or the OCI manifest: anything else is
refused, and a pinned chart already in the cache renders without the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .errors import ChartError

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,249}$")


def redact(url: str) -> str:
    """The URL without user information, query or fragment (for messages, audit rows and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class RepoCredentials:
    """What a stored chart repository gives: HTTP basic credentials (OCI: user name and password or token)
    and an extra CA bundle (PEM) trusted for that repository."""

    username: str = ""
    password: str = ""
    ca_bundle: str = ""
    # the stored chart repository whose credentials exist for this URL but are not available to the caller
    # (scoped to other cluster groups): fetched anonymously, and an auth refusal says why
    withheld: str = ""
    # which credentials these are (the Django side: ``chart-repository:<id>``), recorded beside every cached
    # archive they fetched: the cache serves an archive only to the same scope, or one fetched anonymously
    scope: str = ""

    def __repr__(self) -> str:  # never print the password
        return f"RepoCredentials(username={self.username!r}, password={'***' if self.password else ''!r})"


@dataclass(frozen=True)
class ChartSpec:
    chart: str
    repo: str = ""
    version: str = ""
    digest: str = ""

    @property
    def kind(self) -> str:
        """``oci``, ``http`` (an index repository) or ``url`` (one archive)."""
        if self.chart.startswith("oci://") or self.repo.startswith("oci://"):
            return "oci"
        if self.repo:
            return "http"
        return "url"

    @property
    def name(self) -> str:
        if self.kind == "oci":
            return self.oci_reference.rsplit("/", 1)[-1]
        if self.kind == "url":
            base = urlsplit(self.chart).path.rsplit("/", 1)[-1]
            return re.sub(r"(-v?\d[\w.+\-]*)?\.tgz$", "", base) or base
        return self.chart

    @property
    def oci_reference(self) -> str:
        """``oci://host/path/name`` (no tag)."""
        if self.chart.startswith("oci://"):
            return self.chart
        return self.repo.rstrip("/") + "/" + self.chart

    @property
    def repository(self) -> str:
        """Where the chart comes from, for messages and credential look-up (no user information)."""
        if self.kind == "oci":
            return redact(self.oci_reference.rsplit("/", 1)[0])
        if self.kind == "url":
            return redact(self.chart)
        return redact(self.repo)

    def describe(self) -> str:
        version = f" version {self.version}" if self.version else ""
        return f"chart {self.name!r}{version} from {self.repository}"

    def check(self, *, file: str | None = None) -> ChartSpec:
        """Refuse malformed references with a message naming them."""
        chart, repo = self.chart.strip(), self.repo.strip()
        if not chart:
            raise ChartError("invalid", "helm.chart is empty", file=file)
        for url, what in ((repo, "helm.repo"), (chart if "://" in chart else "", "helm.chart")):
            if not url:
                continue
            try:
                parts = urlsplit(url)
            except ValueError:
                raise ChartError("invalid", f"{what} {redact(url)!r} is not a URL", file=file) from None
            if parts.scheme not in ("https", "http", "oci") or not parts.hostname:
                raise ChartError(
                    "invalid", f"{what} {redact(url)!r} must be an https://, http:// or oci:// URL", file=file
                )
            if parts.username or parts.password:
                raise ChartError(
                    "invalid",
                    f"{what} {redact(url)!r} carries credentials in the URL: store "
                    "them as a chart repository (docs/sources.md)",
                    file=file,
                )
        if repo and "://" in chart:
            raise ChartError(
                "invalid", f"helm.chart {redact(chart)!r} is a URL: leave helm.repo empty", file=file
            )
        if self.kind == "http" and not _CHART_NAME.match(chart):
            raise ChartError("invalid", f"helm.chart {chart!r} is not a chart name", file=file)
        if self.kind == "oci" and (
            "@" in self.oci_reference.rsplit("/", 1)[-1] or ":" in self.oci_reference.rsplit("/", 1)[-1]
        ):
            raise ChartError(
                "invalid",
                f"{self.oci_reference!r}: give the tag as helm.version and the digest as helm.digest",
                file=file,
            )
        if self.kind == "url" and not urlsplit(chart).path.endswith(".tgz"):
            raise ChartError(
                "invalid",
                f"helm.chart {redact(chart)!r} is a URL but not of a .tgz archive "
                "(an index repository goes in helm.repo, the chart name in helm.chart)",
                file=file,
            )
        if self.digest and not DIGEST.match(self.digest):
            raise ChartError(
                "invalid", f"helm.digest {self.digest!r} is not sha256:<64 hex digits>", file=file
            )
        return ChartSpec(chart, repo, self.version.strip(), self.digest)


@dataclass(frozen=True)
class ResolvedChart:
    """A chart reference pinned to one archive (or OCI manifest) by its digest."""

    spec: ChartSpec
    name: str
    version: str
    digest: str  # sha256:... of the archive (index/URL) or of the OCI manifest
    url: str  # where the archive is downloaded from (OCI: the manifest reference)
    layer_digest: str = ""  # OCI: the chart layer's digest
    layer_size: int = 0

    @property
    def archive_digest(self) -> str:
        """The digest the archive is stored under in the cache."""
        return self.layer_digest or self.digest
