"""The REAL agent process (``python -m clusters.agent``) against a stand-in Fleetgate that answers as the
issue 18 contract says, and a sandbox cluster it applies to with the connector: registration, state file,
work applied and reported, digest mismatch, lost lease, rotation, revocation, Fleetgate restarting,
drift and self-heal reports, probes and SIGTERM."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from clusters.agent.digest import work_digest
from tests.agent.conftest import AgentCluster
from tests.agent.fleetgate_stub import StubFleetgate
from tests.agent.process import AgentProcess, free_port, run_agent_once
from tests.kube_backends import KubeApiServer
from tests.workers import wait_for


def configmap(name: str, data: dict[str, str], namespace: str = "apps") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}


def _logs(done: Any) -> str:
    return done.stdout + done.stderr


def test_register_apply_report_and_reuse_the_stored_credential(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster
) -> None:
    bootstrap = fleetgate_stub.issue_bootstrap()
    work = fleetgate_stub.add_work([NAMESPACE, configmap("web", {"color": "blue"})])
    done = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=bootstrap,
    )
    assert done.returncode == 0, _logs(done)

    # registered with the bootstrap token and kept the credential in a 0600 file of a 0700 directory
    state_file = agent_cluster.state_dir / "credential.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent_cluster.state_dir.stat().st_mode) == 0o700
    stored = json.loads(state_file.read_text())
    assert stored["token"].startswith("fga_a_") and stored["cluster"] == "edge-1"
    register = [c for c in fleetgate_stub.state.calls if c.path == "register"]
    assert len(register) == 1 and register[0].token == bootstrap
    assert register[0].body["kubernetes_version"].startswith("v1.")
    assert register[0].body["agent_version"]

    # applied on the cluster and reported once, with the digest and the attempt
    assert agent_cluster.sandbox.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}
    result = fleetgate_stub.state.results[work["id"]]
    assert result["ok"] is True and result["error"] == ""
    assert result["digest"] == work["digest"] and result["attempt"] == 1
    assert result["counts"] == {"created": 2}
    assert {(r["kind"], r["name"]) for r in result["inventory"]} == {
        ("Namespace", "apps"),
        ("ConfigMap", "web"),
    }
    assert result["health"]["state"] == "Healthy"
    assert [c.token for c in fleetgate_stub.state.calls if c.path != "register"] == [stored["token"]] * (
        len(fleetgate_stub.state.calls) - 1
    )
    assert fleetgate_stub.state.reports[-1]["kubernetes_version"].startswith("v1.")
    # no token in the logs
    assert bootstrap not in _logs(done) and stored["token"] not in _logs(done)

    # a second run uses the stored credential: no second registration (the bootstrap token is spent)
    again = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=bootstrap,
    )
    assert again.returncode == 0, _logs(again)
    assert len([c for c in fleetgate_stub.state.calls if c.path == "register"]) == 1


def test_digest_mismatch_applies_nothing_and_reports_failure(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster
) -> None:
    objects = [NAMESPACE, configmap("web", {"color": "blue"})]
    signed = work_digest(objects, [], True)
    tampered = [NAMESPACE, configmap("web", {"color": "evil"})]
    work = fleetgate_stub.add_work(tampered, digest=signed)
    done = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=fleetgate_stub.issue_bootstrap(),
    )
    assert done.returncode == 0, _logs(done)
    result = fleetgate_stub.state.results[work["id"]]
    assert result["ok"] is False and result["transient"] is False
    assert "digest mismatch" in result["error"] and "nothing was applied" in result["error"]
    assert result["results"] == [] and result["inventory"] == []
    assert agent_cluster.sandbox.get_object("v1", "Namespace", "apps") is None
    assert agent_cluster.sandbox.get_object("v1", "ConfigMap", "web", "apps") is None
    assert not [c for c in fleetgate_stub.state.calls if c.path.endswith("/heartbeat")]


def test_lost_lease_stops_and_reports_nothing(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster
) -> None:
    agent_cluster.sandbox.settings.update(never_ready=True)  # the health wait lasts its whole timeout
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
            },
        },
    }
    work = fleetgate_stub.add_work([NAMESPACE, deployment], lease_seconds=3, health_timeout=8.0)
    fleetgate_stub.state.heartbeat_conflicts.add(work["id"])
    done = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=fleetgate_stub.issue_bootstrap(),
    )
    assert done.returncode == 0, _logs(done)
    assert any(p == f"POST work/{work['id']}/heartbeat" for p in fleetgate_stub.paths())
    assert not any(p == f"POST work/{work['id']}/result" for p in fleetgate_stub.paths())
    assert work["id"] not in fleetgate_stub.state.results
    assert "lease lost" in _logs(done)


def test_rotation_when_told_replaces_the_stored_credential(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster
) -> None:
    done = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=fleetgate_stub.issue_bootstrap(),
    )
    assert done.returncode == 0, _logs(done)
    first = json.loads((agent_cluster.state_dir / "credential.json").read_text())["token"]
    fleetgate_stub.state.rotate = True
    done = run_agent_once(
        fleetgate_stub.url, kubeconfig=agent_cluster.kubeconfig, state_dir=agent_cluster.state_dir
    )
    assert done.returncode == 0, _logs(done)
    second = json.loads((agent_cluster.state_dir / "credential.json").read_text())["token"]
    assert second != first and second.startswith("fga_a_")
    rotate = [c for c in fleetgate_stub.state.calls if c.path == "rotate"]
    assert len(rotate) == 1 and rotate[0].token == first
    assert fleetgate_stub.state.calls[-1].token == second  # the report after rotation used the new one
    assert first not in _logs(done) and second not in _logs(done)


def test_revoked_credential_without_bootstrap_token_exits_non_zero(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster
) -> None:
    done = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=fleetgate_stub.issue_bootstrap(),
    )
    assert done.returncode == 0, _logs(done)
    fleetgate_stub.state.agents = {t: False for t in fleetgate_stub.state.agents}  # revoked
    refused = run_agent_once(
        fleetgate_stub.url, kubeconfig=agent_cluster.kubeconfig, state_dir=agent_cluster.state_dir
    )
    assert refused.returncode == 3, _logs(refused)
    assert "refused the agent credential" in _logs(refused)
    assert "issue a new bootstrap token" in _logs(refused)

    # with a new bootstrap token it registers again
    fresh = fleetgate_stub.issue_bootstrap()
    back = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=fresh,
    )
    assert back.returncode == 0, _logs(back)
    assert [c.token for c in fleetgate_stub.state.calls if c.path == "register"][-1] == fresh


def test_no_credential_and_no_bootstrap_token_is_a_clear_error(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster
) -> None:
    done = run_agent_once(
        fleetgate_stub.url, kubeconfig=agent_cluster.kubeconfig, state_dir=agent_cluster.state_dir
    )
    assert done.returncode == 3
    assert "no bootstrap token" in _logs(done)
    unknown = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token="fga_b_" + "x" * 43,
    )
    assert unknown.returncode == 3 and "registration refused" in _logs(unknown)
    assert "fga_b_xxxx" not in _logs(unknown)


def test_fleetgate_answering_503_is_retried_with_backoff(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster
) -> None:
    fleetgate_stub.state.fail_next = 3
    work = fleetgate_stub.add_work([NAMESPACE])
    done = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=fleetgate_stub.issue_bootstrap(),
    )
    assert done.returncode == 0, _logs(done)
    assert fleetgate_stub.state.results[work["id"]]["ok"] is True
    assert _logs(done).count("Fleetgate is unreachable; retrying") == 3


def test_unreachable_fleetgate_with_once_gives_up_with_exit_1(agent_cluster: AgentCluster) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = run_agent_once(
        url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token="fga_b_" + "y" * 43,
        extra=["--backoff-max", "0.05"],
    )
    assert done.returncode == 1, _logs(done)
    assert "Fleetgate is unreachable" in _logs(done)


def test_report_checks_drift_and_self_heals(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster
) -> None:
    objects = [NAMESPACE, configmap("web", {"color": "blue"}), configmap("other", {"a": "b"})]
    fleetgate_stub.add_work(objects)
    done = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        bootstrap_token=fleetgate_stub.issue_bootstrap(),
    )
    assert done.returncode == 0, _logs(done)
    result = next(iter(fleetgate_stub.state.results.values()))
    applied = {o["metadata"]["name"]: o for o in result["applied"]}
    box = agent_cluster.sandbox
    box.apply_object(configmap("web", {"color": "red"}), manager="kubectl-edit")
    box.apply_object(configmap("other", {"a": "edited"}), manager="kubectl-edit")
    fleetgate_stub.state.managed = [
        {
            "mapping": "apps-web",
            "namespace": "apps",
            "applied": [applied["web"]],
            "inventory": result["inventory"],
            "self_heal": True,
            "impersonate": "",
        },
        {
            "mapping": "apps-other",
            "namespace": "apps",
            "applied": [applied["other"]],
            "inventory": [],
            "self_heal": False,
            "impersonate": "",
        },
    ]
    done = run_agent_once(
        fleetgate_stub.url, kubeconfig=agent_cluster.kubeconfig, state_dir=agent_cluster.state_dir
    )
    assert done.returncode == 0, _logs(done)
    report = fleetgate_stub.state.reports[-1]
    healed, watched = report["mappings"]
    assert healed["mapping"] == "apps-web" and healed["drift"]["drifted"] is True
    assert healed["drift"]["objects"][0]["ref"]["name"] == "web"
    assert healed["healed"] == {"counts": {"configured": 1}}
    assert box.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}
    # live objects as read after the heal: the applied ConfigMap and the inventory's objects
    assert {(o["kind"], o["metadata"]["name"]) for o in healed["live"]} == {
        ("ConfigMap", "web"),
        ("ConfigMap", "other"),
        ("Namespace", "apps"),
    }
    assert next(o for o in healed["live"] if o["kind"] == "ConfigMap")["data"] == {"color": "blue"}
    # no self-heal: drift reported, nothing applied
    assert watched["drift"]["drifted"] is True and watched["healed"] is None
    assert box.get_object("v1", "ConfigMap", "other", "apps")["data"] == {"a": "edited"}
    assert watched["live"][0]["data"] == {"a": "edited"}


def test_long_running_agent_probes_and_sigterm(
    fleetgate_stub: StubFleetgate, agent_cluster: AgentCluster, tmp_path: Path
) -> None:
    port = free_port()
    fleetgate_stub.state.fail_next = 2  # not ready until a poll answered
    agent = AgentProcess(
        fleetgate_stub.url,
        kubeconfig=agent_cluster.kubeconfig,
        state_dir=agent_cluster.state_dir,
        log_path=tmp_path / "agent.log",
        bootstrap_token=fleetgate_stub.issue_bootstrap(),
        health_port=port,
    )
    try:
        wait_for(lambda: agent.probe("/healthz")[0] == 200, timeout=60, what="/healthz")
        wait_for(lambda: agent.probe("/readyz")[0] == 200, timeout=60, what="/readyz")
        _, body = agent.probe("/readyz")
        assert body["registered"] is True and body["last_poll_ok"] is True and body["cluster"] == "edge-1"
        # work queued while the agent waits is picked up by its next poll
        work = fleetgate_stub.add_work([NAMESPACE, configmap("late", {"x": "y"})])
        wait_for(lambda: work["id"] in fleetgate_stub.state.results, timeout=60, what="the result")
        assert agent_cluster.sandbox.get_object("v1", "ConfigMap", "late", "apps") is not None
        assert fleetgate_stub.state.reports, "a report at start"
        # Fleetgate goes away (503s): unready but alive, and back to ready when it answers again
        fleetgate_stub.state.fail_next = 10**6
        wait_for(lambda: agent.probe("/readyz")[0] == 503, timeout=60, what="/readyz 503")
        assert agent.probe("/healthz")[0] == 200
        assert "HTTP 503" in agent.probe("/readyz")[1]["error"]
        fleetgate_stub.state.fail_next = 0
        wait_for(lambda: agent.probe("/readyz")[0] == 200, timeout=60, what="/readyz back")
    finally:
        code = agent.stop()
    assert code == 0, agent.log
    assert "stopped" in agent.log


def test_agent_applies_and_prunes_on_a_real_kube_apiserver(
    fleetgate_stub: StubFleetgate, kube_apiserver: KubeApiServer, kube_namespace: str, tmp_path: Path
) -> None:
    """The same agent against a real kube-apiserver (TLS verified with the kubeconfig's inline CA, token
    auth): a Work applied, then a second Work without one object prunes it."""
    from kubernetes import client as k8s

    state_dir = tmp_path / "state"
    first = fleetgate_stub.add_work(
        [configmap("a", {"k": "1"}, kube_namespace), configmap("b", {"k": "2"}, kube_namespace)],
        namespace=kube_namespace,
    )
    done = run_agent_once(
        fleetgate_stub.url,
        kubeconfig=kube_apiserver.kubeconfig,
        state_dir=state_dir,
        bootstrap_token=fleetgate_stub.issue_bootstrap(),
    )
    assert done.returncode == 0, _logs(done)
    result = fleetgate_stub.state.results[first["id"]]
    assert result["ok"] is True, result["error"]
    assert result["counts"] == {"created": 2} and result["health"]["state"] == "Healthy"
    register = next(c for c in fleetgate_stub.state.calls if c.path == "register")
    assert register.body["kubernetes_version"] == kube_apiserver.version
    core = k8s.CoreV1Api(kube_apiserver.api_client())
    live = core.read_namespaced_config_map("a", kube_namespace)
    assert live.metadata.annotations["fleetgate.io/tracking-id"].startswith("apps-web:")
    assert [f.manager for f in live.metadata.managed_fields] == ["fleetgate"]

    second = fleetgate_stub.add_work(
        [configmap("a", {"k": "1"}, kube_namespace)], namespace=kube_namespace, inventory=result["inventory"]
    )
    done = run_agent_once(fleetgate_stub.url, kubeconfig=kube_apiserver.kubeconfig, state_dir=state_dir)
    assert done.returncode == 0, _logs(done)
    pruned = fleetgate_stub.state.results[second["id"]]
    assert pruned["ok"] is True and pruned["counts"] == {"unchanged": 1, "deleted": 1}
    assert [r["name"] for r in pruned["inventory"]] == ["a"]
    names = {cm.metadata.name for cm in core.list_namespaced_config_map(kube_namespace).items}
    assert "b" not in names and "a" in names
