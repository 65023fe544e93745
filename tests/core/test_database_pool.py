"""DATABASE_POOL_MAX_SIZE bounds the PostgreSQL connections one process opens, however many threads query
at once (a web tier with a thread per waiting pull-mode agent poll; bench agents found 'too many clients')."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.workers import ROOT, child_env

THREADS = """
import json, threading
import django
django.setup()
from django.db import connection, close_old_connections
pids, lock, gate = set(), threading.Lock(), threading.Barrier(12)
def one():
    gate.wait()
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), pg_sleep(0.3)")
        pid = cur.fetchone()[0]
    with lock:
        pids.add(pid)
    connection.close()  # back to the pool (or closed, without one)
threads = [threading.Thread(target=one) for _ in range(12)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"backends": len(pids), "pool": "pool" in connection.settings_dict.get("OPTIONS", {})}))
"""


def _backends(**env: str) -> dict[str, object]:
    run = subprocess.run([sys.executable, "-c", THREADS], cwd=ROOT, env=child_env(**env), capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL)")


@postgres
@pytest.mark.django_db
def test_twelve_threads_share_a_pool_of_three_connections() -> None:
    pooled = _backends(DATABASE_POOL_MAX_SIZE="3")
    assert pooled["pool"] is True and pooled["backends"] <= 3, pooled
    unpooled = _backends(DATABASE_POOL_MAX_SIZE="0")
    assert unpooled == {"backends": 12, "pool": False}  # a connection per thread: what the pool bounds


def test_the_pool_setting_leaves_sqlite_alone(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.db import connection; "
         "print('pool' in connection.settings_dict.get('OPTIONS', {}))"],
        cwd=ROOT,
        env=child_env(DATABASE_POOL_MAX_SIZE="3", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}"),
        capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "False"
