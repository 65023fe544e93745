"""Metrics overhead: an API list request with and without the metrics middleware, and the cost of a scrape.

    .venv/bin/python -m bench metrics
    .venv/bin/python -m bench metrics -- --clusters 10000 --requests 300 --rounds 7

One child process on a scratch SQLite database (migrated first), in prometheus_client's multiprocess mode
as in production (PROMETHEUS_MULTIPROC_DIR in a temporary directory):

1. request: ``GET /api/clusters/?limit=50`` with an API token, through two Django test clients in the same
   process, one with the settings' middleware (django-prometheus's before/after middleware included) and one
   with those two removed; rounds alternate between them and each reports the median time per request of its
   round, so that machine load hits both alike. Printed: the medians and their ratio, and the difference in
   microseconds per request.
2. scrape: ``GET /metrics`` (bearer token) with N clusters, rollouts and synced states in the database: the
   time per scrape and the number of SQL queries it ran (the same for any N).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import isolated

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_MIDDLEWARE = (
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
)


def _env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "FLEETGATE_VAR_DIR": str(workdir / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        "CELERY_BROKER_URL": f"sqla+sqlite:///{workdir / 'broker.sqlite3'}",
        "FLEETGATE_LOG_LEVEL": "WARNING",
        "FLEETGATE_SSL_REDIRECT": "0",
        "FLEETGATE_METRICS_TOKEN": "bench-metrics-token",
    }


def _child(args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext

    from clusters.models import Cluster
    from fleet.access.models import APIToken, RoleBinding
    from fleet.celery import prepare_broker
    from fleet.rollouts.models import Rollout, SyncedState
    from tests.factories import ClusterFactory, CommitFactory, PathMappingFactory, UserFactory

    prepare_broker()
    user = UserFactory(username="bench")
    RoleBinding.objects.create(user=user, role="admin")
    _, key = APIToken.issue(user, description="bench")
    Cluster.objects.bulk_create(ClusterFactory.build() for _ in range(args.list_clusters))
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    url = "/api/clusters/?limit=50"

    with_metrics = Client(**auth)
    assert with_metrics.get(url).status_code == 200  # the handler loads the settings' middleware now
    without = [m for m in settings.MIDDLEWARE if m not in PROMETHEUS_MIDDLEWARE]
    with override_settings(MIDDLEWARE=without):
        without_metrics = Client(**auth)
        assert without_metrics.get(url).status_code == 200

    def per_request(client: Client, path: str, n: int) -> float:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            client.get(path)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    rounds: dict[str, list[float]] = {"with": [], "without": [], "probe_with": [], "probe_without": []}
    for i in range(args.rounds):
        order = [("with", with_metrics), ("without", without_metrics)]
        for name, client in order if i % 2 == 0 else list(reversed(order)):
            rounds[name].append(per_request(client, url, args.requests))
            # The middleware's own cost, on a request that does almost nothing else.
            rounds[f"probe_{name}"].append(per_request(client, "/healthz", args.requests * 5))

    mapping = PathMappingFactory()
    commit = CommitFactory(repository=mapping.repository)
    have = Cluster.objects.count()
    Cluster.objects.bulk_create(ClusterFactory.build() for _ in range(max(0, args.clusters - have)))
    clusters = list(Cluster.objects.values_list("pk", flat=True))
    SyncedState.objects.bulk_create(
        SyncedState(mapping=mapping, cluster_id=pk, drift_status="drifted" if pk % 10 == 0 else "in_sync")
        for pk in clusters
    )
    Rollout.objects.bulk_create(Rollout(mapping=mapping, commit=commit, state="synced") for _ in range(1000))
    scraper = Client(HTTP_AUTHORIZATION="Bearer bench-metrics-token")
    assert scraper.get("/metrics").status_code == 200
    scrapes = []
    for _ in range(args.scrapes):
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            response = scraper.get("/metrics")
            scrapes.append(time.perf_counter() - start)
        assert response.status_code == 200
    return {
        **rounds,
        "scrape_seconds": statistics.median(scrapes),
        "scrape_queries": len(queries.captured_queries),
        "scrape_bytes": len(response.content),
        "clusters": len(clusters),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench metrics")
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per client (alternating)")
    parser.add_argument("--list-clusters", type=int, default=200, help="clusters behind the list request")
    parser.add_argument("--clusters", type=int, default=10000, help="clusters in the database when scraped")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="fleetgate-bench-metrics-") as tmp:
        workdir = Path(tmp)
        (workdir / "metrics").mkdir()
        env = _env(workdir)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "child"]
        result = isolated.run("bench.bench_metrics", ["--child", *forwarded], env)
    print(f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}; python {sys.version.split()[0]}")
    print("\n## Metrics middleware on a request (median per request of each round; median and best round)\n")
    print(
        "| request | with metrics, ms | without (baseline), ms "
        "| ratio (median) | ratio (best) | difference |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, key in (("GET /api/clusters/?limit=50 (API list)", ""), ("GET /healthz", "probe_")):
        on, off = result[f"{key}with"], result[f"{key}without"]
        on_ms, off_ms = statistics.median(on) * 1000, statistics.median(off) * 1000
        best = min(on) / min(off)
        print(
            f"| {label} | {on_ms:.3f} | {off_ms:.3f} | {on_ms / off_ms:.3f} | {best:.3f} | "
            f"{(min(on) - min(off)) * 1e6:+.0f} µs (best rounds) |"
        )
    print(f"\n## Scrape of /metrics with {result['clusters']} clusters\n")
    print(
        f"median {result['scrape_seconds'] * 1000:.1f} ms per scrape, "
        f"{result['scrape_queries']} SQL queries, {result['scrape_bytes']:,} bytes"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
