"""Where the processes of one Fleetgate installation keep their metrics (prometheus_client's multiprocess
mode), without Django: ``fleet/settings.py`` and ``gunicorn.conf.py`` both call :func:`configure` before
anything imports prometheus_client, which picks its storage once, when it is first imported.

Every web worker, Celery worker process and beat writes its counters and histograms into memory-mapped files
in one directory (``PROMETHEUS_MULTIPROC_DIR``, default ``$FLEETGATE_VAR_DIR/metrics``); ``/metrics`` adds up
the files of every process, so whichever process serves the scrape answers for all of them."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsDirUnusable(RuntimeError):
    """The metrics directory cannot be made or written: the process must not start (see configure)."""


def metrics_dir() -> Path:
    """``PROMETHEUS_MULTIPROC_DIR``, else ``$FLEETGATE_VAR_DIR/metrics`` (``./var/metrics``)."""
    configured = os.environ.get(ENV, "").strip()
    if configured:
        return Path(configured).resolve()
    var = os.environ.get("FLEETGATE_VAR_DIR", "").strip() or str(Path(__file__).resolve().parents[2] / "var")
    return (Path(var) / "metrics").resolve()


def configure() -> Path:
    """Create the directory and export it to this process and its children (before prometheus_client is
    imported: it chooses between in-memory and file-backed values once).

    The directory must be writable by this process: prometheus_client opens its file there when the first
    metric is made (at django.setup()), so an unwritable one failed every process at start with a bare
    PermissionError from inside prometheus_client. Here it is refused with the directory and what to do."""
    path = metrics_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise MetricsDirUnusable(
            f"the metrics directory {path} ({ENV}, default $FLEETGATE_VAR_DIR/metrics) cannot be made or "
            f"written by this process ({type(exc).__name__}: {exc.strerror or exc}): give the user Fleetgate "
            f"runs as write access to it, or point {ENV} at a directory it can write, shared by web, worker "
            "and beat (docs/operations.md#several-processes)"
        ) from exc
    os.environ[ENV] = str(path)
    return path


def reset(path: Path | None = None) -> Path:
    """Empty the directory: only while no Fleetgate process runs (``make run`` and the compose stack's
    ``migrate`` step do it before web and workers start), or the running ones would lose their counts."""
    path = path or metrics_dir()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a process that ended (its counters stay: totals must not go back)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(metrics_dir()))
