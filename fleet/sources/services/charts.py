"""The Django side of chart fetching: one ``ChartFetcher`` per render run, from the settings and the stored
chart repositories (``ChartRepository``: credentials and CA per URL prefix, the password decrypted only
here and handed to the fetcher, never logged or returned)."""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from fleet.core import urlguard
from fleet.sources.charts import ChartFetcher, RepoCredentials
from fleet.sources.models import ChartRepository

DEFAULT_PORTS = {"https": 443, "oci": 443, "http": 80}
_UNRESERVED_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _unescape(m: re.Match[str]) -> str:
    """``%61`` is ``a`` (an escaped unreserved character means the character); other escapes stay."""
    c = chr(int(m.group(1), 16))
    return c if c.isascii() and (c.isalnum() or c in "-._~") else m.group(0).upper()


def _key(url: str) -> tuple[str, str, int | None, str]:
    """Scheme, host, port and path as they are compared: scheme and host in lower case (the host without a
    trailing dot), the scheme's default port written or not, and the path with escaped unreserved
    characters decoded, without empty and ``.`` segments, ``..`` applied, and no trailing slash; so
    ``https://Charts.example.com:443//team/./`` is ``https://charts.example.com/team``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = DEFAULT_PORTS.get(scheme)
    path = _UNRESERVED_ESCAPE.sub(_unescape, parts.path)
    path = posixpath.normpath(re.sub("/+", "/", "/" + path)).rstrip("/")
    return scheme, (parts.hostname or "").lower().rstrip("."), port, path


CREDENTIALS_AGAIN = ("Give the credentials again when changing the URL: the stored password is not sent to "
                     "another scheme, host, port or path.")


def url_moved(stored: str, new: str) -> bool:
    """Does ``new`` name another scheme, host, port or path than the stored chart repository URL (compared as
    the credential lookup compares them)?"""
    return _key(stored) != _key(new)


def matches(prefix: str, url: str) -> bool:
    """Does the stored repository URL ``prefix`` cover ``url`` (same scheme, host and port, and a path at or
    under the prefix's path on a segment boundary)?"""
    p, u = _key(prefix), _key(url)
    if p[:3] != u[:3]:
        return False
    return u[3] == p[3] or u[3].startswith(p[3] + "/")


# url, credentials, cluster group ids (empty: all), name
Row = tuple[str, RepoCredentials, frozenset[int], str]


class CredentialTable:
    """Stored chart repositories by URL, looked up by longest prefix among those available to ``group_id``
    (a repository with cluster groups serves only mappings of those groups; one without serves all); read
    from the database at the first look-up (a run without charts from repositories makes no query), then
    kept for the run.  A URL that only a repository scoped to other groups covers gets no credentials (the
    chart is fetched anonymously) but its name, so that a refusal says why (``RepoCredentials.withheld``);
    nor its CA bundle (a group's admin must not make other groups trust a CA for a host they use).  The
    credentials carry the repository as their ``scope``: the chart cache serves what they fetched only to
    callers with the same credentials."""

    def __init__(self, rows: list[tuple[str, RepoCredentials]] | list[Row] | None = None, *,
                 group_id: int | None = None) -> None:
        self.group_id = group_id
        self._rows = None if rows is None else self._sorted(
            [r if len(r) == 4 else (r[0], r[1], frozenset(), "") for r in rows])  # type: ignore[misc]

    @staticmethod
    def _sorted(rows: list[Row]) -> list[Row]:
        return sorted(rows, key=lambda row: len(_key(row[0])[3]), reverse=True)

    @property
    def rows(self) -> list[Row]:
        if self._rows is None:
            self._rows = self._sorted([
                (r.url,
                 RepoCredentials(r.username, r.password, r.ca_bundle, scope=f"chart-repository:{r.pk}"),
                 frozenset(g.pk for g in r.cluster_groups.all()), r.name)
                for r in ChartRepository.objects.prefetch_related("cluster_groups")])
        return self._rows

    def __call__(self, url: str) -> RepoCredentials | None:
        withheld: RepoCredentials | None = None
        for prefix, creds, groups, name in self.rows:
            if not matches(prefix, url):
                continue
            if not groups or self.group_id in groups:
                return creds
            if withheld is None:
                withheld = RepoCredentials(withheld=name or "(unnamed)")
        return withheld


def build_fetcher(*, offline: bool | None = None, group_id: int | None = None) -> ChartFetcher:
    """A fetcher for one render run of the mappings of one cluster group (close it after the run): only
    the chart repositories available to that group lend it their credentials, and its memory of resolved
    charts is its own, never another group's."""
    return ChartFetcher(
        settings.FLEETGATE_CHART_CACHE,
        credentials=CredentialTable(group_id=group_id),
        deny_networks=urlguard.deny_networks(),
        timeout=float(settings.FLEETGATE_CHART_TIMEOUT),
        max_chart_bytes=settings.FLEETGATE_CHART_MAX_BYTES,
        max_index_bytes=settings.FLEETGATE_CHART_INDEX_MAX_BYTES,
        ca_file=settings.FLEETGATE_CHART_CA_FILE or None,
        offline=settings.FLEETGATE_CHART_OFFLINE if offline is None else offline,
    )


def check_chart_repository_scope(user: Any, repository: ChartRepository, action: str) -> None:
    """Refuse (OutOfScope, 403) when ``user`` may not ``action`` (add, change, delete) this saved chart
    repository: a group-scoped role reaches one only when it holds the permission in every group the
    repository serves, and one serving every group (no cluster_groups) only with a role on all clusters.
    ``user`` None: a system write."""
    from fleet.access.restrict import permission_name, scope_for
    from fleet.access.writes import OutOfScope

    if user is None:
        return
    scope = scope_for(user, permission_name(ChartRepository, action))
    if scope.everywhere:
        return
    groups = list(repository.cluster_groups.all())
    if not groups:
        raise OutOfScope("A chart repository without cluster groups lends its credentials to every group's "
                         "mappings: only a role on all clusters may " + action + " one; name the groups "
                         "you manage in cluster_groups.")
    outside = sorted(g.name for g in groups if g.pk not in scope.groups)
    if outside:
        raise OutOfScope(f"You may not {action} a chart repository serving groups you do not manage: "
                         f"{', '.join(outside)}.")
