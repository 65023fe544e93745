"""gunicorn's configuration, read from the working directory (the image's /app, the checkout): metrics.

The metrics directory is exported before any worker imports prometheus_client (the workers are forked from
this process), and a worker that exits drops its live gauges (its counters stay in the totals)."""

from typing import Any

from fleet.observability import multiproc

multiproc.configure()


def child_exit(server: Any, worker: Any) -> None:
    multiproc.mark_process_dead(worker.pid)
