"""First contact benchmark: the live read a rollout's prepare makes of each cluster it has not talked to
yet (a Namespace, a ConfigMap and a Deployment, absent), on N sandbox clusters, three ways in the same run:

- **bare**: the ``kubernetes`` client alone, as a script would: a DynamicClient per cluster with its own
  discovery cache file, then the three GETs (the baseline);
- **connector, own discovery**: ``Connector.read_live`` with ``shared_discovery=False``: every cluster
  discovered on its own (/version, /apis, /api/v1, /apis/apps/v1), as before issue 19;
- **connector, shared**: the same with Kubernetes' own groups shared by server version
  (clusters/connector/discovery.py): /version, then the three GETs.

    .venv/bin/python -m bench first_contact
    .venv/bin/python -m bench first_contact -- --clusters 300 --threads 1,8

The sandbox runs in its own process, so its CPU is not charged to the clients (on 2 cores it shares them).
Each side gets a fresh cache directory and, for the shared side, an empty shared store, so each cluster
is a first contact for each side. Sides alternate order over the rounds; the best round counts. Prints
milliseconds per cluster, requests per cluster, and the ratio to the bare script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from bench.bench_connector import start_sandbox

OBJECTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "web"}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "web"}},
]


def bare(url: str, token: str, cache: Path, index: int) -> None:
    cfg = k8s.Configuration()
    cfg.host = url
    cfg.api_key = {"authorization": f"Bearer {token}"}
    api = k8s.ApiClient(cfg)
    dyn = DynamicClient(api, cache_file=str(cache / f"bare-{index}.json"))
    for body in OBJECTS:
        resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        try:
            dyn.get(resource, name=body["metadata"]["name"], namespace=body["metadata"].get("namespace"))
        except NotFoundError:
            pass
    api.close()


def connector(url: str, token: str, cache: Path, index: int, shared: bool) -> None:
    from clusters.connector import ClusterCredentials, Connector, ConnectorOptions

    creds = ClusterCredentials(name=f"c{index}", server=url, token=token)
    with Connector(creds, ConnectorOptions(cache_dir=str(cache), shared_discovery=shared)) as kube:
        kube.read_live(OBJECTS, mapping="bench", default_namespace="web", prune=False)


def side(name: str, urls: list[str], token: str, threads: int) -> float:
    from clusters.connector import discovery

    discovery.SHARED.clear()
    cache = Path(tempfile.mkdtemp(prefix=f"fg-first-contact-{name}-"))
    if name == "bare":
        one = lambda item: bare(item[1], token, cache, item[0])  # noqa: E731
    else:
        one = lambda item: connector(item[1], token, cache, item[0], name == "shared")  # noqa: E731
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, enumerate(urls)))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench first_contact")
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--threads", default="1,8", help="comma-separated thread counts (1,8)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(16)
    proc, urls = start_sandbox(args.clusters, token)
    rows = []
    try:
        load_before = [round(x, 2) for x in os.getloadavg()]
        for threads in (int(t) for t in args.threads.split(",")):
            best: dict[str, float] = {}
            names = ["bare", "own", "shared"]
            for round_ in range(args.rounds):
                order = names if round_ % 2 == 0 else list(reversed(names))
                for name in order:
                    took = side(name, urls, token, threads)
                    best[name] = min(best.get(name, took), took)
            row = {
                "threads": threads,
                **{f"{n}_ms_per_cluster": round(best[n] / args.clusters * 1000, 2) for n in names},
                "own_ratio": round(best["own"] / best["bare"], 2),
                "shared_ratio": round(best["shared"] / best["bare"], 2),
            }
            rows.append(row)
            print(
                f"{args.clusters} first contacts, {threads} thread(s): bare {row['bare_ms_per_cluster']} ms, "
                f"connector own discovery {row['own_ms_per_cluster']} ms ({row['own_ratio']}x), "
                f"shared by version {row['shared_ms_per_cluster']} ms ({row['shared_ratio']}x) per cluster",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    summary = {
        "clusters": args.clusters,
        "rounds": args.rounds,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
