"""Pull-mode scale benchmark: N simulated agents (one process, one connection each) long-poll one Fleetgate,
then a commit rolls out to all N pull-mode clusters through them.

    .venv/bin/python -m bench agents                                   # 1,000 agents
    .venv/bin/python -m bench agents -- --agents 200 --idle 30
    BENCH_AGENTS_POSTGRES_URL=postgres://u:p@127.0.0.1/fleetgate_agents_bench .venv/bin/python -m bench agents

What runs (everything on 127.0.0.1, in a scratch directory):
- the database: a scratch PostgreSQL database (``BENCH_AGENTS_POSTGRES_URL``, dropped and created again; the
  CI services' database server when ``DATABASE_URL`` points at PostgreSQL) or, without one, SQLite; Redis as
  the broker and the cache (a redis-server started for the run) when installed;
- Fleetgate's web tier: gunicorn ``fleet.wsgi``, 2 workers with enough threads for every agent's long poll
  (``--threads``), and one Celery worker (prepare, gate, advance);
- N pull-mode clusters in one group (``max_parallel`` = ``--parallel``), a git repository with one mapping
  (a Namespace, a ConfigMap, a Deployment) and one bound Rego policy;
- the agents: one asyncio process with aiohttp, one connection per agent. Each registers with its bootstrap
  token (``POST /api/agent/v1/register``), then loops on ``GET work?wait=W``; for every Work it verifies the
  digest and reports the objects as applied and healthy (``POST work/<id>/result``) without a cluster: the
  benchmark measures Fleetgate's side of pull mode, not Kubernetes.

Reported: registrations/s; the idle phase (every agent waiting on its long poll, ``--idle`` seconds):
requests/s answered, p50/p99 latency beyond the wait, errors, server CPU (gunicorn workers' user+system
seconds per wall second, i.e. cores used); the rollout phase (fetch -> every leg handed out and reported):
wall time, requests/s, clusters/s, CPU; and queries per call (an empty poll, a poll handing out one leg,
a result), counted in process with Django's CaptureQueriesContext on the same views.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import isolated
from bench.bench_rollout import _children, _stop  # the rollout bench's process helpers

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
POLICY = """package main

deny[msg] {
    input.kind == "Deployment"
    endswith(input.spec.template.spec.containers[_].image, ":latest")
    msg := "no latest tags"
}
"""


# --- parent ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
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
            "--maxclients",
            "10000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_port(port)
    return proc, f"redis://127.0.0.1:{port}"


def result_for(item: dict[str, Any]) -> dict[str, Any]:
    """What a simulated agent reports for a Work: its objects applied and healthy when the digest checks
    out, else a failure (no cluster: the benchmark measures Fleetgate's side)."""
    from clusters.agent.digest import work_digest

    ok = work_digest(item["objects"], item["inventory"], item["prune"]) == item["digest"]
    refs = [
        {"apiVersion": o["apiVersion"], "kind": o["kind"], "name": o["metadata"]["name"],
         "namespace": o["metadata"].get("namespace", "")}
        for o in item["objects"]
    ]
    return {
        "attempt": item["attempt"],
        "digest": item["digest"],
        "ok": ok,
        "results": [{"ref": r, "action": "created"} for r in refs] if ok else [],
        "counts": {"created": len(refs)} if ok else {},
        "inventory": refs if ok else [],
        "applied": item["objects"] if ok else [],
        "error": "" if ok else "digest mismatch",
        "transient": False,
        "health": {"state": "Healthy", "reason": "", "detail": {}},
    }


def _reset_postgres(url: str) -> None:
    from bench.bench_audit import _reset_postgres as reset

    reset(url)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (and their threads) so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _git_repo(path: Path) -> str:
    path.mkdir(parents=True)
    env = {**os.environ, **isolated.GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True, env=env)
    for rel, text in FILES.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "web"], cwd=path, check=True, env=env)
    return f"file://{path}"


class Agents:
    """N simulated agents in one asyncio loop, one aiohttp connection each."""

    def __init__(self, base: str, tokens: dict[str, str], wait: int) -> None:
        self.base, self.bootstrap, self.wait = base, tokens, wait
        self.tokens: dict[str, str] = {}
        self.requests = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []  # seconds beyond the wait, for polls that returned no work
        self.reported = 0
        self.running = True

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def register(self, session: Any, name: str) -> None:
        async with session.post(
            f"{self.base}/api/agent/v1/register",
            json={"agent_version": "bench", "kubernetes_version": "v1.31.0"},
            headers={"Authorization": f"Bearer {self.bootstrap[name]}"},
        ) as resp:
            self.requests += 1
            if resp.status != 201:
                raise RuntimeError(f"register {name}: {resp.status} {await resp.text()}")
            self.tokens[name] = (await resp.json())["token"]

    async def loop(self, session: Any, name: str) -> None:

        headers = {"Authorization": f"Bearer {self.tokens[name]}"}
        while self.running:
            started = time.monotonic()
            try:
                async with session.get(
                    f"{self.base}/api/agent/v1/work", params={"wait": str(self.wait)}, headers=headers
                ) as resp:
                    self.requests += 1
                    if resp.status != 200:
                        self._error(f"poll {resp.status}")
                        await asyncio.sleep(1)
                        continue
                    body = await resp.json()
            except Exception as exc:
                self._error(f"poll {type(exc).__name__}")
                await asyncio.sleep(1)
                continue
            work = body.get("work") or []
            if not work:
                self.latencies.append(max(0.0, time.monotonic() - started - self.wait))
            for item in work:
                result = result_for(item)
                try:
                    async with session.post(
                        f"{self.base}/api/agent/v1/work/{item['id']}/result", json=result, headers=headers
                    ) as resp:
                        self.requests += 1
                        if resp.status == 200:
                            self.reported += 1
                        else:
                            self._error(f"result {resp.status}")
                except Exception as exc:  # as the agent does: the lease expires, the leg is claimed again
                    self._error(f"result {type(exc).__name__}")
                    await asyncio.sleep(1)

    async def run(self, phases: Any) -> dict[str, Any]:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.wait + 120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = time.monotonic()
            names = sorted(self.bootstrap)
            for i in range(0, len(names), 50):  # 50 registrations at a time
                await asyncio.gather(*(self.register(session, n) for n in names[i : i + 50]))
            registered = time.monotonic() - start
            loops = [asyncio.create_task(self.loop(session, n)) for n in names]
            out = await phases(self)
            self.running = False
            await asyncio.wait(loops, timeout=self.wait + 30)
            for task in loops:
                task.cancel()
        out["register_per_second"] = len(names) / registered
        return out


def _child(workdir: Path, env: dict[str, str], phase: str, payload: dict[str, Any]) -> dict[str, Any]:
    return isolated.run("bench.bench_agents", ["--child", phase, json.dumps(payload)], env, f"child {phase}")


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"fleetgate-bench-agents-{args.agents}-"))
    procs: list[subprocess.Popen] = []
    try:
        extra: dict[str, str] = {"FLEETGATE_AGENT_POLL_WAIT": str(args.wait), "FLEETGATE_SSL_REDIRECT": "0"}
        pg = "" if args.database == "sqlite" else isolated.postgres_url("BENCH_AGENTS_POSTGRES_URL",
                                                                         "fleetgate_agents_bench")
        if args.database == "postgres" and not pg:
            raise SystemExit(
                "--database postgres needs BENCH_AGENTS_POSTGRES_URL or a PostgreSQL DATABASE_URL"
            )
        if pg:
            _reset_postgres(pg)
            extra["DATABASE_URL"] = pg
            extra["DATABASE_POOL_MAX_SIZE"] = str(args.pool)  # per process (docs/operations.md)
        if shutil.which("redis-server"):
            redis, url = _start_redis(workdir)
            procs.append(redis)
            extra["CELERY_BROKER_URL"] = url + "/0"
            extra["FLEETGATE_CACHE_URL"] = url + "/1"
        else:
            extra["CELERY_BROKER_URL"] = f"sqla+sqlite:///{workdir / 'broker.sqlite3'}"
        env = isolated.env(workdir, **extra)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env["DJANGO_SETTINGS_MODULE"] = "fleet.settings"
        repo = _git_repo(workdir / "repo")
        tokens = _child(
            workdir, env, "setup", {"agents": args.agents, "repo": repo, "parallel": args.parallel}
        )
        port = _free_port()
        web_log = open(workdir / "gunicorn.log", "wb")
        threads = args.threads or (args.agents // 2 + 32)
        web = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "fleet.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                str(threads),
                "--worker-connections",
                str(args.agents + 100),
                "--timeout",
                str(args.wait + 60),
                "--keep-alive",  # longer than an agent's pause between a poll and its result (default 2 s)
                "30",
                "--backlog",
                "4096",
            ],
            cwd=ROOT,
            env=env,
            stdout=web_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(web)
        worker = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "fleet",
                "worker",
                "--loglevel",
                "WARNING",
                "--concurrency",
                "2",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=open(workdir / "worker.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(worker)
        _wait_port(port, 60)
        time.sleep(2)
        web_pids = [web.pid, *_children(web.pid)]

        async def phases(agents: Agents) -> dict[str, Any]:
            out: dict[str, Any] = {}
            await asyncio.sleep(args.wait + 2)  # every agent is in its first long poll
            n0, cpu0, t0 = agents.requests, _cpu_seconds(web_pids), time.monotonic()
            agents.latencies.clear()
            await asyncio.sleep(args.idle)
            wall = time.monotonic() - t0
            lat = sorted(agents.latencies) or [0.0]
            out["idle"] = {
                "seconds": wall,
                "requests_per_second": (agents.requests - n0) / wall,
                "expected_per_second": args.agents / (args.wait + (lat[len(lat) // 2])),
                "p50_ms": 1000 * lat[len(lat) // 2],
                "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
                "cpu_cores": (_cpu_seconds(web_pids) - cpu0) / wall,
            }
            n0, cpu0, t0 = agents.requests, _cpu_seconds(web_pids), time.monotonic()
            loop = asyncio.get_running_loop()
            fetch = loop.run_in_executor(None, _child, workdir, env, "fetch", {})
            await fetch
            while True:
                status = await loop.run_in_executor(None, _child, workdir, env, "status", {})
                if status["state"] in ("synced", "failed", "halted", "blocked"):
                    break
                if time.monotonic() - t0 > args.timeout:
                    raise RuntimeError(f"rollout not finished: {status}")
                await asyncio.sleep(2)
            wall = time.monotonic() - t0
            out["rollout"] = {
                **status,
                "seconds_from_fetch": wall,
                "requests_per_second": (agents.requests - n0) / wall,
                "cpu_cores": (_cpu_seconds(web_pids) - cpu0) / wall,
                "results_reported": agents.reported,
            }
            return out

        agents = Agents(f"http://127.0.0.1:{port}", tokens["tokens"], args.wait)
        result = asyncio.run(agents.run(phases))
        result["errors"] = agents.errors
        result["queries"] = _child(workdir, env, "queries", {})
        result.update(
            agents=args.agents,
            database="postgresql" if pg else "sqlite",
            cache="redis" if "FLEETGATE_CACHE_URL" in extra else "file",
            wait=args.wait,
            threads=threads,
            pool=args.pool if pg else None,
            load=os.getloadavg(),
        )
        return result
    finally:
        _stop(procs)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench agents")
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    parser.add_argument("--wait", type=int, default=20, help="long-poll wait, seconds (default 20)")
    parser.add_argument("--idle", type=int, default=60, help="idle phase, seconds (default 60)")
    parser.add_argument("--parallel", type=int, default=100, help="the group's max_parallel (default 100)")
    parser.add_argument("--threads", type=int, default=0, help="gunicorn threads per worker (agents/2 + 32)")
    parser.add_argument("--database", choices=["auto", "postgres", "sqlite"], default="auto")
    parser.add_argument("--pool", type=int, default=40, help="PostgreSQL connections per process (40)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the rollout")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv or [])
    print(
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}; {args.agents} agents, wait {args.wait}s; "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    r = run_one(args)
    idle, roll, q = r["idle"], r["rollout"], r["queries"]
    print(
        f"\n{r['agents']} agents on {r['database']} + {r['cache']} cache; gunicorn 2 x {r['threads']} threads"
    )
    print("| phase | requests/s | expected/s | p50 / p99 beyond wait | server CPU (cores) | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| idle (every agent long-polling) | {idle['requests_per_second']:.1f} | "
        f"{idle['expected_per_second']:.1f} | {idle['p50_ms']:.0f} / {idle['p99_ms']:.0f} ms | "
        f"{idle['cpu_cores']:.2f} | {idle['seconds']:.0f} |"
    )
    print(
        f"| rollout to all (fetch -> synced) | {roll['requests_per_second']:.1f} | - | - | "
        f"{roll['cpu_cores']:.2f} | {roll['seconds_from_fetch']:.1f} |"
    )
    print(
        f"\nrollout {roll['state']}: {roll['states']}; {r['agents'] / roll['seconds_from_fetch']:.1f} "
        f"clusters/s; registrations {r['register_per_second']:.0f}/s; errors {r['errors'] or 'none'}"
    )
    print(
        f"queries: empty poll {q['empty_poll']}, poll handing out one leg {q['poll_with_work']}, "
        f"result {q['result']}"
    )
    print(json.dumps(r, default=str))


# --- children (Django) ---------------------------------------------------------------------------


def child_setup(payload: dict[str, Any]) -> dict[str, Any]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from clusters import agent_tokens, membership
    from clusters.models import Cluster, ClusterGroup
    from fleet.sources.models import PathMapping, Repository
    from policies.models import PolicyBinding
    from policies.services.definitions import PolicyDefinition, save_policy

    group = ClusterGroup.objects.create(
        name="agents",
        selector={"matchLabels": {"bench": "yes"}},
        max_parallel=payload["parallel"],
    )
    Cluster.objects.bulk_create(
        [
            Cluster(name=f"edge-{i:05d}", connection_mode="pull", labels={"bench": "yes"})
            for i in range(payload["agents"])
        ]
    )
    membership.refresh_group(group)
    tokens = {c.name: agent_tokens.issue_bootstrap(c)[0] for c in Cluster.objects.all()}
    repo = Repository.objects.create(name="bench", url=payload["repo"], poll_interval=0)
    PathMapping.objects.create(repository=repo, name="web", path="apps/web", cluster_group=group)
    policy = save_policy(
        "no-latest", PolicyDefinition(style="conftest", modules=(("p.rego", POLICY),))
    ).policy
    PolicyBinding.objects.create(policy=policy, enforcement="deny")
    return {"tokens": tokens}


def child_fetch(payload: dict[str, Any]) -> dict[str, Any]:
    from fleet.sources.models import Repository
    from fleet.sources.services import fetch_repository

    outcome = fetch_repository(Repository.objects.get(name="bench"))
    if not outcome.ok:
        raise RuntimeError(f"fetch failed: {outcome}")
    return {"ok": True}


def child_status(payload: dict[str, Any]) -> dict[str, Any]:
    from django.db.models import Count

    from fleet.rollouts.models import ClusterSync, Rollout

    rollout = Rollout.objects.order_by("-id").first()
    if rollout is None:
        return {"state": "none", "states": {}}
    states = dict(
        ClusterSync.objects.filter(rollout=rollout).values_list("state").annotate(n=Count("id")).order_by()
    )
    return {
        "state": rollout.state,
        "states": states,
        "prepare_seconds": (rollout.started_at - rollout.created).total_seconds()
        if rollout.started_at
        else None,
    }


def child_queries(payload: dict[str, Any]) -> dict[str, Any]:
    """Queries of an empty poll, a poll handing out one leg and its result, on the same views in process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from clusters import agent_tokens
    from clusters.models import Cluster, ClusterGroup
    from fleet.rollouts import dispatch, services
    from fleet.rollouts.models import ClusterSync, Rollout
    from fleet.sources.models import PathMapping

    queue: list[tuple[str, list[Any]]] = []
    dispatch.set_sender(lambda name, args, countdown, task_id: queue.append((name, args)))
    runners = {dispatch.PREPARE: services.prepare, dispatch.ADVANCE: services.advance}
    cluster = Cluster.objects.create(name="q-edge", connection_mode="pull", labels={"q": "yes"})
    group = ClusterGroup.objects.create(name="q", selector={"matchLabels": {"q": "yes"}})
    from clusters import membership

    membership.refresh_group(group)
    plain, _ = agent_tokens.issue_bootstrap(cluster)
    client = Client()
    token = client.post(
        "/api/agent/v1/register",
        {"agent_version": "bench"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {plain}"},
    ).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    with CaptureQueriesContext(connection) as empty:
        assert client.get("/api/agent/v1/work", {"wait": "0"}, headers=auth).status_code == 200
    bench = PathMapping.objects.get(name="web")
    mapping = PathMapping.objects.create(
        repository=bench.repository, name="web-q", path="apps/web", cluster_group=group
    )
    services.create_rollout(Rollout.objects.order_by("-id").first().commit, mapping)
    while queue:
        name, args = queue.pop(0)
        if name in runners:
            runners[name](*args)
    with CaptureQueriesContext(connection) as polled:
        work = client.get("/api/agent/v1/work", {"wait": "0"}, headers=auth).json()["work"]
    assert len(work) == 1, work
    item = work[0]
    body = result_for(item)
    with CaptureQueriesContext(connection) as reported:
        answer = client.post(
            f"/api/agent/v1/work/{item['id']}/result", body, content_type="application/json", headers=auth
        )
    assert answer.status_code == 200, answer.content
    assert ClusterSync.objects.get(pk=item["id"]).state == "synced"
    return {
        "empty_poll": len(empty.captured_queries),
        "poll_with_work": len(polled.captured_queries),
        "result": len(reported.captured_queries),
    }


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        import django

        django.setup()
        phase, data = sys.argv[2], json.loads(sys.argv[3])
        children = {
            "setup": child_setup,
            "fetch": child_fetch,
            "status": child_status,
            "queries": child_queries,
        }
        print(json.dumps(children[phase](data), default=str))
    else:
        main(sys.argv[1:])
