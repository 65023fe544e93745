"""Settings for the test suite: the production settings, with the suite's files (SQLite test database,
broker file, git caches) under var/test, apart from what `make run` keeps in var/.

Processes the tests start (Celery workers, `make run`) get FLEETGATE_VAR_DIR in their environment."""

import atexit
import os
import shutil
from pathlib import Path

os.environ.setdefault("FLEETGATE_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
# The test client and the live server speak plain http: the production HTTPS defaults off, explicitly.
for _name in ("FLEETGATE_SSL_REDIRECT", "FLEETGATE_HSTS_SECONDS", "FLEETGATE_SECURE_COOKIES"):
    os.environ.setdefault(_name, "0")
# One broker file per test run, like the test database: test runs sharing a machine never take each other's
# tasks. Worker processes get this URL from tests/workers.py; CI's Redis pass sets CELERY_BROKER_URL itself.
_BROKER_FILE = Path(os.environ["FLEETGATE_VAR_DIR"]) / f"broker-{os.getpid()}.sqlite3"
if not os.environ.get("CELERY_BROKER_URL"):
    os.environ["CELERY_BROKER_URL"] = f"sqla+sqlite:///{_BROKER_FILE}"

    @atexit.register
    def _remove_broker_file() -> None:
        for path in _BROKER_FILE.parent.glob(_BROKER_FILE.name + "*"):  # with its -journal/-wal files
            path.unlink(missing_ok=True)

# One metrics directory per test run too (prometheus_client's multiprocess files of this run's processes).
_METRICS_DIR = Path(os.environ["FLEETGATE_VAR_DIR"]) / f"metrics-{os.getpid()}"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_METRICS_DIR)

    @atexit.register
    def _remove_metrics_dir() -> None:
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)


from fleet.settings import *  # noqa: F403, E402
