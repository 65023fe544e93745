"""State saved to a JSON file survives restarts; the CLI serves N clusters; the admin API sets faults."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys

import pytest

from clusters.sandbox import SandboxServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_state_file_survives_a_restart(tmp_path, make_client, deployment):
    state = str(tmp_path / "sandbox.json")
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "gizmos", "kind": "Gizmo"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    with SandboxServer(state_file=state) as server:
        cluster = server.add_cluster("keep", token="tok", rollout_delay=0)
        dyn = make_client(cluster, token="tok")
        dyn.resources.get(api_version="apps/v1", kind="Deployment").server_side_apply(
            body=deployment(), name="web", namespace="default", field_manager="fleetgate"
        )
        dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition").create(
            body=crd
        )
        rv = cluster.resource_version
    assert os.stat(state).st_mode & 0o777 == 0o600  # it holds tokens

    with SandboxServer(state_file=state) as server:
        cluster = server.cluster("keep")
        assert cluster.token == "tok" and cluster.resource_version == rv
        dyn = make_client(cluster, token="tok")
        deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
        obj = deps.get(name="web", namespace="default")
        assert obj.spec.replicas == 2 and obj.metadata.managedFields[0].manager == "fleetgate"
        gizmos = dyn.resources.get(api_version="example.com/v1", kind="Gizmo")
        assert gizmos.get(namespace="default").items == []
        created = deps.create(body=deployment(name="next"))
        assert int(created.metadata.resourceVersion) > rv


def test_admin_api_adds_clusters_and_sets_faults():
    with SandboxServer(admin_token="adm") as server:
        host = server.url.split("://")[1]

        def call(method: str, path: str, body: dict | None = None, token: str = "adm") -> tuple[int, dict]:  # noqa: S107
            conn = http.client.HTTPConnection(host, timeout=5)
            conn.request(
                method,
                path,
                body=json.dumps(body) if body is not None else None,
                headers={"Authorization": f"Bearer {token}"},
            )
            resp = conn.getresponse()
            out = json.loads(resp.read())
            conn.close()
            return resp.status, out

        assert call("GET", "/_sandbox/clusters", token="nope")[0] == 401
        code, added = call("POST", "/_sandbox/clusters", {"name": "x", "settings": {"rollout_delay": 0}})
        assert code == 201 and added["url"].endswith("/clusters/x")
        assert server.cluster("x").settings.rollout_delay == 0
        code, faults = call("PATCH", "/_sandbox/clusters/x/faults", {"fail_next": [1, 500]})
        assert code == 200 and faults["pending_failures"] == 1
        conn = http.client.HTTPConnection(host, timeout=5)
        conn.request("GET", "/clusters/x/version")
        assert conn.getresponse().status == 500
        conn.close()
        assert call("PATCH", "/_sandbox/clusters/x/faults", {"bogus": 1})[0] == 400
        assert call("DELETE", "/_sandbox/clusters/x")[0] == 200
        assert call("GET", "/_sandbox/clusters")[1] == {"clusters": []}


def test_cli_serves_named_clusters_and_saves_state_on_sigterm(tmp_path, make_client):
    state = tmp_path / "state.json"
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clusters.sandbox",
            "serve",
            "--port",
            "0",
            "--clusters",
            "3",
            "--state",
            str(state),
            "--token",
            "tok",
            "--rollout-delay",
            "0",
            "--kubeconfig",
            str(kubeconfig),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        header = proc.stdout.readline()
        assert header.startswith("sandbox serving 3 cluster(s) on http://127.0.0.1:"), header
        urls = dict(proc.stdout.readline().split() for _ in range(3))
        assert list(urls) == ["sandbox-1", "sandbox-2", "sandbox-3"]
        assert urls["sandbox-2"].endswith("/clusters/sandbox-2")
        config = json.loads(kubeconfig.read_text())
        assert [c["name"] for c in config["contexts"]] == ["sandbox-1", "sandbox-2", "sandbox-3"]
        cms = make_client(urls["sandbox-2"], token="tok").resources.get(api_version="v1", kind="ConfigMap")
        cms.create(
            body={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "saved", "namespace": "default"},
            }
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    saved = json.loads(state.read_text())
    objects = {c["name"]: c["state"]["objects"] for c in saved["clusters"]}
    assert "saved" in {o["metadata"]["name"] for o in objects["sandbox-2"]}


def test_cli_rejects_unknown_commands():
    result = subprocess.run(
        [sys.executable, "-m", "clusters.sandbox", "explode"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_bad_settings_and_faults_are_refused(cluster):
    with pytest.raises(ValueError):
        cluster.settings.update(unknown=1)
    with pytest.raises(ValueError):
        cluster.faults.configure(fail_next=[1, 200])  # not an error status
    with pytest.raises(ValueError):
        cluster.faults.configure(bogus=1)


def test_tls_dir_keeps_the_ca_across_restarts(tmp_path, make_client):
    with SandboxServer(tls=True, tls_dir=str(tmp_path / "pki")) as first:
        ca = first.ca_pem
        first.add_cluster("a")
    with SandboxServer(tls=True, tls_dir=str(tmp_path / "pki")) as second:
        assert second.ca_pem == ca
        cluster = second.add_cluster("a")
        dyn = make_client(cluster, ca_file=second.ca_file)
        assert dyn.resources.get(api_version="v1", kind="Namespace").get().kind == "NamespaceList"
    assert (tmp_path / "pki" / "server.key").stat().st_mode & 0o777 == 0o600


def test_run_forever_returns_and_stops_when_told(tmp_path):
    import threading

    server = SandboxServer(state_file=str(tmp_path / "s.json")).start()
    server.add_cluster("x")
    stop = threading.Event()
    stop.set()
    server.run_forever(stop)  # from a test thread: no signal handlers, returns once stop is set
    assert (tmp_path / "s.json").exists()
    with pytest.raises(OSError):
        http.client.HTTPConnection(server.url.split("://")[1], timeout=2).request(
            "GET", "/clusters/x/version"
        )


def test_settings_update_parses_booleans_and_resizes_history(cluster, raw):
    cluster.settings.update(fail_rollouts="false", never_ready="true", history_size=2)
    assert cluster.settings.fail_rollouts is False and cluster.settings.never_ready is True
    with pytest.raises(ValueError):
        cluster.settings.update(fail_rollouts="maybe")
    start = cluster.resource_version
    for i in range(4):
        raw("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"h{i}"}})
    hostport, _, prefix = cluster.url.split("://", 1)[1].partition("/")
    conn = http.client.HTTPConnection(hostport, timeout=10)
    conn.request("GET", f"/{prefix}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={start}")
    event = json.loads(conn.getresponse().readline())
    conn.close()
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
