"""Starting real Celery worker and beat processes against the test database and the configured broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The URL of the database the tests run on, for processes the tests start."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user, password = db.get("USER", ""), db.get("PASSWORD", "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="fleet.settings",
        DATABASE_URL=test_database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        FLEETGATE_VAR_DIR=str(settings.VAR_DIR),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class ChildProcess:
    """A child process the tests start, in its own process group, logging to ``log_path``."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (the main process and its children) at once."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM to the group, SIGKILL after 20 s; returns the exit code."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        self._log.close()
        return self.process.returncode


class CeleryProcess(ChildProcess):
    """A ``celery -A fleet ...`` child process against the test database and the configured broker."""

    def __init__(self, args: list[str], log_path: Path, **env: str) -> None:
        super().__init__([str(Path(sys.executable).parent / "celery"), "-A", "fleet", *args], log_path,
                         child_env(**env))


class Worker(CeleryProcess):
    def __init__(self, log_path: Path, concurrency: int = 1, queues: str = "", **env: str) -> None:
        args = [
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(concurrency),
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ]
        if queues:
            args += ["-Q", queues]
        super().__init__(args, log_path, **env)


class Beat(CeleryProcess):
    """``celery -A fleet beat`` as ``make run`` and compose start it: the settings' schedule
    (``CELERY_BEAT_SCHEDULE``) installed into django-celery-beat's database schedule of the test database;
    the intervals come from ``env`` (e.g. ``FLEETGATE_RECONCILE_INTERVAL``). ``--max-interval 1``: beat
    looks at its schedule every second, so a short interval is kept."""

    def __init__(self, log_path: Path, **env: str) -> None:
        super().__init__(["beat", "--loglevel", "INFO", "--max-interval", "1"], log_path, **env)

    def sent(self, entry: str) -> int:
        """How many times beat has sent the periodic task ``entry`` (its log line per send)."""
        return self.log.count(f"Sending due task {entry} ")


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
