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
