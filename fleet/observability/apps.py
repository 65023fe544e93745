from typing import Any

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "fleet.observability"
    label = "observability"
    verbose_name = "Metrics and probes"

    def ready(self) -> None:
        from celery.signals import worker_process_shutdown

        worker_process_shutdown.connect(_pool_process_ended, weak=False, dispatch_uid="fleetgate-metrics")


def _pool_process_ended(pid: int | None = None, **_: Any) -> None:
    """A Celery pool process ends: its live gauges go (gunicorn.conf.py does the same for web workers)."""
    import os

    from fleet.observability.multiproc import mark_process_dead

    mark_process_dead(pid or os.getpid())
