"""The embedded broker (kombu's SQLAlchemy transport on a SQLite file, `make run`'s default) survives SIGKILL
of any process: a publisher killed in the middle of writing, beat killed while it queues, a worker killed
while beat queues. Each time the worker stays alive (with the filesystem broker a half-written message file
killed it with `Unrecoverable error: JSONDecodeError`) and every message that was published is processed.

Real parts only: real Celery worker and beat processes (tests/workers.py), the test database shared with them,
and a broker file of the test's own, so these tests run on the embedded broker in every CI pass. The
mid-rollout worker kill is tests/rollouts/test_rollout_worker_failure.py (it runs on the configured broker,
this one by default)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from fleet.audit.models import AuditEvent
from tests.workers import ROOT, Beat, Worker, child_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PING = "fleet.core.ping"


class Broker:
    """A SQLite broker file of the test's own, read with plain sqlite3 to count what was published."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqla+sqlite:///{path}"

    def _count(self, where: str, note: str, what: str = "count(*)") -> int:
        if not self.path.exists():
            return 0
        with sqlite3.connect(self.path, timeout=30) as db:
            try:
                row = db.execute(
                    f"SELECT {what} FROM kombu_message WHERE payload LIKE ? {where}",  # noqa: S608 (fixed SQL)
                    [f"%{note}%"],
                ).fetchone()
            except sqlite3.OperationalError:  # the tables do not exist yet
                return 0
        return int(row[0])

    def published(self, note: str) -> int:
        return self._count("", note)

    def waiting(self, note: str) -> int:
        return self._count("AND visible = 1", note)

    def tasks(self, note: str) -> int:
        """Distinct task messages (by task id): a message the worker took but had not acknowledged when it
        was stopped is put back by the worker (acks_late: at least once), a second row of the same task."""
        return self._count("", note, "count(DISTINCT json_extract(payload, '$.headers.id'))")


def pings(note: str) -> int:
    return AuditEvent.objects.filter(action="system.ping", message__startswith=note).count()


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    """A fresh broker file whose tables exist before any process starts, as `make run` prepares it
    (scripts/run.py calls fleet.celery.prepare_broker): a worker and beat started at the same moment on a file
    without tables would both try to create them."""
    made = Broker(tmp_path / "broker.sqlite3")
    subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from fleet.celery import prepare_broker; "
         "prepare_broker()"],
        cwd=ROOT,
        env=child_env(CELERY_BROKER_URL=made.url),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return made


@pytest.fixture
def beat_ping(db: Any) -> Iterator[str]:
    """A periodic task in django-celery-beat's database schedule: ping every second with a known note."""
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="test beat ping", task=PING, interval=every, args='["beat ping"]')
    yield "beat ping"


def assert_alive(worker: Worker) -> None:
    assert worker.process.poll() is None, f"the worker died:\n{worker.log[-3000:]}"
    assert "Unrecoverable error" not in worker.log, worker.log[-3000:]


def test_publisher_killed_while_writing_leaves_whole_messages_and_the_worker_alive(
    tmp_path: Path, broker: Broker
) -> None:
    """A process publishing as fast as it can (as web does under load) is SIGKILLed; it may die in the middle
    of a publish. The worker keeps running and processes every message the broker holds."""
    worker = Worker(tmp_path / "worker.log", concurrency=2, CELERY_BROKER_URL=broker.url)
    publisher_code = (
        "import django; django.setup()\n"
        "from fleet.core.tasks import ping\n"
        "i = 0\n"
        "while True:\n"
        "    ping.delay(f'burst {i}'); i += 1\n"
    )
    publisher = subprocess.Popen(
        [sys.executable, "-c", publisher_code],
        cwd=ROOT,
        env=child_env(CELERY_BROKER_URL=broker.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed while it is still publishing: it never stops by itself.
        wait_for(lambda: broker.published("burst") >= 200, timeout=120, what="the publisher to publish")
        wait_for(lambda: pings("burst") >= 1, timeout=120, what="the worker to process the first message")
        publisher.send_signal(signal.SIGKILL)
        publisher.wait(timeout=30)
        published = broker.published("burst")
        wait_for(lambda: broker.waiting("burst") == 0, timeout=300, what="the worker to drain the queue")
        wait_for(lambda: pings("burst") >= published, timeout=120, what="every published message processed")
        assert_alive(worker)
    finally:
        if publisher.poll() is None:
            publisher.kill()
        worker.stop()
    # Every message that was stored was processed exactly once, none lost to a partial write. (A message
    # processed but not yet acknowledged when the worker stops is put back: a second row of the same task.)
    assert pings("burst") == published == broker.tasks("burst")


def test_beat_killed_while_queuing_then_restarted_worker_keeps_processing(
    tmp_path: Path, broker: Broker, beat_ping: str
) -> None:
    env = {"CELERY_BROKER_URL": broker.url}
    worker = Worker(tmp_path / "worker.log", concurrency=1, **env)
    beat = Beat(tmp_path / "beat-1.log", **env)
    second_beat = None
    try:
        wait_for(lambda: pings(beat_ping) >= 2, timeout=120, what="beat's pings processed")
        beat.kill()
        before_restart = pings(beat_ping)
        assert_alive(worker)
        # Whatever beat had queued before it died is processed by the running worker.
        wait_for(lambda: broker.waiting(beat_ping) == 0, timeout=120, what="the queue drained")
        second_beat = Beat(tmp_path / "beat-2.log", **env)
        wait_for(
            lambda: pings(beat_ping) >= before_restart + 2, timeout=120, what="pings from the restarted beat"
        )
        second_beat.kill()  # stop queuing, then let the worker drain what is left
        wait_for(lambda: broker.waiting(beat_ping) == 0, timeout=120, what="the queue drained")
        wait_for(
            lambda: pings(beat_ping) >= broker.published(beat_ping), timeout=120, what="every ping processed"
        )
        assert_alive(worker)
    finally:
        beat.stop()
        if second_beat is not None:
            second_beat.stop()
        worker.stop()
    # Nothing lost, nothing twice: one audited ping per task beat published, across both beats.
    assert pings(beat_ping) == broker.tasks(beat_ping)


def test_worker_killed_while_beat_queues_a_new_worker_processes_what_was_queued(
    tmp_path: Path, broker: Broker, beat_ping: str
) -> None:
    env = {"CELERY_BROKER_URL": broker.url}
    first = Worker(tmp_path / "worker-1.log", concurrency=1, **env)
    beat = Beat(tmp_path / "beat.log", **env)
    second = None
    try:
        wait_for(lambda: pings(beat_ping) >= 2, timeout=120, what="beat's pings processed")
        first.kill()  # SIGKILL to the worker and its pool children; beat goes on queuing
        assert beat.process.poll() is None
        wait_for(lambda: broker.waiting(beat_ping) >= 3, timeout=120, what="beat to queue with no worker")
        assert beat.process.poll() is None, "beat died while the worker was down"
        beat.kill()  # nothing new from now on: exactly the backlog must be processed, none of it lost
        processed_before = pings(beat_ping)
        waiting_at_restart = broker.waiting(beat_ping)
        second = Worker(tmp_path / "worker-2.log", concurrency=1, **env)
        wait_for(lambda: broker.waiting(beat_ping) == 0, timeout=120, what="the backlog drained")
        wait_for(
            lambda: pings(beat_ping) >= processed_before + waiting_at_restart,
            timeout=120,
            what="the new worker to process what beat queued while no worker ran",
        )
        assert_alive(second)
        assert pings(beat_ping) == processed_before + waiting_at_restart
    finally:
        beat.stop()
        first.stop()
        if second is not None:
            second.stop()
