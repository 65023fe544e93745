"""End to end: the REAL agent process (``python -m clusters.agent --once``) against a live Fleetgate
(pytest-django ``live_server``: the real agent API, rollout services and database) and a sandbox cluster.

A pull-mode cluster gets a bootstrap token; a commit to a git repository made here is fetched, rendered,
gated and rolled out to a pull cluster and a push cluster of the same group; the push leg is synced by the
(in-process) task queue, the pull leg is queued for the agent, which registers, claims it, applies it with
the connector and reports; the rollout is synced. A second commit goes the same way with the stored
credential; a drift on the pull cluster is found and healed by the agent's report.

Reuse: ``run_agent_once(live_server.url, kubeconfig=..., state_dir=..., bootstrap_token=...)`` and
``AgentProcess`` (tests/agent/process.py); the fixture ``pull_box`` below shows the set-up; ``git_repo``,
``make_fleet``, ``tasks`` and ``sandbox_server`` are tests/rollouts/conftest.py's (registered in
tests/agent/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clusters import agent_tokens
from clusters.models import AgentCredential, Cluster
from clusters.sandbox import SandboxCluster, SandboxServer
from fleet.audit.models import AuditEvent
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState
from fleet.sources.models import Commit
from fleet.sources.services import fetch_repository
from tests.agent.process import run_agent_once
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class PullBox:
    cluster: Cluster
    sandbox: SandboxCluster
    kubeconfig: Path
    state_dir: Path


@pytest.fixture
def pull_box(sandbox_server: SandboxServer, tmp_path: Path) -> Iterator[PullBox]:
    """A pull-mode Cluster row (no credentials) and the sandbox cluster its agent manages, with a kubeconfig
    for ``--kubeconfig`` and an empty ``--state-dir``."""
    name = f"pull-{tmp_path.name[-12:].strip('_-').lower() or 'edge'}"[:40]
    box = sandbox_server.add_cluster(name, token=f"tok-{name}-secret", rollout_delay=0)
    kubeconfig = Path(sandbox_server.write_kubeconfig(str(tmp_path / "kubeconfig"), [name]))
    cluster = Cluster.objects.create(name=name, connection_mode="pull", labels={"env": "edge"})
    try:
        yield PullBox(cluster, box, kubeconfig, tmp_path / "agent-state")
    finally:
        sandbox_server.remove_cluster(name)


def _logs(done: Any) -> str:
    return done.stdout + done.stderr


def test_rollout_to_a_pull_cluster_is_applied_by_the_agent_and_synced(
    live_server: Any,
    pull_box: PullBox,
    git_repo: Any,
    make_fleet: Any,
    tasks: Any,
) -> None:
    fleet = make_fleet({"push-1": {"env": "edge"}})
    group = make_group("edge", "edge", self_heal=True)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"})}, "web"
    )
    assert fetch_repository(repo).ok
    c1 = Commit.objects.get(repository=repo, sha=git_repo.git("rev-parse", "HEAD"))
    tasks.drain()

    rollout = Rollout.objects.get(mapping=mapping, commit=c1)
    legs = {
        cs.cluster.name: cs for cs in ClusterSync.objects.filter(rollout=rollout).select_related("cluster")
    }
    assert legs[fleet.clusters["push-1"].name].state == "synced"  # the push leg: synced by a worker
    assert legs[pull_box.cluster.name].state == "queued"  # the pull leg: waits for its agent
    assert pull_box.sandbox.get_object("v1", "ConfigMap", "web", "apps") is None

    plain, _ = agent_tokens.issue_bootstrap(pull_box.cluster)
    done = run_agent_once(
        live_server.url, kubeconfig=pull_box.kubeconfig, state_dir=pull_box.state_dir, bootstrap_token=plain
    )
    assert done.returncode == 0, _logs(done)
    assert plain not in _logs(done)
    tasks.drain()

    leg = ClusterSync.objects.get(pk=legs[pull_box.cluster.name].pk)
    assert leg.state == "synced", (leg.state, leg.error, _logs(done))
    assert leg.attempts == 1 and leg.health == "Healthy"
    assert leg.counts == {"created": 2}
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    assert pull_box.sandbox.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}
    state = SyncedState.objects.get(mapping=mapping, cluster=pull_box.cluster)
    assert state.commit == c1 and {r["name"] for r in state.inventory} == {"apps", "web"}
    pull_box.cluster.refresh_from_db()
    assert pull_box.cluster.agent_version and pull_box.cluster.kubernetes_version.startswith("v1.")
    assert (
        AgentCredential.objects.filter(cluster=pull_box.cluster, kind="agent", revoked_at=None).count() == 1
    )
    assert AuditEvent.objects.filter(action="agent.registered", cluster_name=pull_box.cluster.name).exists()
    assert AuditEvent.objects.filter(action="sync.succeeded", cluster_name=pull_box.cluster.name).count() == 1

    # --- a second commit: the agent uses its stored credential (the bootstrap token is spent)
    git_repo.commit({"apps/web/cm.yaml": configmap("web", {"color": "green"})}, "green")
    assert fetch_repository(repo).ok
    c2 = Commit.objects.get(repository=repo, sha=git_repo.git("rev-parse", "HEAD"))
    tasks.drain()
    done = run_agent_once(live_server.url, kubeconfig=pull_box.kubeconfig, state_dir=pull_box.state_dir)
    assert done.returncode == 0, _logs(done)
    tasks.drain()
    second = Rollout.objects.get(mapping=mapping, commit=c2)
    assert second.state == "synced", second.reason
    assert pull_box.sandbox.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "green"}
    assert (
        AuditEvent.objects.filter(action="agent.registered", cluster_name=pull_box.cluster.name).count() == 1
    )

    # --- drift on the pull cluster: the agent's report finds it and (self-heal) repairs it
    pull_box.sandbox.apply_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "apps"},
            "data": {"color": "red"},
        },
        manager="kubectl-edit",
    )
    done = run_agent_once(live_server.url, kubeconfig=pull_box.kubeconfig, state_dir=pull_box.state_dir)
    assert done.returncode == 0, _logs(done)
    assert pull_box.sandbox.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "green"}
    detected = AuditEvent.objects.get(action="drift.detected", cluster_name=pull_box.cluster.name)
    assert "ConfigMap web changed" in detected.message
    assert AuditEvent.objects.filter(action="drift.healed", cluster_name=pull_box.cluster.name).count() == 1
    state.refresh_from_db()
    assert state.drift_status == "in_sync" and state.healed_at is not None
    assert state.live_reported_at is not None
    assert any(o["metadata"]["name"] == "web" and o["data"] == {"color": "green"} for o in state.live)


def test_revoked_agent_is_refused_and_exits_3(live_server: Any, pull_box: PullBox) -> None:
    plain, _ = agent_tokens.issue_bootstrap(pull_box.cluster)
    done = run_agent_once(
        live_server.url, kubeconfig=pull_box.kubeconfig, state_dir=pull_box.state_dir, bootstrap_token=plain
    )
    assert done.returncode == 0, _logs(done)
    agent_tokens.revoke(pull_box.cluster)
    refused = run_agent_once(
        live_server.url, kubeconfig=pull_box.kubeconfig, state_dir=pull_box.state_dir, bootstrap_token=plain
    )  # the spent bootstrap token does not readmit it
    assert refused.returncode == 3, _logs(refused)
    assert "refused the agent credential" in _logs(refused)
    assert "registration refused" in _logs(refused)
    fresh, _ = agent_tokens.issue_bootstrap(pull_box.cluster)
    back = run_agent_once(
        live_server.url, kubeconfig=pull_box.kubeconfig, state_dir=pull_box.state_dir, bootstrap_token=fresh
    )
    assert back.returncode == 0, _logs(back)
