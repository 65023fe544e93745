"""/readyz fails, naming the check, when the database, the broker or the policy engine cannot be reached
(real servers stopped or addresses on a closed port, in a fresh process that starts with them), and the
metrics of several processes add up through the shared directory."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from policies.engine.opa_server import OpaServer, build_opa
from tests.observability.scrape import Scrape, scrape
from tests.workers import ROOT, child_env, wait_for

READYZ = (
    "import django, json; django.setup(); from django.test import Client; "
    "r = Client().get('/readyz'); print(json.dumps({'code': r.status_code, 'body': r.json()}))"
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readyz_in_a_process(tmp_path: Path, **env: str) -> tuple[int, dict[str, Any], str]:
    """GET /readyz in a new process started with ``env`` (the settings read it once, at start)."""
    run = subprocess.run(
        [sys.executable, "-c", READYZ],
        cwd=ROOT,
        env=child_env(FLEETGATE_LOG_LEVEL="ERROR", **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    return answer["code"], answer["body"], run.stdout + run.stderr


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in body["checks"].items()}


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_readyz_names_an_unreachable_database_and_answers_503(tmp_path: Path) -> None:
    code, body, _ = readyz_in_a_process(tmp_path)
    assert code == 200 and statuses(body) == {"database": "ok", "broker": "ok", "policy_engine": "ok"}
    url = f"postgres://fleetgate:db-pw-never-shown@127.0.0.1:{closed_port()}/fleetgate"
    code, body, _ = readyz_in_a_process(tmp_path, DATABASE_URL=url)
    assert code == 503
    assert body["status"] == "unavailable"
    assert statuses(body) == {"database": "failed", "broker": "ok", "policy_engine": "ok"}
    assert "db-pw-never-shown" not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_readyz_names_an_unreachable_broker_and_answers_503(tmp_path: Path) -> None:
    url = f"redis://:broker-pw-never-shown@127.0.0.1:{closed_port()}/0"
    code, body, _ = readyz_in_a_process(tmp_path, CELERY_BROKER_URL=url)
    assert code == 503
    assert statuses(body) == {"database": "ok", "broker": "failed", "policy_engine": "ok"}
    assert "broker-pw-never-shown" not in json.dumps(body)


@pytest.mark.django_db
@pytest.mark.integration
def test_readyz_follows_a_real_opa_server_that_stops(settings: Any) -> None:
    server = OpaServer(build_opa())
    server.start()
    try:
        settings.FLEETGATE_REGO_ENGINE = "opa"
        settings.FLEETGATE_OPA_URL = server.url
        ready = Client().get("/readyz")
        assert ready.status_code == 200, ready.content
        assert statuses(ready.json())["policy_engine"] == "ok"
    finally:
        server.stop()
    stopped = Client().get("/readyz")
    assert stopped.status_code == 503
    assert statuses(stopped.json()) == {"database": "ok", "broker": "ok", "policy_engine": "failed"}


COUNT = (
    "import sys; from fleet.observability import metrics\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    metrics.cluster_sync('synced', 0.5)\n"
    "metrics.gate_decision('passed', 'regorus', 0.01)\n"
)


@pytest.mark.django_db
def test_counters_of_two_processes_add_up_in_one_scrape(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(shared))
    # Two processes at the same time, each with its own files in the directory.
    processes = [subprocess.Popen([sys.executable, "-c", COUNT, str(n)], cwd=ROOT, env=env) for n in (3, 5)]
    assert [p.wait(timeout=60) for p in processes] == [0, 0]
    assert len(list(shared.glob("counter_*.db"))) == 2
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    settings.FLEETGATE_METRICS_TOKEN = "two-processes"
    s = scrape(Client(), HTTP_AUTHORIZATION="Bearer two-processes")
    assert s.value("fleetgate_cluster_syncs_total", result="synced") == 8
    assert s.value("fleetgate_cluster_sync_duration_seconds_count", result="synced") == 8
    assert s.value("fleetgate_cluster_sync_duration_seconds_sum", result="synced") == 4.0
    assert s.value("fleetgate_cluster_sync_duration_seconds_bucket", result="synced", le="0.5") == 8
    assert s.value("fleetgate_gate_decisions_total", outcome="passed", engine="regorus") == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_metrics_server_serves_the_shared_metrics_on_its_own_port(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(shared))
    subprocess.run([sys.executable, "-c", COUNT, "2"], cwd=ROOT, env=env, check=True, timeout=60)
    port = closed_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "metrics_server", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "metrics on" in server.stdout.readline()  # listening
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        missing = urllib.request.Request(f"http://127.0.0.1:{port}/other")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(missing, timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert refused.value.code == 404
    assert 'fleetgate_cluster_syncs_total{result="synced"} 2.0' in text
    assert "fleetgate_rollouts{" in text


def test_metrics_reset_empties_the_directory(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(shared))
    subprocess.run([sys.executable, "-c", COUNT, "1"], cwd=ROOT, env=env, check=True, timeout=60)
    assert list(shared.iterdir())
    subprocess.run([sys.executable, "manage.py", "metrics_reset"], cwd=ROOT, env=env, check=True, timeout=60)
    assert shared.is_dir() and not list(shared.iterdir())


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_gunicorn_workers_count_into_the_shared_directory(tmp_path: Path) -> None:
    """Requests served by either of two gunicorn workers are all in the scrape, whichever worker answers it
    (with in-memory values there would be no files, and each worker would count only its own)."""
    port = closed_port()
    var = tmp_path / "var"
    env = child_env(FLEETGATE_VAR_DIR=str(var), FLEETGATE_METRICS_TOKEN="gunicorn-test")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the default: $FLEETGATE_VAR_DIR/metrics
    log = open(tmp_path / "gunicorn.log", "wb")
    web = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "fleet.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(base + "/healthz") is not None, timeout=60, what="gunicorn")
        for _ in range(20):
            assert _get(base + "/healthz") == 200
        texts = []
        for _ in range(4):
            request = urllib.request.Request(
                base + "/metrics", headers={"Authorization": "Bearer gunicorn-test"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                texts.append(response.read().decode())
    finally:
        web.terminate()
        web.wait(timeout=30)
        log.close()
    files = list((var / "metrics").glob("*.db"))
    assert files, (tmp_path / "gunicorn.log").read_text()[-2000:]
    for text in texts:
        served = Scrape(text).total("django_http_responses_total_by_status_view_method_total", view="healthz")
        assert served >= 21  # the 20 and the wait's first answer, whichever worker served them


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return None
