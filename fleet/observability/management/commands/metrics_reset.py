from typing import Any

from django.core.management.base import BaseCommand

from fleet.observability.multiproc import reset


class Command(BaseCommand):
    help = (
        "Empty the metrics directory (PROMETHEUS_MULTIPROC_DIR) before web and workers start; "
        "never while they run."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        path = reset()
        self.stdout.write(f"metrics directory {path} emptied")
