"""``manage.py agent_manifest``: the printed YAML parses, holds what the agent needs, passes a real
kube-apiserver's validation (``kubectl apply --server-side --dry-run=server``), issues an audited bootstrap
token only with --bootstrap, and refuses a push-mode cluster."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from clusters.models import AgentCredential, Cluster
from fleet.audit.models import AuditEvent
from tests.kube_backends import KubeApiServer

ROOT = Path(__file__).resolve().parents[2]


def _manifest(*args: str) -> tuple[list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("agent_manifest", *args, stdout=out, stderr=err)
    return list(yaml.safe_load_all(out.getvalue())), err.getvalue()


@pytest.fixture
def pull_cluster(db: Any) -> Cluster:
    return Cluster.objects.create(name="edge-1", connection_mode="pull", labels={"site": "edge"})


def test_manifest_holds_the_agent_deployment_and_rbac(pull_cluster: Cluster) -> None:
    docs, _ = _manifest(
        "edge-1", "--server", "https://fleetgate.example.com/", "--image", "reg.example/fg:1.2"
    )
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [
        ("Namespace", "fleetgate-agent"),
        ("ServiceAccount", "fleetgate-agent"),
        ("ClusterRole", "fleetgate-agent"),
        ("ClusterRoleBinding", "fleetgate-agent"),
        ("Role", "fleetgate-agent-state"),
        ("RoleBinding", "fleetgate-agent-state"),
        ("Deployment", "fleetgate-agent"),
    ]
    deploy = docs[-1]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "reg.example/fg:1.2"
    assert container["command"] == ["python", "-m", "clusters.agent"]
    assert container["args"][:4] == [
        "--server",
        "https://fleetgate.example.com",
        "--state-secret",
        "fleetgate-agent-state",
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["serviceAccountName"] == "fleetgate-agent"
    role = docs[4]
    assert role["rules"][0]["resourceNames"] == ["fleetgate-agent-state"]
    # no bootstrap token unless asked
    assert not AgentCredential.objects.exists()
    assert "fga_b_" not in yaml.safe_dump_all(docs)


def test_bootstrap_issues_an_audited_token_in_a_secret(pull_cluster: Cluster) -> None:
    docs, err = _manifest("edge-1", "--server", "https://fleetgate.example.com", "--bootstrap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert secret["metadata"] == {
        "name": "fleetgate-agent-bootstrap",
        "namespace": "fleetgate-agent",
        "labels": secret["metadata"]["labels"],
    }
    token = secret["stringData"]["token"]
    assert token.startswith("fga_b_")
    cred = AgentCredential.objects.get(cluster=pull_cluster)
    assert cred.kind == "bootstrap" and cred.used_at is None and cred.revoked_at is None
    assert cred.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in err and cred.prefix in err
    event = AuditEvent.objects.get(action="agent.bootstrap_issued")
    assert token not in str(event.after) and token not in event.message
    assert "@" in event.actor_name  # the operator at the shell
    env = docs[-1]["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert env["valueFrom"]["secretKeyRef"]["name"] == "fleetgate-agent-bootstrap"

    # a second --bootstrap revokes the first (unused) token
    docs2, _ = _manifest("edge-1", "--server", "https://fleetgate.example.com", "--bootstrap")
    cred.refresh_from_db()
    assert cred.revoked_at is not None
    assert next(d for d in docs2 if d["kind"] == "Secret")["stringData"]["token"] != token


def test_push_mode_cluster_and_bad_input_are_refused(db: Any, tmp_path: Path) -> None:
    Cluster.objects.create(name="pushed", api_url="https://10.0.0.1:6443", auth_method="token", token="t")
    with pytest.raises(CommandError, match="push mode"):
        _manifest("pushed", "--server", "https://fleetgate.example.com", "--bootstrap")
    assert not AgentCredential.objects.exists()
    with pytest.raises(CommandError, match="no cluster named"):
        _manifest("nowhere", "--server", "https://fleetgate.example.com")
    Cluster.objects.create(name="edge-2", connection_mode="pull")
    with pytest.raises(CommandError, match="--server"):
        _manifest("edge-2", "--server", "fleetgate.example.com")
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(CommandError, match="no PEM certificate"):
        _manifest("edge-2", "--server", "https://f.example", "--ca-file", str(tmp_path / "ca.pem"))


def test_manifest_passes_kube_apiserver_validation(
    pull_cluster: Cluster, kube_apiserver: KubeApiServer
) -> None:
    """kubectl 1.37 applies every object with server-side dry run against a real kube-apiserver (schema,
    RBAC rules, pod spec validation); the Namespace is applied for real first, so namespaced ones resolve."""
    docs, _ = _manifest(
        "edge-1",
        "--server",
        "https://fleetgate.example.com",
        "--bootstrap",
        "--ca-file",
        str(kube_apiserver.ca_file),
    )
    kubectl = [str(ROOT / ".venv" / "bin" / "kubectl"), "--kubeconfig", str(kube_apiserver.kubeconfig)]
    namespace = yaml.safe_dump(docs[0])
    first = subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", "-"],
        input=namespace,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    rest = yaml.safe_dump_all(docs[1:])
    dry = subprocess.run(
        [*kubectl, "apply", "--server-side", "--dry-run=server", "-f", "-"],
        input=rest,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert "deployment.apps/fleetgate-agent serverside-applied (server dry run)" in dry.stdout
    assert "configmap/fleetgate-agent-ca serverside-applied (server dry run)" in dry.stdout
    assert "secret/fleetgate-agent-bootstrap serverside-applied (server dry run)" in dry.stdout
