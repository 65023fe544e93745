"""Drift-check benchmark: one drift pass over N sandbox clusters by real Celery workers (the beat task
``fleet.rollouts.check_drift`` sent as beat sends it), against a bare script doing the same reads with the
``kubernetes`` client at the same concurrency, in the same run; then the handling of a commit that touches one
of 200 mapped paths.

    .venv/bin/python -m bench drift                                   # N = 100 and 1000
    .venv/bin/python -m bench drift -- --clusters 1000
    .venv/bin/python -m bench drift -- --clusters 1000 --database postgres   # PostgreSQL + Redis
      (a scratch database ``fleetgate_drift_bench`` next to DATABASE_URL's, or BENCH_DRIFT_POSTGRES_URL)

What runs, per N (everything on 127.0.0.1, in a scratch directory):
- sandbox server processes, ``--per-process`` virtual clusters each (N clusters, read by both sides);
- a database migrated from scratch (SQLite, or a scratch PostgreSQL database) and the broker (the embedded
  SQLite broker, or a redis-server started for the run with ``--broker redis``; default: redis with
  PostgreSQL, SQLite with SQLite); ``--workers`` Celery worker processes of concurrency
  ``parallel / workers``;
- one mapping (a Namespace, a ConfigMap and a Deployment) synced to N clusters: the setup applies the objects
  with the product's connector (``fleet.rollouts.ports.apply``, server-side apply) and stores what it
  applied as the SyncedState rows a sync keeps (not through a rollout: the rollout bench measures that);
- drift on purpose: every 10th cluster's ConfigMap is edited by another field manager, every 50th
  cluster's ConfigMap is deleted;
- the pass: ``check_drift`` sent to the broker; a worker runs ``check_all`` (one query, a task per state);
  the workers run ``check_drift_one`` per state (read the live objects, compare, store, audit the drifted).
  Timed from the send to the last ``drift_checked_at``;
- the bare script: ``--parallel`` threads, per cluster an ApiClient and a DynamicClient (discovery cached
  in a file, primed before the timing as Fleetgate's is by the setup), a GET of each of the three objects
  and a comparison of the applied fields; no database, no audit, no queue.

Reported: pass wall time, clusters/s, ratio to the bare script, the drifted count found (must equal the
count made), queries per cluster (CaptureQueriesContext around ``check_drift`` of one in-sync and one
drifted cluster, and around ``check_all``), worker RSS before and after the pass (VmRSS of each worker and
its pool children; and the peak VmHWM), the load average before and after; and for the commit section:
200 mappings over 200 paths, one commit touching one path: fetch seconds, renders, rollouts and queries.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import isolated
from bench.bench_rollout import (  # the rollout bench's process helpers and sandbox token
    TOKEN,
    _children,
    _load,
    _peak_kb,
    _start_sandboxes,
    _stop,
    _worker_rss,
)

ROOT = isolated.ROOT
FILES = {
    "apps/web/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n",
    "apps/web/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: web\n"
    "data:\n  color: blue\n",
    "apps/web/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
    "  namespace: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n"
    "    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: main\n"
    "          image: nginx:1.27\n",
}
CHANGED_EVERY, DELETED_EVERY = 10, 50  # drift made on purpose: clusters i % 10 == 3 and i % 50 == 7
PATHS = 200  # the commit section: mappings over this many paths


def _changed(i: int) -> bool:
    return i % CHANGED_EVERY == 3


def _deleted(i: int) -> bool:
    return i % DELETED_EVERY == 7


# --- parent ------------------------------------------------------------------------------------------


def _bodies() -> list[dict[str, Any]]:
    import yaml

    return [yaml.safe_load(text) for text in FILES.values()]


def _client(url: str, cache: Path) -> Any:
    from kubernetes import client as k8s
    from kubernetes.dynamic import DynamicClient

    cfg = k8s.Configuration()
    cfg.host = url
    cfg.api_key = {"authorization": f"Bearer {TOKEN}"}
    api = k8s.ApiClient(cfg)
    return api, DynamicClient(api, cache_file=str(cache))


def _make_drift(urls: list[str], parallel: int, cache_dir: Path) -> int:
    """Prime the bare script's discovery cache of every cluster, and drift the chosen ones on purpose."""
    edited = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web", "namespace": "web"},
        "data": {"color": "red"},
    }

    def one(i_url: tuple[int, str]) -> int:
        i, url = i_url
        api, dyn = _client(url, cache_dir / f"discovery-{i}.json")
        cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
        if _deleted(i):
            cms.delete(name="web", namespace="web")
        elif _changed(i):
            dyn.server_side_apply(
                cms, body=edited, namespace="web", field_manager="kubectl-edit", force_conflicts=True
            )
        api.close()
        return int(_deleted(i) or _changed(i))

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return sum(pool.map(one, enumerate(urls)))


def _differs(want: Any, live: Any) -> bool:
    if isinstance(want, dict):
        return not isinstance(live, dict) or any(_differs(v, live.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (
            not isinstance(live, list)
            or len(want) != len(live)
            or any(_differs(a, b) for a, b in zip(want, live, strict=False))
        )
    return bool(want != live)


def _bare_script(urls: list[str], parallel: int, cache_dir: Path) -> tuple[float, int]:
    """The baseline: per cluster, GET the three objects and compare the applied fields; no bookkeeping."""
    from kubernetes.dynamic.exceptions import NotFoundError

    bodies = _bodies()

    def one(i_url: tuple[int, str]) -> int:
        i, url = i_url
        api, dyn = _client(url, cache_dir / f"discovery-{i}.json")
        drifted = False
        for body in bodies:
            resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
            meta = body["metadata"]
            try:
                live = resource.get(name=meta["name"], namespace=meta.get("namespace")).to_dict()
            except NotFoundError:
                drifted = True
                continue
            want = {k: v for k, v in body.items() if k not in ("metadata", "apiVersion", "kind")}
            drifted = drifted or _differs(want, live)
        api.close()
        return int(drifted)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        found = sum(pool.map(one, enumerate(urls)))
    return time.monotonic() - start, found


def _child(env: dict[str, str], phase: str, payload: dict[str, Any]) -> dict[str, Any]:
    return isolated.run("bench.bench_drift", ["--child", phase, json.dumps(payload)], env, f"child {phase}")


def _start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    from bench.bench_agents import _start_redis as start

    return start(workdir)


def run_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"fleetgate-bench-drift-{n}-"))
    procs: list[subprocess.Popen] = []
    workers: list[subprocess.Popen] = []
    try:
        extra: dict[str, str] = {}
        pg = ""
        if args.database == "postgres":
            pg = isolated.postgres_url("BENCH_DRIFT_POSTGRES_URL", "fleetgate_drift_bench")
            if not pg:
                raise SystemExit(
                    "--database postgres needs BENCH_DRIFT_POSTGRES_URL or a PostgreSQL DATABASE_URL"
                )
            from bench.bench_audit import _reset_postgres

            _reset_postgres(pg)
            extra["DATABASE_URL"] = pg
        broker = args.broker or ("redis" if pg else "sqlite")
        if broker == "redis":
            redis, url = _start_redis(workdir)
            procs.append(redis)
            extra["CELERY_BROKER_URL"] = url + "/0"
        else:  # the embedded default: kombu's SQLAlchemy transport on a SQLite file of the run's own
            extra["CELERY_BROKER_URL"] = f"sqla+sqlite:///{workdir / 'broker.sqlite3'}"
        env = isolated.env(workdir, **extra)
        names = [f"d-{i}" for i in range(n)]
        sandboxes, urls = _start_sandboxes(names, args.per_process, workdir)
        procs += sandboxes
        ordered = [urls[name] for name in names]
        setup = _child(env, "setup", {"urls": urls, "parallel": args.parallel})
        (workdir / "bare-cache").mkdir()
        made = _make_drift(ordered, args.parallel, workdir / "bare-cache")
        concurrency = max(1, args.parallel // args.workers)
        workers = isolated.start_workers(env, workdir, args.workers, concurrency, name="drift")
        time.sleep(3)  # let the workers connect to the broker
        before = {"rss": _worker_rss(workers), "load": _load()}
        result = _child(env, "run", {"timeout": args.timeout, "warm": args.parallel})
        after = {"rss": _worker_rss(workers), "load": _load()}
        peaks = [
            round(max([_peak_kb(w.pid)] + [_peak_kb(c) for c in _children(w.pid)]) / 1024) for w in workers
        ]
        _stop(workers)
        workers = []
        bare_seconds, bare_found = _bare_script(ordered, args.parallel, workdir / "bare-cache")
        queries = _child(env, "queries", {})
        profile = _child(env, "profile", {"count": min(n, 200)}) if args.profile else {}
        paths = (
            _child(env, "paths", {"repo": str(workdir / "paths-repo"), "paths": args.paths})
            if args.paths
            else {}
        )
        return {
            "n": n,
            "database": "postgresql" if pg else "sqlite",
            "broker": broker,
            "setup": setup,
            "drift_made": made,
            **result,
            "bare_seconds": bare_seconds,
            "bare_found": bare_found,
            "queries": queries,
            "paths": paths,
            "profile": profile,
            "rss_before_mb": before["rss"],
            "rss_after_mb": after["rss"],
            "worker_peak_mb": peaks,
            "load_before": before["load"],
            "load_after": after["load"],
            "workers": args.workers,
            "concurrency": concurrency,
        }
    finally:
        _stop(workers)
        _stop(procs)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench drift")
    parser.add_argument(
        "--clusters", default="100,1000", help="comma-separated fleet sizes (default 100,1000)"
    )
    parser.add_argument("--parallel", type=int, default=8, help="checks at once (workers x concurrency; 8)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument("--per-process", type=int, default=250, help="sandbox clusters per process (250)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the pass")
    parser.add_argument(
        "--paths", type=int, default=PATHS, help="mapped paths of the commit section (0: skip)"
    )
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--broker",
        choices=["redis", "sqlite"],
        default="",
        help="default: redis with PostgreSQL, the embedded SQLite broker with SQLite",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also check 200 states in one process, slice by slice, under cProfile",
    )
    args = parser.parse_args(argv or [])
    sizes = [int(x) for x in args.clusters.split(",") if x.strip()]
    print(
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}; database {args.database}; "
        f"parallel {args.parallel} ({args.workers} workers x {max(1, args.parallel // args.workers)}); "
        f"load {_load()}",
        flush=True,
    )
    rows = []
    for n in sizes:
        rows.append(run_one(n, args))
        print(json.dumps(rows[-1], default=str), flush=True)
    print(
        "\n| clusters | db / broker | pass s | bare s | ratio | clusters/s | drifted found / made "
        "| bare found | queries per cluster (slice of 25) | one check in-sync / drifted "
        "| check_all queries / tasks | worker RSS before -> after (peak) | load before -> after |"
    )
    print("|---:|---|---:|---:|---:|---:|---|---:|---:|---|---|---|---|")
    for r in rows:
        q = r["queries"]
        rss = ", ".join(
            f"{a} -> {b} ({p}) MB"
            for a, b, p in zip(r["rss_before_mb"], r["rss_after_mb"], r["worker_peak_mb"], strict=False)
        )
        print(
            f"| {r['n']} | {r['database']} / {r['broker']} | {r['pass_seconds']:.1f} | "
            f"{r['bare_seconds']:.1f} | "
            f"{r['pass_seconds'] / r['bare_seconds']:.1f}x | {r['n'] / r['pass_seconds']:.1f} | "
            f"{r['drifted']} / {r['drift_made']} | {r['bare_found']} | {q['per_cluster']:.2f} | "
            f"{q['in_sync']} / {q['drifted']} | {q['check_all']} / {q['check_all_tasks']} | {rss} | "
            f"{r['load_before']} -> {r['load_after']} |"
        )
    for r in rows:
        if r["profile"]:
            print(
                f"\nN={r['n']}: {r['profile']['checks']} checks in one process, slice by slice: "
                f"{r['profile']['ms_per_check']:.1f} ms per check\n{r['profile']['top']}"
            )
    for r in rows:
        p = r["paths"]
        if p:
            print(
                f"\nN={r['n']}: commit touching 1 of {p['mappings']} mapped paths: "
                f"fetch {p['seconds']:.2f} s, "
                f"{p['renders']} render(s), {p['rollouts']} rollout(s), {p['queries']} queries "
                f"(first fetch of all {p['mappings']}: {p['first_seconds']:.1f} s)"
            )


# --- children (Django) ---------------------------------------------------------------------------


def child_setup(payload: dict[str, Any]) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connections
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    from clusters import membership
    from clusters.models import Cluster, ClusterGroup
    from fleet.rollouts import ports
    from fleet.rollouts.models import SyncedState
    from fleet.sources.models import PathMapping, Repository

    group = ClusterGroup.objects.create(name="bench", selector={"matchLabels": {"bench": "yes"}})
    Cluster.objects.bulk_create(
        [
            Cluster(name=name, api_url=url, auth_method="token", token=TOKEN, labels={"bench": "yes"})
            for name, url in sorted(payload["urls"].items())
        ]
    )
    membership.refresh_group(group)
    repo = Repository.objects.create(name="bench", url="file:///nonexistent", poll_interval=0)
    mapping = PathMapping.objects.select_related("cluster_group", "repository").get(
        pk=PathMapping.objects.create(repository=repo, name="web", path="apps/web", cluster_group=group).pk
    )
    objects = _bodies()
    clusters = list(Cluster.objects.order_by("name"))

    def apply(cluster: Any) -> Any:
        try:
            return ports.apply(cluster, mapping, objects, [], prune=False)
        finally:
            connections.close_all()

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=payload["parallel"]) as pool:
        outcomes = list(pool.map(apply, clusters))
    failed = [c.name for c, o in zip(clusters, outcomes, strict=True) if not o.ok]
    if failed:
        raise RuntimeError(f"apply failed on {failed[:5]}: {outcomes[0].error}")
    now = timezone.now()
    SyncedState.objects.bulk_create(
        [
            SyncedState(
                mapping=mapping,
                cluster=c,
                inventory=o.inventory,
                applied=o.applied,
                health="Healthy",
                drift_status="in_sync",
                synced_at=now,
            )
            for c, o in zip(clusters, outcomes, strict=True)
        ],
        batch_size=500,
    )
    return {"clusters": len(clusters), "apply_seconds": time.monotonic() - start}


def child_run(payload: dict[str, Any]) -> dict[str, Any]:
    from datetime import UTC, datetime

    from django.db.models import Count, Max

    from fleet.celery import app
    from fleet.rollouts import dispatch
    from fleet.rollouts.models import SyncedState

    total = SyncedState.objects.count()
    # Warm-up (untimed): every pool process imports the services and opens its connections on its first task,
    # as long-running workers have; one single-state task per pool process, then the pass.
    warm = datetime.now(UTC)
    first = list(SyncedState.objects.order_by("pk").values_list("pk", flat=True)[: payload["warm"]])
    for pk in first:
        app.send_task(dispatch.CHECK_DRIFT_ONE, args=[pk])
    while SyncedState.objects.filter(pk__in=first, drift_checked_at__gte=warm).count() < len(first):
        time.sleep(0.1)
    start = datetime.now(UTC)
    app.send_task(dispatch.CHECK_DRIFT)  # what beat sends every FLEETGATE_DRIFT_INTERVAL
    deadline = time.monotonic() + payload["timeout"]
    while SyncedState.objects.filter(drift_checked_at__gte=start).count() < total:
        if time.monotonic() > deadline:
            raise RuntimeError("the drift pass did not finish")
        time.sleep(0.25)
    last = SyncedState.objects.aggregate(last=Max("drift_checked_at"))["last"]
    statuses = dict(SyncedState.objects.values_list("drift_status").annotate(n=Count("id")).order_by())
    return {
        "pass_seconds": (last - start).total_seconds(),
        "statuses": statuses,
        "drifted": statuses.get("drifted", 0),
    }


def child_queries(payload: dict[str, Any]) -> dict[str, Any]:
    """Queries of one check of an in-sync and of a drifted state, of one drift task's slice (DRIFT_BATCH
    states, the drifted among them as in the fleet) per state, and of check_all (its tasks not sent)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from fleet.rollouts import dispatch, services
    from fleet.rollouts.models import SyncedState
    from fleet.rollouts.services.drift import DRIFT_BATCH

    def count(fn: Any, *args: Any) -> int:
        with CaptureQueriesContext(connection) as ctx:
            fn(*args)
        return len(ctx.captured_queries)

    in_sync = SyncedState.objects.filter(drift_status="in_sync").values_list("pk", flat=True).first()
    drifted = SyncedState.objects.filter(drift_status="drifted").values_list("pk", flat=True).first()
    count(services.check_drift, in_sync)  # a first connection: opened, not counted
    sent: list[Any] = []
    dispatch.set_sender(lambda name, args, countdown, task_id: sent.append(args))
    ids = list(SyncedState.objects.order_by("cluster_id").values_list("pk", flat=True)[:DRIFT_BATCH])
    states = SyncedState.objects.filter(pk__in=ids)
    slice_drifted = states.filter(drift_status="drifted").count()
    slice_queries = count(services.check_drift_many, ids)
    return {
        "in_sync": count(services.check_drift, in_sync),
        "drifted": count(services.check_drift, drifted),
        "slice": len(ids),
        "slice_drifted": slice_drifted,
        "slice_queries": slice_queries,
        "per_cluster": slice_queries / max(1, len(ids)),
        "check_all": count(services.check_all_drift),
        "check_all_tasks": len(sent),
    }


def child_profile(payload: dict[str, Any]) -> dict[str, Any]:
    """``count`` states checked in this process, slice after slice as the drift tasks do, under cProfile:
    where a check's time goes."""
    import cProfile
    import io
    import pstats

    from fleet.rollouts import services
    from fleet.rollouts.models import SyncedState
    from fleet.rollouts.services.drift import DRIFT_BATCH

    ids = list(SyncedState.objects.order_by("cluster_id").values_list("pk", flat=True)[: payload["count"]])
    services.check_drift(ids[0])
    profiler = cProfile.Profile()
    start = time.monotonic()
    profiler.enable()
    for first in range(0, len(ids), DRIFT_BATCH):
        services.check_drift_many(ids[first : first + DRIFT_BATCH])
    profiler.disable()
    seconds = time.monotonic() - start
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    return {
        "checks": len(ids),
        "seconds": seconds,
        "ms_per_check": 1000 * seconds / len(ids),
        "top": out.getvalue()[-6000:],
    }


def child_paths(payload: dict[str, Any]) -> dict[str, Any]:
    """A repository with ``paths`` mapped paths: the first fetch renders all; a commit touching one path."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from clusters.models import Cluster, ClusterGroup
    from fleet.rollouts import dispatch
    from fleet.rollouts.models import Rollout
    from fleet.sources.models import MappingRender, PathMapping, Repository
    from fleet.sources.services import fetch_repository

    n = payload["paths"]
    path = Path(payload["repo"])
    path.mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(
            ["git", *args], cwd=path, check=True, capture_output=True, env={**os.environ, **isolated.GIT_ENV}
        )

    def write(i: int, color: str) -> None:
        (path / f"apps/a{i:03d}").mkdir(parents=True, exist_ok=True)
        (path / f"apps/a{i:03d}/cm.yaml").write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a{i:03d}\n  namespace: web\ndata:\n"
            f"  color: {color}\n"
        )

    git("init", "-q", "-b", "main")
    for i in range(n):
        write(i, "blue")
    git("add", "-A")
    git("commit", "-q", "-m", "all")
    first = Cluster.objects.order_by("name")[0]
    first.labels = {**first.labels, "paths": "yes"}
    first.save()
    group = ClusterGroup.objects.create(name="paths", selector={"matchLabels": {"paths": "yes"}})
    from clusters import membership

    membership.refresh_group(group)
    repo = Repository.objects.create(name="paths", url=f"file://{path}", poll_interval=0)
    PathMapping.objects.bulk_create(
        [
            PathMapping(repository=repo, name=f"a{i:03d}", path=f"apps/a{i:03d}", cluster_group=group)
            for i in range(n)
        ]
    )
    sent: list[Any] = []
    dispatch.set_sender(lambda name, args, countdown, task_id: sent.append((name, args)))
    start = time.monotonic()
    outcome = fetch_repository(repo)
    first_seconds = time.monotonic() - start
    assert outcome.ok and len(outcome.renders) == n, outcome
    rollouts = Rollout.objects.filter(mapping__repository=repo).count()
    renders = MappingRender.objects.filter(mapping__repository=repo).count()
    write(n // 2, "red")
    git("commit", "-q", "-am", "one path")
    with CaptureQueriesContext(connection) as ctx:
        start = time.monotonic()
        outcome = fetch_repository(repo)
        seconds = time.monotonic() - start
    return {
        "mappings": n,
        "first_seconds": first_seconds,
        "seconds": seconds,
        "queries": len(ctx.captured_queries),
        "renders": MappingRender.objects.filter(mapping__repository=repo).count() - renders,
        "rollouts": Rollout.objects.filter(mapping__repository=repo).count() - rollouts,
        "rendered": [r.mapping for r in outcome.renders],
    }


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        import django

        django.setup()
        phase, data = sys.argv[2], json.loads(sys.argv[3])
        out = {
            "setup": child_setup,
            "run": child_run,
            "queries": child_queries,
            "paths": child_paths,
            "profile": child_profile,
        }[phase](data)
        print(json.dumps(out, default=str))
    else:
        main(sys.argv[1:])
