"""Rollout fan-out benchmark: one commit to N sandbox clusters with real Celery workers, against a bare script
doing the same applies with the ``kubernetes`` client at the same concurrency, in the same run.

    .venv/bin/python -m bench rollout                                  # N = 100 and 300
    .venv/bin/python -m bench rollout -- --clusters 1000               # the full fleet
    .venv/bin/python -m bench rollout -- --clusters 300 --parallel 8 --workers 2 --per-process 250
    .venv/bin/python -m bench rollout -- --clusters 10000 --database postgres   # PostgreSQL + Redis
      (a scratch database ``fleetgate_rollout_bench`` next to DATABASE_URL's, or BENCH_ROLLOUT_POSTGRES_URL)
    .venv/bin/python -m bench rollout -- --clusters 1000,10000 --prepare-only  # stop at queued
    .venv/bin/python -m bench rollout -- --clusters 1000 --profile             # prepare under cProfile

What runs, per N (everything on 127.0.0.1, in a scratch directory):
- sandbox server processes, ``--per-process`` virtual clusters each (2N clusters: N for the rollout, N for
  the bare script), workloads ready at once (``--rollout-delay 0``);
- a database migrated from scratch (``--database sqlite``: a fresh file, the default; ``postgres``: a scratch
  PostgreSQL database dropped and created again) and the broker (a redis-server started for the run when
  installed, else the embedded SQLite broker; ``--broker``); ``--workers`` Celery worker processes of
  concurrency ``parallel / workers``; the group's ``max_parallel`` is ``--parallel``;
- a git repository with one mapping (a Namespace, a ConfigMap and a Deployment); the real fetch renders it
  for N clusters and the rollout runs: prepare (render lookup, gate with one bound policy on regorus,
  audit) and the fan-out (server-side apply, prune check, health wait, SyncedState, audit per cluster);
- the bare script: ``--parallel`` threads in ``--workers`` processes (as the workers have them), each
  cluster a DynamicClient, server-side apply of the same three objects, then polling the Deployment until
  available every 0.1 s (what a sync does, without any bookkeeping). What differs: a sync also runs the
  prune check against the last inventory, applies in order (Namespaces first) and waits for the health
  of all three objects, not only the Deployment's.

Reported: fan-out wall time (rollout queued -> synced) against the bare script (the ratio), prepare time
(rollout created -> queued), clusters/s of each, total time from the fetch, database queries per cluster
(counted in process on the same code path with Django's CaptureQueriesContext over a 40-cluster rollout:
the fan-out's after prepare, and the whole rollout's),
the load average before and after, and each worker's memory over the run: its resident set (the worker and
its pool children) sampled every second, first -> last (the largest sample; the VmHWM peak), so flat or
not shows.

``--prepare-only`` starts only the rollout's N sandbox clusters and stops once the rollout is queued (no
fan-out, no bare script). ``--profile`` runs no workers: the fetch and then prepare in one process, prepare
under cProfile with its queries counted (the functions a worker runs), and prints the top functions.
At 10,000 clusters: 40 sandbox processes of 250 for the rollout (80 with the bare script's), about 30-60 MB
each; ``--timeout`` (default 3600 s) bounds the wait for the rollout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import isolated

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"
FILES = {
    "apps/web/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n",
    "apps/web/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: web\n"
    "data:\n  color: blue\n",
    "apps/web/deploy.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: main
          image: nginx:1.27
""",
}
POLICY = """package main

deny[msg] {
    input.kind == "Deployment"
    endswith(input.spec.template.spec.containers[_].image, ":latest")
    msg := "no latest tags"
}
"""


# --- parent ------------------------------------------------------------------------------------------


BROKER = {"url": ""}


def _start_redis(workdir: Path) -> subprocess.Popen:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    BROKER["url"] = f"redis://127.0.0.1:{port}/0"
    return proc


DATABASE = {"url": ""}  # a scratch PostgreSQL database (--database postgres), else "": SQLite in the workdir


def _env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": DATABASE["url"] or f"sqlite:///{workdir / 'bench.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "FLEETGATE_VAR_DIR": str(workdir / "var"),
        "FLEETGATE_LOG_LEVEL": "WARNING",
        "CELERY_BROKER_URL": BROKER["url"],
        "PYTHONUNBUFFERED": "1",
    }


def _child(workdir: Path, phase: str, payload: dict[str, Any]) -> dict[str, Any]:
    data = workdir / f"payload-{phase}.json"  # a file: 10,000 clusters' URLs exceed an argument's length
    data.write_text(json.dumps(payload))
    run = subprocess.run(
        [sys.executable, "-m", "bench.bench_rollout", "--child", phase, f"@{data}"],
        cwd=ROOT,
        env=_env(workdir),
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"bench child {phase} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _start_sandboxes(
    names: list[str], per_process: int, log_dir: Path
) -> tuple[list[subprocess.Popen], dict]:
    procs: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    try:
        _start_each(names, per_process, log_dir, procs, urls)
    except BaseException:
        _stop(procs)  # none left behind when one does not start
        raise
    return procs, urls


def _start_each(
    names: list[str], per_process: int, log_dir: Path, procs: list[subprocess.Popen], urls: dict[str, str]
) -> None:
    for start in range(0, len(names), per_process):
        chunk = names[start : start + per_process]
        # append mode: the child writes through the same open file whose offset the reads below move back
        # to 0; without O_APPEND its next lines overwrote earlier ones and a cluster went missing
        log = open(log_dir / f"sandbox-{start}.log", "a+")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clusters.sandbox",
                "serve",
                "--names",
                ",".join(chunk),
                "--token",
                TOKEN,
                "--rollout-delay",
                "0",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        deadline = time.monotonic() + 120
        while True:
            log.seek(0)
            lines = [line.split() for line in log.read().splitlines()]
            found = {parts[0]: parts[1] for parts in lines if len(parts) == 2 and parts[0] in chunk}
            if len(found) == len(chunk):
                urls.update(found)
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"sandbox process {len(procs)} did not start ({len(found)} of {len(chunk)} clusters "
                    f"listening, exit code {proc.poll()}): {log.read()[-2000:]}"
                )
            time.sleep(0.2)


def _git_repo(path: Path) -> str:
    path.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True, env=env)
    for rel, text in FILES.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "web"], cwd=path, check=True, env=env)
    return f"file://{path}"


def _peak_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _bare_script(urls: list[str], parallel: int, cache_dir: Path, processes: int = 1) -> float:
    """The baseline: the same server-side applies and health wait with the kubernetes client only, at the
    workers' concurrency and in as many processes as there are workers (``parallel`` threads in all, split
    evenly), so both sides have the same cores to use."""
    items = list(enumerate(urls))
    processes = max(1, min(processes, len(items)))
    threads = max(1, parallel // processes)
    start = time.monotonic()
    if processes == 1:
        _bare_threads(items, threads, cache_dir)
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.starmap(_bare_threads, [(items[i::processes], threads, cache_dir) for i in range(processes)])
    return time.monotonic() - start


def _bare_threads(items: list[tuple[int, str]], threads: int, cache_dir: Path) -> None:
    """One bare-script process: ``threads`` threads over its share of the clusters."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda item: _bare_one(item, cache_dir), items))


def _bare_one(i_url: tuple[int, str], cache_dir: Path) -> None:
    """One cluster: a DynamicClient, server-side apply of the three objects, then polling the Deployment until
    available (every 0.1 s)."""
    import yaml
    from kubernetes import client as k8s
    from kubernetes.dynamic import DynamicClient

    i, url = i_url
    cfg = k8s.Configuration()
    cfg.host = url
    cfg.api_key = {"authorization": f"Bearer {TOKEN}"}
    api = k8s.ApiClient(cfg)
    dyn = DynamicClient(api, cache_file=str(cache_dir / f"discovery-{i}.json"))
    for body in (yaml.safe_load(text) for text in FILES.values()):
        resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        namespace = body["metadata"].get("namespace")
        dyn.server_side_apply(
            resource, body=body, namespace=namespace, field_manager="bare", force_conflicts=True
        )
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    while True:
        live = deployments.get(name="web", namespace="web")
        status = live.to_dict().get("status") or {}
        if status.get("availableReplicas", 0) >= 2 and status.get("updatedReplicas", 0) >= 2:
            break
        time.sleep(0.1)
    api.close()


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _worker_rss(workers: list[subprocess.Popen]) -> list[int]:
    """Each worker's resident memory in MB: the main process and its pool children together."""
    return [round(sum(_rss_kb(p) for p in [w.pid, *_children(w.pid)]) / 1024) for w in workers]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class _Sampler:
    """The workers' resident memory (main process and pool children, summed per worker) every second while
    the rollout runs: flat or not is the first against the last sample, and the largest in between."""

    def __init__(self, workers: list[subprocess.Popen]) -> None:
        import threading

        self.workers, self.samples, self.done = workers, [_worker_rss(workers)], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(1.0):
            self.samples.append(_worker_rss(self.workers))

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.thread.join()
        self.samples.append(_worker_rss(self.workers))
        return {
            "rss_start_mb": self.samples[0],
            "rss_end_mb": self.samples[-1],
            "rss_max_mb": [max(s[i] for s in self.samples) for i in range(len(self.workers))],
            "rss_samples": len(self.samples),
        }


def _reset_postgres(url: str) -> None:
    from bench.bench_audit import _reset_postgres as reset

    reset(url)


def run_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"fleetgate-bench-rollout-{n}-"))
    sandboxes: list[subprocess.Popen] = []
    workers: list[subprocess.Popen] = []
    redis: list[subprocess.Popen] = []
    try:
        DATABASE["url"] = ""
        if args.database == "postgres":
            DATABASE["url"] = isolated.postgres_url("BENCH_ROLLOUT_POSTGRES_URL", "fleetgate_rollout_bench")
            if not DATABASE["url"]:
                raise SystemExit(
                    "--database postgres needs BENCH_ROLLOUT_POSTGRES_URL or a PostgreSQL DATABASE_URL"
                )
            _reset_postgres(DATABASE["url"])
        if args.broker == "redis":
            redis.append(_start_redis(workdir))
        else:  # the embedded default: kombu's SQLAlchemy transport on a SQLite file of the run's own
            BROKER["url"] = f"sqla+sqlite:///{workdir / 'broker.sqlite3'}"
        full = not (args.prepare_only or args.profile)
        names = [f"r-{i}" for i in range(n)] + ([f"b-{i}" for i in range(n)] if full else [])
        sandboxes, urls = _start_sandboxes(names, args.per_process, workdir)
        repo_url = _git_repo(workdir / "repo")
        _child(
            workdir,
            "setup",
            {
                "urls": {k: v for k, v in urls.items() if k.startswith("r-")},
                "repo": repo_url,
                "parallel": args.parallel,
            },
        )
        base = {"n": n, "database": args.database, "broker": args.broker, "prepare_only": not full,
                "load_before": _load()}
        if args.profile:  # prepare in this process under cProfile, no workers (the functions they run)
            result = {**base, **_child(workdir, "profile", {"top": args.profile_top})}
            result["load_after"] = _load()
            return result
        workers = isolated.start_workers(_env(workdir), workdir, args.workers,
                                         max(1, args.parallel // args.workers))
        concurrency = max(1, args.parallel // args.workers)
        deadline = time.monotonic() + 60  # the workers' pools up (the memory's first sample counts them)
        while time.monotonic() < deadline and any(len(_children(w.pid)) < concurrency for w in workers):
            time.sleep(0.5)
        time.sleep(3)  # let the workers connect to the broker
        sampler = _Sampler(workers)
        result = {**base, **_child(workdir, "run", {"timeout": args.timeout, "prepare_only": not full})}
        result.update(sampler.stop())
        result["load_after"] = _load()
        peaks = []
        for w in workers:
            peaks.append(max([_peak_kb(w.pid)] + [_peak_kb(c) for c in _children(w.pid)]))
        result["worker_peak_mb"] = [round(p / 1024) for p in peaks]
        result["worker_processes"] = args.workers
        result["worker_concurrency"] = max(1, args.parallel // args.workers)
        _stop(workers)
        workers = []
        if full:
            (workdir / "bare-cache").mkdir()
            result["bare_seconds"] = _bare_script(
                [urls[f"b-{i}"] for i in range(n)], args.parallel, workdir / "bare-cache", args.workers
            )
        result["queries"] = _child(workdir, "queries", {"full": full})
        return result
    finally:
        _stop(workers)
        _stop(sandboxes)
        _stop(redis)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _rss(r: dict[str, Any]) -> str:
    """Each worker's memory over the run: first -> last sample (largest sample; VmHWM peak)."""
    return ", ".join(
        f"{a} -> {b} ({m}; peak {p}) MB"
        for a, b, m, p in zip(r["rss_start_mb"], r["rss_end_mb"], r["rss_max_mb"], r["worker_peak_mb"],
                              strict=False)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench rollout")
    parser.add_argument("--clusters", default="100,300", help="comma-separated fleet sizes (default 100,300)")
    parser.add_argument("--parallel", type=int, default=8, help="clusters synced at once (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument("--per-process", type=int, default=250, help="sandbox clusters per process (250)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a rollout (3600)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="sqlite (a fresh file; default) or postgres (a scratch database fleetgate_rollout_bench next to "
        "DATABASE_URL's, or BENCH_ROLLOUT_POSTGRES_URL; dropped and created again)",
    )
    parser.add_argument(
        "--broker",
        choices=["redis", "sqlite"],
        default="",
        help="redis (a redis-server started for the run; default when installed) or sqlite (embedded broker)",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="stop when the rollout is queued: prepare only (N sandbox clusters, no bare script)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="no workers: run prepare in process under cProfile and print its top functions",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions printed with --profile (25)")
    args = parser.parse_args(argv or [])
    if not args.broker:
        args.broker = "redis" if shutil.which("redis-server") else "sqlite"
    sizes = [int(x) for x in args.clusters.split(",") if x.strip()]
    print(
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}; database {args.database}; "
        f"broker {args.broker}; "
        f"parallel {args.parallel} ({args.workers} workers x {max(1, args.parallel // args.workers)}; "
        f"the bare script {args.workers} processes x the same threads); "
        f"{args.per_process} clusters per sandbox process; load {_load()}",
        flush=True,
    )
    rows = []
    for n in sizes:
        rows.append(run_one(n, args))
        print(json.dumps(rows[-1], default=str), flush=True)
    if args.profile:
        for r in rows:
            print(
                f"\nN={r['n']} ({r['database']}): prepare in one process {r['prepare_seconds']:.1f} s "
                f"({r['n'] / r['prepare_seconds']:.0f} clusters/s), {r['prepare_queries']} queries, "
                f"peak RSS {r['peak_mb']} MB, load {r['load_before']} -> {r['load_after']}\n{r['top']}"
            )
        return
    if args.prepare_only:
        print(
            "\n| clusters | database / broker | load before -> after | prepare s | prepare clusters/s "
            "| prepare queries (40 clusters) | worker RSS first -> last (largest; peak) |"
        )
        print("|---:|---|---|---:|---:|---:|---|")
        for r in rows:
            print(
                f"| {r['n']} | {r['database']} / {r['broker']} | {r['load_before']} -> {r['load_after']} | "
                f"{r['prepare_seconds']:.1f} | {r['n'] / r['prepare_seconds']:.0f} | "
                f"{r['queries']['prepare']} | {_rss(r)} |"
            )
        return
    print(
        "\n| clusters | database / broker | load before -> after | fan-out s (queued -> synced) "
        "| bare script s | ratio | fan-out clusters/s | prepare s | prepare clusters/s | fetch -> synced s "
        "| queries per cluster: fan-out (whole rollout) | worker RSS first -> last (largest; peak) |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['database']} / {r['broker']} | {r['load_before']} -> {r['load_after']} | "
            f"{r['fanout_seconds']:.1f} | {r['bare_seconds']:.1f} | "
            f"{r['fanout_seconds'] / r['bare_seconds']:.1f}x | {r['n'] / r['fanout_seconds']:.1f} | "
            f"{r['prepare_seconds']:.1f} | {r['n'] / r['prepare_seconds']:.0f} | {r['total_seconds']:.1f} | "
            f"{r['queries']['fanout_per_cluster']:.1f} ({r['queries']['per_cluster']:.1f}) | {_rss(r)} |"
        )
    for r in rows:
        print(
            f"\nN={r['n']}: states {r['states']}; queries for a {r['queries']['clusters']}-cluster rollout: "
            f"{r['queries']['total']} ({r['queries']['prepare']} in prepare)",
            flush=True,
        )


# --- children (Django) ---------------------------------------------------------------------------


def _django() -> None:
    import django

    django.setup()


def child_setup(payload: dict[str, Any]) -> dict[str, Any]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from clusters.models import Cluster, ClusterGroup
    from fleet.sources.models import PathMapping, Repository
    from policies.models import PolicyBinding
    from policies.services.definitions import PolicyDefinition, save_policy

    group = ClusterGroup.objects.create(
        name="bench", selector={"matchLabels": {"bench": "yes"}}, max_parallel=payload["parallel"], prune=True
    )
    Cluster.objects.bulk_create(
        [
            Cluster(name=name, api_url=url, auth_method="token", token=TOKEN, labels={"bench": "yes"})
            for name, url in sorted(payload["urls"].items())
        ]
    )
    from clusters import membership

    membership.refresh_group(group)
    repo = Repository.objects.create(name="bench", url=payload["repo"], poll_interval=0)
    PathMapping.objects.create(repository=repo, name="web", path="apps/web", cluster_group=group)
    policy = save_policy(
        "no-latest", PolicyDefinition(style="conftest", modules=(("p.rego", POLICY),))
    ).policy
    PolicyBinding.objects.create(policy=policy, enforcement="deny")
    return {"clusters": group.members.count()}


def child_run(payload: dict[str, Any]) -> dict[str, Any]:
    from django.db.models import Count

    from fleet.rollouts.models import ClusterSync, Rollout
    from fleet.sources.models import Repository
    from fleet.sources.services import fetch_repository

    start = time.time()
    outcome = fetch_repository(Repository.objects.get(name="bench"))
    if not outcome.ok:
        raise RuntimeError(f"fetch failed: {outcome}")
    deadline = time.monotonic() + payload["timeout"]
    ends = ("synced", "failed", "halted", "blocked")
    while True:
        rollout = Rollout.objects.order_by("-id").first()
        if rollout is not None and rollout.state in ends:
            break
        if payload.get("prepare_only") and rollout is not None and rollout.started_at is not None:
            break  # queued: prepare is done (the fan-out is not waited for)
        if time.monotonic() > deadline:
            raise RuntimeError(f"rollout not finished: {rollout and rollout.state}")
        time.sleep(0.5)
    states = dict(
        ClusterSync.objects.filter(rollout=rollout).values_list("state").annotate(n=Count("id")).order_by()
    )
    if rollout.started_at is None:
        raise RuntimeError(f"rollout not queued: {rollout.state}: {rollout.reason}")
    out = {
        "state": rollout.state,
        "states": states,
        "prepare_seconds": (rollout.started_at - rollout.created).total_seconds(),
    }
    if rollout.finished_at is not None:
        out["total_seconds"] = rollout.finished_at.timestamp() - start
        out["fanout_seconds"] = (rollout.finished_at - rollout.started_at).total_seconds()
    return out


def child_profile(payload: dict[str, Any]) -> dict[str, Any]:
    """The fetch (its render stored, the rollout created) and then prepare, run in this process as a worker
    runs them, prepare under cProfile with its queries counted: where prepare's time goes at N."""
    import cProfile
    import io
    import pstats
    import resource

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from fleet.rollouts import dispatch, services
    from fleet.rollouts.models import Rollout
    from fleet.sources.models import Repository
    from fleet.sources.services import fetch_repository

    queue: list[tuple[str, list[Any]]] = []
    dispatch.set_sender(lambda name, args, countdown, task_id: queue.append((name, args)))
    outcome = fetch_repository(Repository.objects.get(name="bench"))
    if not outcome.ok:
        raise RuntimeError(f"fetch failed: {outcome}")
    prepares = [args for name, args in queue if name == dispatch.PREPARE]
    if len(prepares) != 1:
        raise RuntimeError(f"expected one prepare queued, found {queue}")
    profiler = cProfile.Profile()
    start = time.monotonic()
    with CaptureQueriesContext(connection) as ctx:
        profiler.enable()
        services.prepare(*prepares[0])
        profiler.disable()
    seconds = time.monotonic() - start
    rollout = Rollout.objects.order_by("-id").first()
    if rollout.started_at is None:
        raise RuntimeError(f"rollout not queued: {rollout.state}: {rollout.reason}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(payload["top"])
    return {
        "prepare_seconds": seconds,
        "prepare_queries": len(ctx.captured_queries),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "top": out.getvalue()[-12000:],
    }


def child_queries(payload: dict[str, Any]) -> dict[str, Any]:
    """Queries of one whole rollout of 40 clusters (5 slices of 8 at max_parallel 8), run in process on the
    production code path: in all, and in the fan-out (after prepare)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from clusters.models import Cluster, ClusterGroup
    from fleet.rollouts import dispatch, services
    from fleet.rollouts.models import Rollout
    from fleet.sources.models import PathMapping

    queue: list[tuple[str, list[Any]]] = []
    dispatch.set_sender(lambda name, args, countdown, task_id: queue.append((name, args)))
    runners = {
        dispatch.PREPARE: services.prepare,
        dispatch.ADVANCE: services.advance_and_sync,
        dispatch.SYNC_CLUSTER: services.run_cluster_sync,
        dispatch.SYNC_SLICE: lambda *ids: services.run_slice(ids),
    }
    group = ClusterGroup.objects.create(
        name="bench-q", selector={"matchLabels": {"q": "yes"}}, max_parallel=8
    )
    for cluster in Cluster.objects.order_by("name")[:40]:
        cluster.labels = {**cluster.labels, "q": "yes"}
        cluster.save()
    bench = PathMapping.objects.get(name="web")
    mapping = PathMapping.objects.create(
        repository=bench.repository, name="web-q", path="apps/web", cluster_group=group
    )
    commit = Rollout.objects.order_by("-id").first().commit
    with CaptureQueriesContext(connection) as ctx:
        services.create_rollout(commit, mapping)
        prepare_count = None
        while queue:
            name, args = queue.pop(0)
            runners[name](*args)
            if name == dispatch.PREPARE:
                prepare_count = len(ctx.captured_queries)
                if not payload.get("full", True):
                    break  # prepare only
    rollout = Rollout.objects.get(mapping=mapping)
    if not payload.get("full", True):
        return {"clusters": group.members.count(), "prepare": prepare_count}
    assert rollout.state == "synced", rollout.reason
    clusters = group.members.count()
    return {
        "clusters": clusters,
        "total": len(ctx.captured_queries),
        "prepare": prepare_count,
        "per_cluster": len(ctx.captured_queries) / clusters,
        "fanout_per_cluster": (len(ctx.captured_queries) - (prepare_count or 0)) / clusters,
    }


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        _django()
        phase, arg = sys.argv[2], sys.argv[3]
        data = json.loads(Path(arg[1:]).read_text() if arg.startswith("@") else arg)
        phases = {"setup": child_setup, "run": child_run, "queries": child_queries, "profile": child_profile}
        print(json.dumps(phases[phase](data)))
    else:
        main(sys.argv[1:])
