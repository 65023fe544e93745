"""Settings for the test suite: the production settings, with the suite's files (SQLite test database,
broker folders, git caches) under var/test, apart from what `make run` keeps in var/.

Processes the tests start (Celery workers, `make run`) get FLEETGATE_VAR_DIR in their environment."""

import os
from pathlib import Path

os.environ.setdefault("FLEETGATE_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from fleet.settings import *  # noqa: F403
