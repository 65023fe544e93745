"""``manage.py render`` for one path: Fleetgate's own time, start-up included, against the render itself.

    .venv/bin/python -m bench render_command                     # 7 runs of each
    .venv/bin/python -m bench render_command -- --runs 11 --root /path/to/an/older/checkout

A scratch SQLite database and git cache (``bench.isolated``) get a repository with one plain path (three
small manifests), a cluster and a mapping, fetched once. Then each measured command runs in a new process
(as a user runs it) through a small wrapper that prints the process's own CPU time (``RUSAGE_SELF``: the
git and kubectl children it waits for are not counted) when it exits:

1. ``manage.py render <repo> <commit> <mapping> --cluster <name>`` (the database form);
2. ``manage.py render --dir <checkout>/<path>`` (offline: no database row);
3. baseline, in the same run: a bare ``python`` that imports the render core and renders the same path
   (no Django), in a new process too.

Medians of the runs; the ratio is the command's own CPU over the baseline's. ``--root`` runs the commands
of another checkout (e.g. a worktree of an older commit) with this benchmark, to compare before and after.
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

WRAPPER = """
import atexit, os, resource, runpy, sys
def _report():
    r = resource.getrusage(resource.RUSAGE_SELF)
    os.write(2, ("\\nBENCH_CPU %f\\n" % (r.ru_utime + r.ru_stime)).encode())
atexit.register(_report)
sys.argv = sys.argv[1:]
sys.path.insert(0, os.getcwd())
runpy.run_path(sys.argv[0], run_name="__main__")
"""

BASELINE = """
import sys
from fleet.sources.render import ClusterContext, RenderRequest, SourceTree, render
result = render(SourceTree(sys.argv[2]), RenderRequest(path=sys.argv[3], cluster=ClusterContext(name="eu-1")))
assert len(result.objects) == 3, result
"""

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: '1'\n"


def _timed(cmd: list[str], cwd: Path, environ: dict[str, str]) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or ("manage.py" in cmd and "kind: ConfigMap" not in proc.stdout):
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}")
    cpu = [line for line in proc.stderr.splitlines() if line.startswith("BENCH_CPU ")]
    if not cpu:
        raise RuntimeError(f"{cmd}: no CPU figure:\n{proc.stderr}")
    return wall, float(cpu[-1].split()[1])


def measure(root: Path, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleetgate-bench-render-command-") as tmp:
        work = Path(tmp)
        environ = {k: v for k, v in isolated.env(work).items() if k != "PYTHONDONTWRITEBYTECODE"}
        checkout = work / "checkout"
        (checkout / "apps" / "web").mkdir(parents=True)
        for i in range(3):
            (checkout / "apps" / "web" / f"cm{i}.yaml").write_text(CM.format(name=f"cm{i}"))
        git_env = {**environ, **isolated.GIT_ENV}
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
            subprocess.run(["git", *args], cwd=checkout, env=git_env, check=True, capture_output=True)
        setup = (
            "import django; django.setup()\n"
            "from django.core.management import call_command; call_command('migrate', verbosity=0)\n"
            "from clusters.models import Cluster, ClusterGroup\n"
            "from fleet.sources.models import PathMapping, Repository\n"
            "from fleet.sources.services import repository_cache\n"
            "c = Cluster.objects.create(name='eu-1', api_url='https://10.0.0.1:6443',\n"
            "                           labels={'env': 'prod'})\n"
            "g = ClusterGroup.objects.create(name='prod', selector={'matchLabels': {'env': 'prod'}})\n"
            "g.members.add(c)\n"
            f"r = Repository.objects.create(name='apps', url={checkout.as_uri()!r}, poll_interval=0)\n"
            "PathMapping.objects.create(repository=r, name='web', path='apps/web', cluster_group=g)\n"
            "repository_cache(r).fetch()\n"
        )
        subprocess.run([sys.executable, "-c", setup], cwd=root, env=environ, check=True, capture_output=True)
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, env=git_env, check=True,
                             capture_output=True, text=True).stdout.strip()
        commands = {
            "render (database form)": [sys.executable, "-c", WRAPPER, "manage.py", "render", "apps", sha,
                                       "web", "--cluster", "eu-1"],
            "render --dir (offline)": [sys.executable, "-c", WRAPPER, "manage.py", "render", "--dir",
                                       str(checkout / "apps" / "web")],
            "baseline: render core, no Django": [sys.executable, "-c", WRAPPER + BASELINE.replace(
                "sys.argv[2]", repr(str(checkout))).replace("sys.argv[3]", "'apps/web'"), "/dev/null"],
        }
        if not (root / "fleet/sources/management/commands/render.py").read_text().count("--dir"):
            del commands["render --dir (offline)"]  # an older checkout
        results: dict[str, dict[str, float]] = {}
        for cmd in commands.values():
            _timed(cmd, root, environ)  # warm: .pyc files written, page cache filled
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(runs):  # interleaved, so a change in load hits every command alike
            for name, cmd in commands.items():
                samples[name].append(_timed(cmd, root, environ))
        for name, values in samples.items():
            results[name] = {"wall": statistics.median(w for w, _ in values),
                             "cpu": statistics.median(c for _, c in values)}
        return {"root": str(root), "runs": runs, "results": results, "load": os.getloadavg()}


def report(r: dict[str, Any]) -> str:
    base = r["results"]["baseline: render core, no Django"]["cpu"]
    lines = [f"{r['root']}: medians of {r['runs']} interleaved runs; load average {r['load'][0]:.2f}.", "",
             "| command | wall | own CPU | ratio to baseline CPU |", "|---|---|---|---|"]
    for name, m in r["results"].items():
        lines.append(f"| {name} | {m['wall']:.2f} s | {m['cpu']:.2f} s | {m['cpu'] / base:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench render_command")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--root", default=str(isolated.ROOT), help="the checkout whose manage.py is measured")
    args = parser.parse_args(argv if argv is not None else [])
    result = measure(Path(args.root).resolve(), args.runs)
    print(report(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
