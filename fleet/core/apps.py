from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "fleet.core"
    label = "core"
    verbose_name = "Fleetgate core"

    def ready(self) -> None:
        from fleet.core import celery_context  # noqa: F401  (connects the task header signals)
