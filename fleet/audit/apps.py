from typing import Any

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "fleet.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from celery.signals import worker_process_shutdown

        worker_process_shutdown.connect(
            _pool_process_ended, weak=False, dispatch_uid="fleetgate-audit-sealer"
        )


def _pool_process_ended(**_: Any) -> None:
    """A Celery pool process ends (through os._exit, no atexit): its background sealer's last round."""
    from fleet.audit.sealing import BackgroundSealer

    BackgroundSealer.stop()
