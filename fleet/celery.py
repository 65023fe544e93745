"""The Celery application. Tasks are thin: each calls one service."""

import os
import warnings

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")

app = Celery("fleet")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# kombu's SQLAlchemy transport (the embedded broker) declares its models with a loader strategy that
# SQLAlchemy 2.1 deprecates; harmless, and noise in every worker log.
warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")


def prepare_broker() -> None:
    """Open the broker once, so that the embedded SQLite broker's tables exist before web, worker and beat
    start together (each would otherwise try to create them at the same moment)."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        connection.default_channel.queue_declare(queue=app.conf.task_default_queue, durable=True)
