"""Starting the REAL agent (``python -m clusters.agent``) as a child process in tests.

    from tests.agent.process import AgentProcess, run_agent_once

    done = run_agent_once(server_url, kubeconfig=path, state_dir=dir, bootstrap_token=token)  # --once
    agent = AgentProcess(server_url, kubeconfig=path, state_dir=dir, bootstrap_token=token,
                         log_path=tmp_path / "agent.log", health_port=port)   # long-running
    ...; agent.stop()   # SIGTERM, then SIGKILL after 20 s;  agent.kill() for a crash

The child gets no DJANGO_SETTINGS_MODULE and no database settings (the agent must not need them), plain
http:// is allowed (``--allow-http``: live_server and the stub serve http), logs are text, and the bootstrap
token travels in the environment (``FLEETGATE_AGENT_BOOTSTRAP_TOKEN``), never on the command line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.workers import ChildProcess

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_command(
    server: str,
    *,
    kubeconfig: str | Path,
    state_dir: str | Path,
    once: bool = False,
    health_port: int = 0,
    extra: list[str] | None = None,
) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "clusters.agent",
        "--server",
        server,
        "--allow-http",
        "--kubeconfig",
        str(kubeconfig),
        "--state-dir",
        str(state_dir),
        "--health-port",
        str(health_port),
        "--health-host",
        "127.0.0.1",
        "--log-format",
        "text",
        "--backoff-max",
        "1",
    ]
    if once:
        args.append("--once")
    return args + list(extra or [])


def agent_env(bootstrap_token: str = "", **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "DJANGO_SETTINGS_MODULE" and not k.startswith("FLEETGATE_") and k != "DATABASE_URL"
    }
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if bootstrap_token:
        env["FLEETGATE_AGENT_BOOTSTRAP_TOKEN"] = bootstrap_token
    env.update(extra)
    return env


def run_agent_once(
    server: str,
    *,
    kubeconfig: str | Path,
    state_dir: str | Path,
    bootstrap_token: str = "",
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m clusters.agent --once``: one poll, its work, one report; returns the finished process
    (``returncode``, ``stdout``, ``stderr``: the logs)."""
    return subprocess.run(
        agent_command(server, kubeconfig=kubeconfig, state_dir=state_dir, once=True, extra=extra),
        cwd=ROOT,
        env=agent_env(bootstrap_token, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class AgentProcess(ChildProcess):
    """A long-running agent; its logs go to ``log_path``. ``kill()``: SIGKILL, the agent dies mid-whatever
    (no result reported, no cleanup); ``stop()``: SIGTERM (a Work in progress is finished first), SIGKILL
    after 20 s, returns the exit code."""

    def __init__(
        self,
        server: str,
        *,
        kubeconfig: str | Path,
        state_dir: str | Path,
        log_path: Path,
        bootstrap_token: str = "",
        health_port: int = 0,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.health_port = health_port
        super().__init__(
            agent_command(
                server, kubeconfig=kubeconfig, state_dir=state_dir, health_port=health_port, extra=extra
            ),
            log_path,
            agent_env(bootstrap_token, **(env or {})),
        )

    def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        """GET /healthz or /readyz of the agent's probe server: (status, JSON body); (0, {}) when down."""
        import json
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}
