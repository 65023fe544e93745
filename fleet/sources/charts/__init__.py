"""Charts from outside the repository: Helm index repositories (``index.yaml`` over HTTPS), OCI registries
(``oci://``) and archive URLs, fetched through a cache keyed by digest (Django-free).

    from fleet.sources.charts import ChartFetcher, ChartSpec, RepoCredentials

    with ChartFetcher(cache_dir, credentials=lookup, deny_networks=nets) as charts:
        resolved = charts.resolve(ChartSpec(chart="web", repo="https://charts.example.com", version="^1.2"))
        archive = charts.fetch(resolved)       # <cache>/sha256/<hex>.tgz, verified

Errors are ``ChartError`` (a RenderError) with a ``code``: network_required, auth_failed, not_found,
digest_mismatch, too_large, refused, invalid.  See ``fetcher`` for the rules.
"""

from .errors import CODES, ChartError
from .fetcher import ChartFetcher, FetchStats
from .spec import ChartSpec, RepoCredentials, ResolvedChart, redact

__all__ = [
    "CODES",
    "ChartError",
    "ChartFetcher",
    "ChartSpec",
    "FetchStats",
    "RepoCredentials",
    "ResolvedChart",
    "redact",
]
