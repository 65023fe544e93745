"""The Django side of chart fetching: one ``ChartFetcher`` per render run, from the settings and the stored
chart repositories (``ChartRepository``: credentials and CA per URL prefix, the password decrypted only
here and handed to the fetcher, never logged or returned)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from fleet.core import urlguard
from fleet.sources.charts import ChartFetcher, RepoCredentials
from fleet.sources.models import ChartRepository


def _key(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def matches(prefix: str, url: str) -> bool:
    """Does the stored repository URL ``prefix`` cover ``url`` (same scheme, host and port, and a path at or
    under the prefix's path on a segment boundary)?"""
    p, u = _key(prefix), _key(url)
    if p[:3] != u[:3]:
        return False
    return u[3] == p[3] or u[3].startswith(p[3] + "/")


class CredentialTable:
    """Stored chart repositories by URL, looked up by longest prefix; read from the database at the first
    look-up (a run without charts from repositories makes no query), then kept for the run."""

    def __init__(self, rows: list[tuple[str, RepoCredentials]] | None = None) -> None:
        self._rows = None if rows is None else self._sorted(rows)

    @staticmethod
    def _sorted(rows: list[tuple[str, RepoCredentials]]) -> list[tuple[str, RepoCredentials]]:
        return sorted(rows, key=lambda row: len(_key(row[0])[3]), reverse=True)

    @property
    def rows(self) -> list[tuple[str, RepoCredentials]]:
        if self._rows is None:
            self._rows = self._sorted([(r.url, RepoCredentials(r.username, r.password, r.ca_bundle))
                                       for r in ChartRepository.objects.all()])
        return self._rows

    def __call__(self, url: str) -> RepoCredentials | None:
        for prefix, creds in self.rows:
            if matches(prefix, url):
                return creds
        return None


def build_fetcher(*, offline: bool | None = None) -> ChartFetcher:
    """A fetcher for one render run (close it after the run)."""
    return ChartFetcher(
        settings.FLEETGATE_CHART_CACHE,
        credentials=CredentialTable(),
        deny_networks=urlguard.deny_networks(),
        timeout=float(settings.FLEETGATE_CHART_TIMEOUT),
        max_chart_bytes=settings.FLEETGATE_CHART_MAX_BYTES,
        max_index_bytes=settings.FLEETGATE_CHART_INDEX_MAX_BYTES,
        ca_file=settings.FLEETGATE_CHART_CA_FILE or None,
        offline=settings.FLEETGATE_CHART_OFFLINE if offline is None else offline,
    )
