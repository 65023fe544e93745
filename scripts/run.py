#!/usr/bin/env python
"""`make run`: migrate, make sure an admin exists, and start web, a Celery worker and beat together.

Runs on the embedded defaults unless the environment says otherwise (see .env.example). Ctrl-C stops every
process it started; running it again keeps the data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from honcho.manager import Manager

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def manage(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return result.stdout


def wait_ready(url: str, on_ready: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    print(on_ready, flush=True)
                    return
        except OSError:
            pass
        time.sleep(0.5)
    print(f"fleetgate: web did not answer on {url} within {timeout:.0f}s", flush=True)


def main() -> int:
    os.chdir(ROOT)
    host = os.environ.get("FLEETGATE_HOST", "127.0.0.1")
    port = os.environ.get("FLEETGATE_PORT", "8000")
    url = f"http://{host}:{port}/"

    print("fleetgate: migrating the database", flush=True)
    manage("migrate", "--noinput")
    admin = manage("ensure_admin").strip()

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    manager = Manager()
    manager.add_process(
        "web",
        f"{BIN}/gunicorn fleet.wsgi --bind {host}:{port} --workers 2 --threads 4 --access-logfile - "
        "--graceful-timeout 5",
        env=env,
    )
    manager.add_process(
        "worker",
        f"{BIN}/celery -A fleet worker --loglevel INFO --concurrency 2 --without-mingle --without-gossip",
        env=env,
    )
    manager.add_process("beat", f"{BIN}/celery -A fleet beat --loglevel INFO", env=env)

    banner = "\n".join(
        [
            "",
            "=" * 72,
            f"Fleetgate is ready: {url}",
            f"  {admin}",
            f"  API schema: {url}api/schema/   Swagger UI: {url}api/docs/",
            "  Stop with Ctrl-C.",
            "=" * 72,
            "",
        ]
    )
    threading.Thread(target=wait_ready, args=(url, banner), daemon=True).start()
    manager.loop()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
