"""Connector benchmark: ordered server-side apply of 50 objects to 100 sandbox clusters through the
connector, against the bare ``kubernetes`` client doing the same server-side apply calls, in the same run
and at the same concurrency (a thread pool of 8).

    .venv/bin/python -m bench connector
    .venv/bin/python -m bench connector -- --clusters 20 --objects 50 --workers 8

The sandbox runs in its own process (``python -m clusters.sandbox serve``), so its CPU is not charged
to the clients. Each side gets its own namespace in every cluster, so both create the same objects the
first time ("create") and both re-apply unchanged objects the second time ("re-apply").

What the connector does on top of the bare calls: tracking annotation and label, kind ordering, one
labelled list per (kind, namespace) to tell "unchanged" from "configured", result objects, retry
wrappers. Both sides build one client per cluster, with its own discovery cache file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

ROOT = Path(__file__).resolve().parent.parent


def manifests(count: int) -> list[dict[str, Any]]:
    """``count`` objects: ConfigMaps, Secrets, Services and Deployments (no namespace: the default)."""
    out: list[dict[str, Any]] = []
    for i in range(count):
        kind = ("ConfigMap", "ConfigMap", "ConfigMap", "Secret", "Service", "Deployment")[i % 6]
        name = f"obj-{i}"
        if kind == "ConfigMap":
            out.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": {"i": str(i)}})
        elif kind == "Secret":
            out.append(
                {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": {"k": "dmFsdWU="}}
            )
        elif kind == "Service":
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": kind,
                    "metadata": {"name": name},
                    "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
                }
            )
        else:
            labels = {"app": name}
            out.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": kind,
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                        },
                    },
                }
            )
    return out


def start_sandbox(clusters: int, token: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clusters.sandbox",
            "serve",
            "--clusters",
            str(clusters),
            f"--token={token}",  # one argument: a random token may start with "-"
            "--rollout-delay",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    urls: list[str] = []
    header = proc.stdout.readline()
    if not header.startswith("sandbox serving"):
        proc.kill()
        raise RuntimeError(f"the sandbox did not start: {header!r}")
    while len(urls) < clusters:
        _name, url = proc.stdout.readline().split()
        urls.append(url)
    return proc, urls


def bare_apply(url: str, token: str, objects: list[dict[str, Any]], namespace: str, cache: Path) -> int:
    """The same server-side apply calls with the bare client: one DynamicClient, one PATCH per object."""
    cfg = k8s.Configuration()
    cfg.host = url
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api = k8s.ApiClient(cfg)
    try:
        dyn = DynamicClient(api, cache_file=str(cache))
        ns = dyn.resources.get(prefix="api", api_version="v1", kind="Namespace")
        dyn.server_side_apply(
            ns,
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            field_manager="fleetgate",
            serialize=False,
        )
        resources: dict[tuple[str, str], Any] = {}
        for obj in objects:
            key = (obj["apiVersion"], obj["kind"])
            if key not in resources:  # the same scoped discovery lookup the connector makes
                group, _, version = obj["apiVersion"].rpartition("/")
                resources[key] = dyn.resources.get(
                    prefix="apis" if group else "api", group=group, api_version=version, kind=obj["kind"]
                )
            dyn.server_side_apply(
                resources[key], body=obj, namespace=namespace, field_manager="fleetgate", serialize=False
            )
        return len(objects) + 1
    finally:
        api.close()


def bare_tracked_apply(
    url: str, token: str, objects: list[dict[str, Any]], namespace: str, cache: Path
) -> int:
    """The bare client sending the bodies the connector sends (tracking annotation and label added):
    separates the cost of the tracking metadata (on the server too) from the connector's own."""
    from clusters.connector.objects import ObjectRef, with_tracking

    tracked = []
    for obj in objects:
        ref = ObjectRef(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"])
        tracked.append(with_tracking(obj, "bench", ref))
    return bare_apply(url, token, tracked, namespace, cache)


def connector_apply(url: str, token: str, objects: list[dict[str, Any]], namespace: str, cache: Path) -> int:
    from clusters.connector import ClusterCredentials, Connector, ConnectorOptions

    creds = ClusterCredentials(name=url.rsplit("/", 1)[-1], server=url, token=token)
    batch = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, *objects]
    with Connector(creds, ConnectorOptions(cache_dir=str(cache))) as kube:
        result = kube.apply(batch, mapping="bench", default_namespace=namespace)
    if not result.ok:
        failed = [r for r in result.results if r.failed]
        raise RuntimeError(f"{url}: {failed[0].ref}: {failed[0].message}")
    return len(result.results)


def timed(fn: Any, urls: list[str], workers: int, *args: Any) -> tuple[float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        counts = list(pool.map(lambda u: fn(u, *args), urls))
    return time.perf_counter() - start, sum(counts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench connector")
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per phase, alternating order (best)")
    args = parser.parse_args(argv or [])
    token = secrets.token_urlsafe(16)
    objects = manifests(args.objects)
    with tempfile.TemporaryDirectory(prefix="bench-connector-") as tmp:
        work = Path(tmp)
        proc, urls = start_sandbox(args.clusters, token)
        try:
            rows: dict[tuple[str, str], float] = {}
            sides = [
                ("bare client", bare_apply),
                ("bare+tracking", bare_tracked_apply),
                ("connector", connector_apply),
            ]
            for phase in ("create", "re-apply"):
                for rnd in range(args.rounds):
                    order = sides if rnd % 2 == 0 else sides[::-1]  # alternate who goes first
                    for side, fn in order:
                        ns = f"bench-{side.split()[0].replace('+', '-')}-{rnd}"
                        cache = work / f"{ns}-{phase}"
                        cache.mkdir()
                        seconds, calls = timed(
                            lambda u, fn=fn, ns=ns, cache=cache: fn(
                                u, token, objects, ns, cache / f"{u.rsplit('/', 1)[-1]}.json"
                            ),
                            urls,
                            args.workers,
                        )
                        key = (phase, side)
                        rows[key] = min(seconds, rows.get(key, seconds))
                        print(
                            f"{phase:9} round {rnd + 1} {side:13} {seconds:7.2f} s  "
                            f"({calls} objects, {calls / seconds:7.0f} objects/s)",
                            flush=True,
                        )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    summary = {
        "clusters": args.clusters,
        "objects_per_cluster": args.objects + 1,
        "workers": args.workers,
        "rounds": args.rounds,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
    }
    for phase in ("create", "re-apply"):
        bare, tracked = rows[(phase, "bare client")], rows[(phase, "bare+tracking")]
        conn = rows[(phase, "connector")]
        summary[phase] = {
            "bare_s": round(bare, 2),
            "bare_tracking_s": round(tracked, 2),
            "connector_s": round(conn, 2),
            "ratio": round(conn / bare, 2),
            "ratio_vs_tracked": round(conn / tracked, 2),
        }
        print(
            f"{phase}: connector / bare = {conn / bare:.2f}, "
            f"connector / bare+tracking = {conn / tracked:.2f}",
            flush=True,
        )
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
