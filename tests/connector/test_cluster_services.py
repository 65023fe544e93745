"""check_cluster, the test-connection API action and admin action, and `manage.py sandbox`, on real
sandbox clusters over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from clusters import services, tasks
from clusters.models import Cluster
from clusters.sandbox import SandboxCluster, SandboxServer
from fleet.audit.models import AuditEvent
from tests.factories import ClusterFactory, ClusterGroupFactory

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-sandbox-token-value"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as s:
        yield s


@pytest.fixture
def sandbox(server: SandboxServer, request: pytest.FixtureRequest) -> Iterator[SandboxCluster]:
    name = f"svc-{abs(hash(request.node.name)) % 10**8}"
    cluster = server.add_cluster(name, token=TOKEN, own_port=True, rollout_delay=0)
    yield cluster
    server.remove_cluster(name)


def registered(sandbox: SandboxCluster, token: str = TOKEN, **extra: Any) -> Cluster:
    return ClusterFactory(
        name=sandbox.name, api_url=sandbox.url, token=token, labels={"env": "staging"}, **extra
    )


@pytest.mark.django_db
def test_reachable_sandbox_records_version_and_audits_the_change(sandbox: SandboxCluster) -> None:
    cluster = registered(sandbox)
    outcome = services.check_cluster(cluster)
    cluster.refresh_from_db()
    assert outcome.reachable and cluster.status == "reachable"
    assert cluster.kubernetes_version.startswith("v1.")
    assert cluster.last_seen is not None and cluster.last_error == ""
    event = AuditEvent.objects.get(action="cluster.status_change")
    assert (event.before["status"], event.after["status"]) == ("unknown", "reachable")
    services.check_cluster(cluster)  # no change, no second event
    assert AuditEvent.objects.filter(action="cluster.status_change").count() == 1


@pytest.mark.django_db
def test_down_sandbox_is_unreachable_with_error_text_and_no_secret(sandbox: SandboxCluster) -> None:
    cluster = registered(sandbox)
    services.check_cluster(cluster)
    seen = Cluster.objects.get(pk=cluster.pk).last_seen
    sandbox.faults.down = True
    try:
        outcome = services.check_cluster(cluster, connect_timeout=2, read_timeout=2)
    finally:
        sandbox.faults.down = False
    cluster.refresh_from_db()
    assert not outcome.reachable and cluster.status == "unreachable"
    assert "connection refused" in cluster.last_error
    assert sandbox.url.split("//")[1].split("/")[0] in cluster.last_error
    assert TOKEN not in cluster.last_error
    assert cluster.last_seen == seen  # the last time it was seen stays
    event = AuditEvent.objects.filter(action="cluster.status_change").latest("sequence")
    assert event.after["status"] == "unreachable" and TOKEN not in event.message


@pytest.mark.django_db
def test_wrong_token_is_unreachable_with_401(sandbox: SandboxCluster) -> None:
    cluster = registered(sandbox, token="not-the-token-at-all")
    outcome = services.check_cluster(cluster)
    cluster.refresh_from_db()
    assert not outcome.reachable and cluster.status == "unreachable"
    assert "401" in cluster.last_error and "Unauthorized" in cluster.last_error
    assert "not-the-token-at-all" not in cluster.last_error


@pytest.mark.django_db
def test_kubeconfig_credentials_are_used(
    server: SandboxServer, sandbox: SandboxCluster, tmp_path: Path
) -> None:
    text = json.dumps(server.kubeconfig([sandbox.name]))
    cluster = ClusterFactory(
        name=sandbox.name, auth_method="kubeconfig", kubeconfig=text, token="", api_url=""
    )
    cluster.full_clean()
    outcome = services.check_cluster(cluster)
    assert outcome.reachable, outcome.error


@pytest.mark.django_db
def test_check_all_clusters_task_counts_statuses(server: SandboxServer, sandbox: SandboxCluster) -> None:
    registered(sandbox)
    ClusterFactory(name="nowhere", api_url="http://127.0.0.1:9/")  # the discard port: refused
    counts = tasks.check_all_clusters.run(workers=2)
    assert counts == {"reachable": 1, "unreachable": 1}
    assert tasks.check_cluster.run(Cluster.objects.get(name="nowhere").pk)["status"] == "unreachable"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "scoped_in", "expected"),
    [
        ("deployer", True, 200),
        ("cluster-admin", True, 200),
        ("admin", None, 200),
        ("viewer", True, 403),
        ("approver", None, 403),
        ("deployer", False, 404),
    ],
)
def test_test_connection_api_action(
    sandbox: SandboxCluster,
    make_user: Callable[..., Any],
    token_client: Callable[[Any], Any],
    role: str,
    scoped_in: bool | None,
    expected: int,
) -> None:
    staging = ClusterGroupFactory(name="staging", selector={"matchLabels": {"env": "staging"}})
    prod = ClusterGroupFactory(name="prod", selector={"matchLabels": {"env": "prod"}})
    cluster = registered(sandbox)
    scope = None if scoped_in is None else (staging if scoped_in else prod)
    client = token_client(make_user(f"u-{role}", role=role, scope=scope))
    response = client.post(f"/api/clusters/{cluster.pk}/test-connection/")
    assert response.status_code == expected, response.content
    cluster.refresh_from_db()
    if expected == 200:
        body = response.json()
        assert body["reachable"] is True and body["status"] == "reachable"
        assert body["version"].startswith("v1.") and body["error"] == ""
        assert TOKEN not in response.content.decode()
        assert cluster.status == "reachable"
        event = AuditEvent.objects.get(action="cluster.test")
        assert event.actor_name == f"u-{role}" and event.change_context == "api"
    else:
        assert cluster.status == "unknown"
        assert not AuditEvent.objects.filter(action="cluster.test").exists()


@pytest.mark.django_db
def test_test_connection_api_reports_a_down_cluster(sandbox: SandboxCluster, admin_client: Any) -> None:
    cluster = registered(sandbox)
    sandbox.faults.down = True
    try:
        response = admin_client.post(f"/api/clusters/{cluster.pk}/test-connection/")
    finally:
        sandbox.faults.down = False
    assert response.status_code == 200
    assert response.json()["reachable"] is False and "connection refused" in response.json()["error"]


@pytest.mark.django_db
def test_admin_action_tests_the_selected_clusters(
    sandbox: SandboxCluster, client: Any, make_user: Any
) -> None:
    cluster = registered(sandbox)
    root = make_user("boss", superuser=True)
    client.force_login(root)
    response = client.post(
        "/admin/clusters/cluster/",
        {"action": "test_connection", "_selected_action": [cluster.pk], "index": 0},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert len(shown) == 1 and shown[0].startswith(f"{cluster.name}: reachable, Kubernetes v1."), shown
    cluster.refresh_from_db()
    assert cluster.status == "reachable"


def test_spread_labels_cover_every_combination_first() -> None:
    labels = services.spread_labels(7)
    assert {(x["env"], x["region"]) for x in labels[:6]} == {
        (e, r) for e in ("dev", "staging", "prod") for r in ("eu", "us")
    }
    assert labels[6] == labels[0]
    assert services.parse_label_spec(["tier=a,b"]) == {"tier": ["a", "b"]}
    with pytest.raises(ValueError, match="key=value1,value2"):
        services.parse_label_spec(["tier"])


@pytest.mark.django_db
def test_sandbox_register_from_a_kubeconfig(server: SandboxServer, tmp_path: Path) -> None:
    names = [f"reg-{i}" for i in range(3)]
    for name in names:
        server.add_cluster(name, token=f"{name}-token-value")
    try:
        path = server.write_kubeconfig(str(tmp_path / "kubeconfig"), names)
        call_command("sandbox", "register", "--kubeconfig", path, "--labels", "env=dev,prod")
        call_command("sandbox", "register", "--kubeconfig", path)  # again: updates, no duplicates
    finally:
        for name in names:
            server.remove_cluster(name)
    rows = list(Cluster.objects.filter(name__in=names).order_by("name"))
    assert [c.name for c in rows] == names
    assert [c.labels["env"] for c in rows] == ["dev", "prod", "dev"]
    assert all(c.status == "reachable" and c.auth_method == "token" for c in rows)
    assert rows[1].token == "reg-1-token-value"
    assert AuditEvent.objects.filter(action="cluster.create").count() == 3
    assert AuditEvent.objects.filter(action="cluster.update").count() == 3


@pytest.mark.django_db(transaction=True)
def test_sandbox_up_runs_registers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    from tests.workers import child_env

    state = tmp_path / "sandbox.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "sandbox",
            "up",
            "--clusters",
            "4",
            "--state",
            str(state),
            "--exit-after",
            "120",
        ],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("running"):
                break
        assert lines and lines[-1].startswith("running"), "".join(lines)
        rows = list(Cluster.objects.order_by("name"))
        assert [c.name for c in rows] == ["sandbox-1", "sandbox-2", "sandbox-3", "sandbox-4"]
        assert [(c.labels["env"], c.labels["region"]) for c in rows] == [
            ("dev", "eu"),
            ("staging", "eu"),
            ("prod", "eu"),
            ("dev", "us"),
        ]
        assert all(c.status == "reachable" and c.token for c in rows)
        # the registered credentials work from this process too
        assert services.probe(rows[0]).reachable
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + out
    assert "sandbox stopped" in out
    saved = json.loads(state.read_text())
    assert sorted(c["name"] for c in saved["clusters"]) == [
        "sandbox-1",
        "sandbox-2",
        "sandbox-3",
        "sandbox-4",
    ]
