"""The real `make run` entry point (scripts/run.py), in a temporary directory on free ports: it reports ready,
the demo's clusters, groups, repository, mappings and policies exist, the demo's second commit is blocked for
prod only, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Run:
    def __init__(self, tmp: Path) -> None:
        self.marker = f"FLEETGATE_RUN_MARKER={uuid.uuid4().hex}"
        self.port, self.sandbox_port = free_port(), free_port()
        # Its own database, broker and metrics directory under its var/ (make run empties its metrics
        # directory at start: it must not be this test run's).
        own = ("DATABASE_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR")
        env = {k: v for k, v in os.environ.items() if k not in own}
        env.update(
            FLEETGATE_VAR_DIR=str(tmp / "var"),
            FLEETGATE_PORT=str(self.port),
            FLEETGATE_SANDBOX_PORT=str(self.sandbox_port),
            DJANGO_SETTINGS_MODULE="fleet.settings",
            FLEETGATE_RUN_MARKER=self.marker.split("=", 1)[1],
            FLEETGATE_METRICS_TOKEN=METRICS_TOKEN,
        )
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "run.py")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.text):
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"no {pattern!r} within {timeout:.0f}s; output:\n{self.text[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


METRICS_TOKEN = "make-run-metrics-token"


def test_make_run_shows_the_demo_and_stops_cleanly(tmp_path: Path) -> None:
    run = Run(tmp_path)
    try:
        run.wait_for(r"Fleetgate is ready", timeout=300)
        token = run.wait_for(r"API token \(1 day\): (fgt_\S+)", timeout=5).group(1)
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{run.port}/api"

        def get(path: str) -> Any:
            # A new connection per call: no race with the server closing an idle keep-alive connection.
            response = requests.get(base + path, headers=headers, timeout=30)
            assert response.status_code == 200, (path, response.text[:500])
            return response.json()

        assert get("/clusters/")["count"] == 6
        assert sorted(g["name"] for g in get("/groups/")["results"]) == ["dev", "prod", "staging"]
        assert [r["name"] for r in get("/repositories/")["results"]] == ["demo"]
        assert get("/mappings/?limit=100")["count"] == 9

        def podinfo_states() -> dict[str, str]:
            rollouts = get("/rollouts/?limit=100")["results"]
            return {
                r["mapping"]["name"]: r["state"]
                for r in rollouts
                if r["mapping"]["name"].startswith("podinfo")
            }

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            states = podinfo_states()
            if states == {"podinfo-dev": "synced", "podinfo-staging": "synced", "podinfo-prod": "blocked"}:
                break
            time.sleep(2)
        states = podinfo_states()
        assert states == {"podinfo-dev": "synced", "podinfo-staging": "synced", "podinfo-prod": "blocked"}, (
            states
        )
        assert get("/policies/")["count"] >= 1
        blocked = get("/rollouts/?state=blocked")["results"]
        assert {r["mapping"]["name"] for r in blocked} == {"podinfo-prod"}
        # The probes and the metrics of the running stack: the worker's syncs reach the web's /metrics.
        root = f"http://127.0.0.1:{run.port}"
        ready = requests.get(root + "/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        scraped = requests.get(
            root + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
        )
        assert scraped.status_code == 200, scraped.text[:500]
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(scraped.text)
            for s in family.samples
        }
        assert samples[("fleetgate_rollouts", (("state", "blocked"),))] == 1
        assert samples[("fleetgate_cluster_syncs_total", (("result", "synced"),))] >= 4  # dev and staging
        assert "prod needs at least 2" in blocked[0]["reason"]
    finally:
        run.stop()
    assert run.process.returncode is not None
    time.sleep(1)
    assert processes_with(run.marker) == [], "processes were left behind"
