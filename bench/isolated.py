"""A benchmark's measuring process: the parent runs ``python -m bench.bench_<name> --child ...`` in a fresh
process with its own settings (database, var directory), so nothing of the parent's imports or caches is
measured, and reads the result the child prints as JSON on its last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# git for a benchmark's own repositories: no user or system configuration, a fixed author and committer
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_SYSTEM": os.devnull,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a child working in ``workdir``: its own SQLite database, var directory and git
    cache, quiet logs; ``extra`` adds or replaces variables (e.g. DATABASE_URL)."""
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "FLEETGATE_VAR_DIR": str(workdir / "var"),
        "FLEETGATE_GIT_CACHE": str(workdir / "git"),
        "FLEETGATE_LOG_LEVEL": "WARNING",
        **extra,
    }


def run(module: str, args: list[str], environ: dict[str, str], name: str = "bench child") -> dict[str, Any]:
    """Runs ``python -m <module> <args>`` from the repository root in ``environ`` and returns the JSON object
    on the last line of its output; a failed child raises RuntimeError with its output, under ``name``."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def postgres_url(variable: str, database: str) -> str:
    """A scratch PostgreSQL database for a benchmark: ``variable`` if set, else ``database`` on the server
    ``DATABASE_URL`` points at (when it is PostgreSQL), else "" (SQLite)."""
    url = os.environ.get(variable, "")
    if url:
        return url
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith(("postgres://", "postgresql://")):
        return base.rsplit("/", 1)[0] + "/" + database
    return ""


def start_workers(
    environ: dict[str, str], workdir: Path, count: int, concurrency: int, name: str = "bench"
) -> list[subprocess.Popen]:
    """``count`` Celery workers (``--concurrency``), each in its own process group, logging to
    ``workdir/worker-<i>.log``."""
    workers = []
    for i in range(count):
        log = open(workdir / f"worker-{i}.log", "wb")
        workers.append(
            subprocess.Popen(
                [str(Path(sys.executable).parent / "celery"), "-A", "fleet", "worker", "--loglevel",
                 "WARNING", "--concurrency", str(concurrency), "--without-mingle", "--without-gossip",
                 "--without-heartbeat", "-n", f"{name}{i}@%h"],
                cwd=ROOT,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return workers
