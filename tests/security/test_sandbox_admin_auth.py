"""Unauthenticated control APIs beside the product.

Attack class: a management endpoint that ships without authentication and lets any local process (or a page
in the developer's browser, through DNS rebinding or a form post to 127.0.0.1) change state: here the
sandbox's ``/_sandbox`` admin API, which adds and removes clusters and injects faults. Argo CD and Rancher
advisories of 2022-2024 concern debug, metrics and helper endpoints reachable without the authentication the
main API has; Kubernetes tooling generally treats "only on loopback" as no protection.

The sandbox's admin API requires ``Authorization: Bearer <admin token>`` always; `manage.py sandbox up` takes
the token from FLEETGATE_SANDBOX_ADMIN_TOKEN (which `make run` generates per start) or generates one into
var/sandbox-admin.token with mode 0600.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusters.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parent.parent.parent


def call(base: str, method: str, path: str, auth: str | None = None) -> int:
    conn = http.client.HTTPConnection(base.split("://", 1)[1], timeout=10)
    headers = {"Authorization": auth} if auth is not None else {}
    conn.request(method, path, body=b"{}" if method != "GET" else None, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def test_the_admin_api_needs_the_bearer_token() -> None:
    with SandboxServer(admin_token="adm-token-1") as server:
        server.add_cluster("x", rollout_delay=0)
        for auth in (None, "", "Bearer", "Bearer wrong", "Basic YWRtLXRva2VuLTE=", "adm-token-1"):
            assert call(server.url, "GET", "/_sandbox/clusters", auth) == 401, auth
            assert call(server.url, "DELETE", "/_sandbox/clusters/x", auth) == 401, auth
        assert server.cluster("x")  # nothing was removed
        assert call(server.url, "GET", "/_sandbox/clusters", "Bearer adm-token-1") == 200
        assert call(server.url, "DELETE", "/_sandbox/clusters/x", "bearer adm-token-1") == 200


def test_a_server_without_an_admin_token_refuses_every_admin_call() -> None:
    with SandboxServer() as server:
        for auth in (None, "Bearer ", "Bearer None", "Bearer null"):
            assert call(server.url, "GET", "/_sandbox/clusters", auth) == 401, auth
            assert call(server.url, "POST", "/_sandbox/save", auth) == 401, auth


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str, list[str]]:
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    url = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := re.search(r"serving \d+ cluster\(s\) on (http://\S+)", line):
            url = match.group(1)
        if url and (line.startswith("running") or "sandbox-1 http" in line):
            return proc, url, lines
    proc.kill()
    raise AssertionError("".join(lines))


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.django_db(transaction=True)
def test_sandbox_up_generates_a_token_file_0600_and_requires_it(tmp_path: Path) -> None:
    from tests.workers import child_env

    var = tmp_path / "var"
    env = child_env(FLEETGATE_VAR_DIR=str(var))
    env.pop("FLEETGATE_SANDBOX_ADMIN_TOKEN", None)
    proc, url, lines = _start(
        [sys.executable, "manage.py", "sandbox", "up", "--clusters", "1", "--exit-after", "120"], env
    )
    try:
        token_file = var / "sandbox-admin.token"
        assert os.stat(token_file).st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert token not in "".join(lines)  # never printed
        assert call(url, "GET", "/_sandbox/clusters") == 401
        assert call(url, "GET", "/_sandbox/clusters", f"Bearer {token}") == 200
    finally:
        _stop(proc)


def test_the_standalone_sandbox_takes_the_token_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "FLEETGATE_SANDBOX_ADMIN_TOKEN": "from-env-123", "PYTHONUNBUFFERED": "1"}
    proc, url, _ = _start([sys.executable, "-m", "clusters.sandbox", "serve", "--clusters", "1"], env)
    try:
        assert call(url, "GET", "/_sandbox/clusters") == 401
        assert call(url, "GET", "/_sandbox/clusters", "Bearer from-env-123") == 200
        # the Kubernetes API of the clusters is unaffected by the admin token
        status = call(url, "GET", "/clusters/sandbox-1/version")
        assert status == 200
    finally:
        _stop(proc)
