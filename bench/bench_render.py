"""Rendering benchmark: the sources service against the core render() doing the same work without the DB.

    .venv/bin/python -m bench render                        # 200 mapped paths x 20 clusters
    .venv/bin/python -m bench render -- --paths 50 --clusters 5

A child process gets a scratch SQLite database and git cache in a temporary directory (DATABASE_URL,
FLEETGATE_VAR_DIR), migrates it, and builds a real git repository with N mapped paths (3 small objects each,
using ``${cluster.name}`` and ``${cluster.labels.region}`` so that every cluster needs its own render) and a
group of M clusters. It measures:

1. first: ``services.fetch_repository()`` on the first commit: the fetch, the commit row, and every mapping
   rendered for every cluster (N x M renders), with the rows written and the queries run;
2. one path: a commit that changes one path, fetched the same way: only that mapping renders (M renders);
3. baseline: the core ``render()`` (with ``compute_input_hash`` first, as the service does) over one shared
   ``SourceTree`` for the same N x M and M requests, no database, in the same run.

The service overhead ratio is service time / baseline time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import isolated

ROOT = Path(__file__).resolve().parent.parent

DOCS = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
data:
  cluster: ${{cluster.name}}
  region: ${{cluster.labels.region}}
  revision: "{rev}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: app
        image: registry.example.com/{name}:1.0
        env:
        - {{name: CLUSTER, value: "${{cluster.name}}"}}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - port: 80
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **isolated.GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout.strip()


# --- child: one measurement in a scratch database --------------------------------------------------------


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


def child(paths: int, clusters: int, workdir: Path, receivers: bool) -> dict[str, Any]:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    if not receivers:
        from fleet.rollouts import pipeline
        from fleet.sources.services.fetch import FetchStages, set_fetch_stages

        # sources alone: without the pipeline's next stage after a stored render (the rollouts app starts a
        # rollout, with its policy evaluation, for every rendered mapping)
        set_fetch_stages(FetchStages(commits_recorded=pipeline.commits_recorded))

    from clusters.models import Cluster, ClusterGroup
    from fleet.audit.models import AuditEvent
    from fleet.sources.models import Commit, MappingRender, PathMapping, RenderedManifest, Repository
    from fleet.sources.render import ClusterContext, RenderRequest, SourceTree, compute_input_hash, render
    from fleet.sources.services import fetch_repository, repository_cache

    origin = workdir / "origin"
    origin.mkdir()
    _git(origin, "init", "-q", "-b", "main")
    for i in range(paths):
        d = origin / "apps" / f"app-{i:03d}"
        d.mkdir(parents=True)
        (d / "app.yaml").write_text(DOCS.format(name=f"app-{i:03d}", rev=0))
    _git(origin, "add", "-A")
    _git(origin, "commit", "-q", "-m", "initial")

    group = ClusterGroup.objects.create(name="bench", selector={"matchLabels": {"bench": "yes"}})
    regions = ("eu", "us", "ap")
    for j in range(clusters):
        Cluster.objects.create(name=f"c-{j:02d}", api_url=f"https://10.0.0.{j + 1}:6443", token="bench-token",
                               labels={"bench": "yes", "region": regions[j % 3]})
    repo = Repository.objects.create(name="bench", url=origin.as_uri())
    PathMapping.objects.bulk_create([
        PathMapping(repository=repo, name=f"app-{i:03d}", path=f"apps/app-{i:03d}", cluster_group=group)
        for i in range(paths)
    ])
    rows_before = {"audit": AuditEvent.objects.count()}

    def measure(label: str) -> dict[str, Any]:
        counter = QueryCounter()
        started, cpu_started = time.perf_counter(), time.process_time()
        with connection.execute_wrapper(counter):
            outcome = fetch_repository(repo)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        if not outcome.ok:
            raise RuntimeError(f"{label}: {outcome.error}")
        rendered = sum(r.rendered for r in outcome.renders)
        reused = sum(r.reused for r in outcome.renders)
        return {"seconds": seconds, "cpu": cpu, "mappings": len(outcome.renders), "renders": rendered,
                "reused": reused, "queries": counter.count,
                "failed": sum(r.status == "failed" for r in outcome.renders)}

    first = measure("first")
    first_rows = {
        "commits": Commit.objects.count(),
        "mapping_renders": MappingRender.objects.count(),
        "rendered_manifests": RenderedManifest.objects.count(),
        "audit_events": AuditEvent.objects.count() - rows_before["audit"],
    }
    d = origin / "apps" / "app-007"
    (d / "app.yaml").write_text(DOCS.format(name="app-007", rev=1))
    _git(origin, "commit", "-q", "-am", "change one path")
    one = measure("one path")
    one["rendered_manifests_added"] = RenderedManifest.objects.count() - first_rows["rendered_manifests"]

    # Baseline: the core alone, same requests, one shared tree, no database.
    cache = repository_cache(repo)
    members = list(group.members.order_by("name"))
    head = repo.commits.order_by("-sequence").first()
    assert head is not None

    def baseline(path_names: list[str]) -> dict[str, Any]:
        count = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        with cache.export(head.sha) as root:
            tree = SourceTree(root)
            for p in path_names:
                for c in members:
                    request = RenderRequest(path=p, cluster=ClusterContext(
                        name=c.name, labels=c.labels, group=group.name, repository=repo.url, commit=head.sha))
                    compute_input_hash(tree, request)
                    render(tree, request)
                    count += 1
        return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu_started,
                "renders": count}

    all_paths = [f"apps/app-{i:03d}" for i in range(paths)]
    base_full = baseline(all_paths)
    base_one = baseline(["apps/app-007"])
    return {
        "paths": paths,
        "clusters": clusters,
        "receivers": receivers,
        "first": first,
        "first_rows": first_rows,
        "one": one,
        "baseline_full": base_full,
        "baseline_one": base_one,
    }


# --- parent -----------------------------------------------------------------------------------------------


def run_child(paths: int, clusters: int, receivers: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleetgate-bench-render-") as tmp:
        work = Path(tmp)
        return isolated.run(
            "bench.bench_render",
            ["--child", "--paths", str(paths), "--clusters", str(clusters), "--workdir", str(work)]
            + ([] if receivers else ["--sources-only"]),
            isolated.env(work))


def report(results: list[dict[str, Any]]) -> str:
    r0 = results[0]
    lines = [
        f"{r0['paths']} mapped paths x {r0['clusters']} clusters, 3 objects per path, every file using "
        "`${cluster.name}` (so no reuse across clusters); SQLite file database; one process.",
        "",
        "| run | wall time | CPU time (this process) | renders | renders/s (wall) | queries "
        "| baseline (core render(), no DB): wall / CPU | overhead: wall / CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        what = "with the rollouts app's render receivers" if r["receivers"] else "sources alone"
        for label, m, b in (("first fetch, full render", r["first"], r["baseline_full"]),
                            ("commit changing one path", r["one"], r["baseline_one"])):
            lines.append(
                f"| {label} ({what}) | {m['seconds']:.2f} s | {m['cpu']:.2f} s | {m['renders']} | "
                f"{m['renders'] / m['seconds']:.0f} | {m['queries']} | {b['seconds']:.2f} s / "
                f"{b['cpu']:.2f} s ({b['renders']} renders) | {m['seconds'] / b['seconds']:.1f}x / "
                f"{m['cpu'] / b['cpu']:.1f}x |")
    rows, o = r0["first_rows"], r0["one"]
    lines += [
        "",
        f"Rows written by the first fetch: {rows['commits']} commit, {rows['mapping_renders']} mapping "
        f"renders, {rows['rendered_manifests']} rendered manifests, {rows['audit_events']} audit events "
        f"(sources alone). The one-path commit rendered {o['mappings']} mapping and added "
        f"{o['rendered_manifests_added']} rendered manifests.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench render")
    parser.add_argument("--paths", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sources-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["sources", "deployed"], help="run one configuration")
    args = parser.parse_args(argv if argv is not None else [])
    if args.child:
        print(json.dumps(child(args.paths, args.clusters, Path(args.workdir), not args.sources_only)))
        return
    configs = {"sources": [False], "deployed": [True]}.get(args.only or "", [False, True])
    print(report([run_child(args.paths, args.clusters, receivers) for receivers in configs]))


if __name__ == "__main__":
    main(sys.argv[1:])
