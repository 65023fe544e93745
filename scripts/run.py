#!/usr/bin/env python
"""`make run`: migrate, make sure an admin exists, set up the demo, and start web, a Celery worker, beat and
sandbox clusters together (and the OPA server when FLEETGATE_REGO_ENGINE=opa).

Runs on the embedded defaults unless the environment says otherwise (see .env.example). Ctrl-C stops every
process it started; running it again keeps the data and does not duplicate the demo.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from honcho.manager import Manager

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SANDBOX_CLUSTERS = 6  # env dev/staging/prod x region eu/us


def manage(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def var_dir() -> Path:
    return Path(os.environ.get("FLEETGATE_VAR_DIR", str(ROOT / "var"))).resolve()


def _get(url: str, token: str = "") -> dict | None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (a loopback http URL we built)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 (loopback)
            return json.loads(response.read() or b"{}")
    except (OSError, ValueError):
        return None


# The settings are HTTPS-secure by default; `make run` serves plain http on 127.0.0.1, so it turns them off
# (unless the environment already says otherwise, e.g. behind a local TLS proxy).
DEV_OVERRIDES = {
    "FLEETGATE_SSL_REDIRECT": "0",
    "FLEETGATE_HSTS_SECONDS": "0",
    "FLEETGATE_SECURE_COOKIES": "0",
}


def new_sandbox_admin_token(var: Path) -> str:
    """A fresh token for the sandbox's /_sandbox admin API, kept in var/sandbox-admin.token (mode 0600) for
    tools that drive the sandbox; every process gets it as FLEETGATE_SANDBOX_ADMIN_TOKEN."""
    token = secrets.token_urlsafe(32)
    path = var / "sandbox-admin.token"
    var.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def wait_ready(url: str, token: str, banner: str, timeout: float = 180) -> None:
    """Ready: the web answers and the sandbox clusters are registered and reachable through the API."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _get(url + "healthz") is not None:
            clusters = _get(url + "api/clusters/?limit=100", token) or {}
            if clusters.get("count", 0) >= SANDBOX_CLUSTERS:
                print(banner, flush=True)
                return
        time.sleep(0.5)
    print(f"fleetgate: not ready within {timeout:.0f}s (see the process output above)", flush=True)


def main() -> int:
    os.chdir(ROOT)
    host = os.environ.get("FLEETGATE_HOST", "127.0.0.1")
    port = os.environ.get("FLEETGATE_PORT", "8000")
    sandbox_port = os.environ.get("FLEETGATE_SANDBOX_PORT", "8100")
    url = f"http://{host}:{port}/"
    var = var_dir()
    for name, value in DEV_OVERRIDES.items():
        os.environ.setdefault(name, value)
    os.environ["FLEETGATE_SANDBOX_ADMIN_TOKEN"] = new_sandbox_admin_token(var)

    print("fleetgate: migrating the database", flush=True)
    manage("migrate", "--noinput")
    manage("shell", "-c", "from fleet.celery import prepare_broker; prepare_broker()")
    manage("metrics_reset")  # the counters of an earlier run's processes (docs/operations.md#metrics)
    admin = manage("ensure_admin", "--password-file", str(var / "admin-password"))
    demo = ""
    if os.environ.get("FLEETGATE_DEMO", "1") != "0":
        demo = manage("demo", "setup")
    token = manage("create_token", "admin", "--description", "make run", "--days", "1")

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    manager = Manager()
    manager.add_process(
        "web",
        f"{BIN}/gunicorn fleet.wsgi --bind {host}:{port} --workers 2 --threads 4 --timeout 120 "
        "--graceful-timeout 5",
        env=env,
    )
    manager.add_process(
        "worker",
        f"{BIN}/celery -A fleet worker --loglevel INFO --concurrency 2 --without-mingle --without-gossip",
        env=env,
    )
    manager.add_process("beat", f"{BIN}/celery -A fleet beat --loglevel INFO", env=env)
    manager.add_process(
        "sandbox",
        f"{sys.executable} manage.py sandbox up --clusters {SANDBOX_CLUSTERS} --port {sandbox_port} "
        f"--state {var / 'sandbox-state.json'} --rollout-delay 1",
        env=env,
    )
    if env.get("FLEETGATE_REGO_ENGINE") == "opa":
        manager.add_process("opa", f"{sys.executable} scripts/opa_server.py", env=env)

    banner = "\n".join(
        [
            "",
            "=" * 78,
            f"Fleetgate is ready: {url}",
            f"  {admin}",
            f"  API token (1 day): {token}",
            f"  {demo}" if demo else "  (demo off: FLEETGATE_DEMO=0)",
            "",
            "  Try:",
            "  1. Open the URL, sign in, and look at Rollouts: the podinfo change is blocked in prod by a",
            "     policy.",
            "  2. Push the fix into the demo repository:  .venv/bin/python manage.py demo commit",
            f"  3. Ask the API:  curl -s -H 'Authorization: Bearer {token}' \\",
            f"                   '{url}api/rollouts/?state=blocked'",
            "  Stop with Ctrl-C.",
            "=" * 78,
            "",
        ]
    )
    threading.Thread(target=wait_ready, args=(url, token, banner), daemon=True).start()
    manager.loop()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
