"""End to end, pull mode, with real processes only: Fleetgate's web served by gunicorn (a child process on the
test database), a real Celery worker and Celery beat (tests/workers.py), real long-running agents (``python -m
clusters.agent``); two push and two pull sandbox clusters, or a push sandbox cluster and a pull cluster on the
real kube-apiserver.

One story per backend, each step asserted on the database, the audit log and the clusters' live objects:
1. register: each pull cluster's agent exchanges its bootstrap token; a second use of a token is refused;
2. a rollout in batches, approval required: nothing reaches any cluster before an approver approves through
   the API; then every leg, push and pull, is synced and the clusters hold the objects;
3. drift on a pull cluster: changed behind Fleetgate's back, found by the agent's report and healed
   (the group self-heals): drift.detected, drift.healed;
4. an agent SIGKILLed while it waits for an unready Deployment (:func:`agent_killed_mid_apply`): its leg stays
   syncing (never synced or failed) until the lease expires, then beat's periodic reconcile (not the test)
   requeues it (sync.agent_lost); the restarted agent claims it with attempt 2 and finishes it;
5. gunicorn killed while the agents long-poll and started again on the same port
   (:func:`fleetgate_restarted`): the agents reconnect (backoff) and sync the next rollout;
6. a revoked agent's next call is refused (401): it exits 3 and applies nothing more; agent.revoked.

Steps 4 and 5 are functions both stories call. Short timings through the environment: poll wait 2 s, report
interval 2 s, lease 5 s, beat's reconcile every 2 s."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clusters import agent_tokens
from clusters.models import AgentCredential, Cluster
from clusters.sandbox import SandboxCluster, SandboxServer
from fleet.access.models import APIToken
from fleet.audit.models import AuditEvent
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.models import Commit, PathMapping, Repository
from fleet.sources.services import fetch_repository
from tests.agent.process import ROOT, AgentProcess, free_port, run_agent_once
from tests.kube_backends import KubeApiServer, kube_helper
from tests.rollouts.conftest import (
    NAMESPACE,
    configmap,
    deployment,
    make_group,
    make_mapping,
    make_repository,
)
from tests.workers import Beat, Worker, child_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LEASE = 5
ENV = {
    "FLEETGATE_AGENT_POLL_WAIT": "2",
    "FLEETGATE_AGENT_REPORT_INTERVAL": "2",
    "FLEETGATE_SYNC_LEASE_SECONDS": str(LEASE),
    "FLEETGATE_KUBE_RETRIES": "2",
    "FLEETGATE_SYNC_RETRY_BASE": "0.5",
    "FLEETGATE_RECONCILE_INTERVAL": "2",  # beat's rollouts-reconcile: expired leases requeued (step 4)
}
SLOW = 600.0  # a sandbox rollout delay no test waits for: the Deployment is not ready while the agent lives


class Web:
    """gunicorn serving fleet.wsgi on a fixed port (so a restart keeps the agents' URL)."""

    def __init__(self, log_path: Path, port: int) -> None:
        self.log_path, self.port = log_path, port
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "gunicorn"),
                    "fleet.wsgi",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--timeout",
                    "60",
                ],
                cwd=ROOT,
                env=child_env(**ENV),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: _status(self.url + "/healthz") == 200, timeout=90, what="gunicorn to answer")

    def kill(self) -> None:
        import os
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        import os
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@dataclass
class Pull:
    cluster: Cluster
    box: SandboxCluster | None
    kubeconfig: Path
    state_dir: Path
    agent: AgentProcess | None = None


@dataclass
class Stack:
    web: Web
    worker: Worker
    beat: Beat
    pulls: dict[str, Pull]
    tmp: Path
    started: list[AgentProcess] = field(default_factory=list)

    def start_agent(self, name: str, token: str = "") -> AgentProcess:
        pull = self.pulls[name]
        pull.agent = AgentProcess(
            self.web.url,
            kubeconfig=pull.kubeconfig,
            state_dir=pull.state_dir,
            bootstrap_token=token,
            log_path=self.tmp / f"agent-{name}.log",
            health_port=free_port(),
        )
        self.started.append(pull.agent)
        return pull.agent


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """gunicorn, a Celery worker and Celery beat on the test database; agents started through
    ``stack.start_agent`` are stopped (and every process killed if need be) at the end."""
    web = Web(tmp_path / "gunicorn.log", free_port())
    worker = Worker(tmp_path / "worker.log", concurrency=2, **ENV)
    beat = Beat(tmp_path / "beat.log", **ENV)
    s = Stack(web, worker, beat, {}, tmp_path)
    try:
        web.start()
        yield s
    finally:
        for agent in s.started:
            agent.stop()
        web.stop()
        beat.stop()
        worker.stop()


@pytest.fixture
def sandbox_pulls(sandbox_server: SandboxServer, stack: Stack, tmp_path: Path) -> Iterator[dict[str, Pull]]:
    """Two pull-mode clusters ``pa`` and ``pb`` (no credentials), each a sandbox cluster with a kubeconfig."""
    for short in ("pa", "pb"):
        name = f"e2e-{short}-{tmp_path.name[-6:].strip('_-').lower()}"
        box = sandbox_server.add_cluster(name, token=f"tok-{name}", rollout_delay=0)
        kubeconfig = Path(sandbox_server.write_kubeconfig(str(tmp_path / f"kubeconfig-{short}"), [name]))
        cluster = Cluster.objects.create(name=name, connection_mode="pull", labels={"env": "e2e"})
        stack.pulls[short] = Pull(cluster, box, kubeconfig, tmp_path / f"state-{short}")
    try:
        yield stack.pulls
    finally:
        for pull in stack.pulls.values():
            if pull.agent is not None:
                pull.agent.stop()
            sandbox_server.remove_cluster(pull.cluster.name)


def _api(stack: Stack, key: str, path: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        stack.web.url + path, data=b"", method="POST", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _readyz(agent: AgentProcess, status: int) -> Callable[[], bool]:
    return lambda: agent.probe("/readyz")[0] == status


def _registered(cluster: Cluster) -> Callable[[], bool]:
    return lambda: AgentCredential.objects.filter(cluster=cluster, kind="agent", revoked_at=None).exists()


def _audit(action: str, cluster: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, cluster_name=cluster).order_by("pk"))


@dataclass
class Story:
    """One mapping's rollouts, driven as a user drives them: a commit fetched from the git repository, then
    approved through the API by the group's approver (``key``, an API token)."""

    stack: Stack
    git_repo: Any
    repo: Repository
    mapping: PathMapping
    key: str

    def commit(self, files: dict[str, str], message: str) -> Rollout:
        self.git_repo.commit(files, message)
        assert fetch_repository(self.repo).ok
        c = Commit.objects.get(repository=self.repo, sha=self.git_repo.git("rev-parse", "HEAD"))
        return wait_for(
            lambda: Rollout.objects.filter(mapping=self.mapping, commit=c).first(),
            timeout=60,
            what="the rollout",
        )

    def awaiting_approval(self, rollout: Rollout) -> None:
        wait_for(
            lambda: Rollout.objects.get(pk=rollout.pk).state == "awaiting_approval",
            timeout=120,
            what="the rollout to await approval",
        )

    def approve(self, rollout: Rollout) -> None:
        self.awaiting_approval(rollout)
        status, body = _api(self.stack, self.key, f"/api/rollouts/{rollout.pk}/approve/")
        assert status == 200, body

    def finished(self, rollout: Rollout, timeout: float = 180) -> Rollout:
        return wait_for(
            lambda: (r := Rollout.objects.get(pk=rollout.pk)).state in ("synced", "failed", "halted") and r,
            timeout=timeout,
            what="the rollout to finish",
        )

    def synced(self, files: dict[str, str], message: str) -> Rollout:
        """Commit, approve, wait: the rollout must end synced."""
        rollout = self.commit(files, message)
        self.approve(rollout)
        done = self.finished(rollout)
        assert done.state == "synced", done.reason
        return done


def agent_killed_mid_apply(
    story: Story,
    short: str,
    files: dict[str, str],
    *,
    applied: Callable[[], bool],
    release: Callable[[], None],
) -> None:
    """Step 4: the commit of ``files`` holds a Deployment that the cluster keeps unready (the caller sees to
    that), so the agent of ``short`` applies and then waits for health; it is SIGKILLed there. Its leg stays
    syncing, never synced or failed, until the lease expires and beat's periodic reconcile (every
    FLEETGATE_RECONCILE_INTERVAL; the test never calls reconcile) requeues it (sync.agent_lost). Then
    ``release`` lets the Deployment become ready and the agent is restarted with its stored credential: it
    claims the leg as attempt 2 and finishes it; the rollout is synced."""
    stack = story.stack
    pull = stack.pulls[short]
    name = pull.cluster.name
    rollout = story.commit(files, f"{short}: killed mid-apply")
    story.approve(rollout)
    leg = wait_for(
        lambda: ClusterSync.objects.filter(rollout=rollout, cluster=pull.cluster, state="syncing").first(),
        timeout=180,
        what=f"{short}'s leg syncing",
    )
    wait_for(applied, timeout=60, what=f"{short} applied, waiting for health")
    succeeded_before = len(_audit("sync.succeeded", name))
    assert pull.agent is not None
    pull.agent.kill()
    beat_runs = stack.beat.sent("rollouts-reconcile")
    seen: set[str] = set()

    def requeued() -> bool:
        state = ClusterSync.objects.get(pk=leg.pk).state
        seen.add(state)
        return state == "queued"

    wait_for(requeued, timeout=LEASE * 12, interval=0.5, what="beat's reconcile to requeue the expired lease")
    assert seen <= {"syncing", "queued"}  # neither synced nor failed while the agent was gone
    assert stack.beat.sent("rollouts-reconcile") > beat_runs, stack.beat.log[-3000:]
    lost = _audit("sync.agent_lost", name)
    assert len(lost) == 1 and lost[0].after["rollout"] == rollout.pk
    assert not _audit("sync.failed", name)
    assert len(_audit("sync.succeeded", name)) == succeeded_before  # the lost attempt recorded nothing
    release()
    stack.start_agent(short)  # the stored credential
    done = story.finished(rollout)
    assert done.state == "synced", done.reason
    leg.refresh_from_db()
    assert leg.state == "synced" and leg.attempts == 2
    succeeded = _audit("sync.succeeded", name)
    assert len(succeeded) == succeeded_before + 1 and succeeded[-1].pk > lost[0].pk
    assert len(_audit("agent.registered", name)) == 1


def fleetgate_restarted(story: Story, files: dict[str, str], *, check: Callable[[], None]) -> None:
    """Step 5: gunicorn SIGKILLed while every running agent long-polls: the agents turn not ready, keep
    retrying, are ready again once it is back on the same port, and sync the next rollout (``files``);
    ``check`` then asserts the clusters' objects."""
    stack = story.stack
    agents = [p.agent for p in stack.pulls.values() if p.agent is not None and p.agent.process.poll() is None]
    assert agents
    for agent in agents:
        wait_for(_readyz(agent, 200), timeout=60, what="the agent ready")
    stack.web.kill()  # SIGKILL: the agents' long polls are cut
    for agent in agents:
        wait_for(_readyz(agent, 503), timeout=60, what="the agent not ready")
    stack.web.start()
    for agent in agents:
        wait_for(_readyz(agent, 200), timeout=90, what="the agent back")
        assert agent.process.poll() is None
    story.synced(files, "after Fleetgate's restart")
    check()


def test_pull_mode_end_to_end_on_sandbox_clusters(
    stack: Stack,
    sandbox_pulls: dict[str, Pull],
    git_repo: Any,
    make_fleet: Any,
    make_user: Callable[..., Any],
) -> None:
    fleet = make_fleet({"push-1": {"env": "e2e", "canary": "yes"}, "push-2": {"env": "e2e"}})
    Cluster.objects.filter(pk=sandbox_pulls["pa"].cluster.pk).update(labels={"env": "e2e", "canary": "yes"})
    # batch 0: the canaries push-1 and pa; batch 1: push-2 and pb (batches of two mixing both modes)
    group = make_group(
        "e2e",
        "e2e",
        batch_size=2,
        canary_selector={"matchLabels": {"canary": "yes"}},
        approval_required=True,
        self_heal=True,
    )
    approver = make_user("ann", role="approver", scope=group)
    _, key = APIToken.issue(approver, description="e2e")
    repo = make_repository(git_repo)
    story = Story(stack, git_repo, repo, make_mapping(repo, "web", "apps/web", group), key)
    pa, pb = stack.pulls["pa"], stack.pulls["pb"]
    assert pa.box is not None and pb.box is not None
    sandboxes = {c.name: fleet.sandboxes[s] for s, c in fleet.clusters.items()} | {
        pa.cluster.name: pa.box,
        pb.cluster.name: pb.box,
    }

    def cm(name: str) -> dict[str, Any]:
        return sandboxes[name].get_object("v1", "ConfigMap", "web", "apps") or {}

    # --- 1. register
    tokens = {short: agent_tokens.issue_bootstrap(p.cluster)[0] for short, p in stack.pulls.items()}
    for short in stack.pulls:
        stack.start_agent(short, tokens[short])
    for p in (pa, pb):
        wait_for(
            _registered(p.cluster),
            timeout=120,
            what=f"{p.cluster.name}'s agent to register",
        )
        assert len(_audit("agent.registered", p.cluster.name)) == 1
    replay = run_agent_once(
        stack.web.url,
        kubeconfig=pa.kubeconfig,
        state_dir=stack.tmp / "replay",
        bootstrap_token=tokens["pa"],
        timeout=120,
    )
    assert replay.returncode == 3, replay.stdout + replay.stderr
    assert "registration refused" in replay.stdout + replay.stderr
    assert AgentCredential.objects.filter(cluster=pa.cluster, kind="agent", revoked_at=None).count() == 1

    # --- 2. rollout in batches, approval first
    first = story.commit(
        {
            "apps/web/ns.yaml": NAMESPACE,
            "apps/web/cm.yaml": configmap("web", {"v": "1"}),
            "apps/web/deploy.yaml": deployment("web", "nginx:1.27"),
        },
        "first",
    )
    story.awaiting_approval(first)
    assert all(cm(name) == {} for name in sandboxes)  # nothing anywhere before approval
    assert not ClusterSync.objects.filter(rollout=first, state__in=("syncing", "synced")).exists()
    story.approve(first)
    done = story.finished(first)
    assert done.state == "synced", done.reason
    legs = list(ClusterSync.objects.filter(rollout=first).select_related("cluster"))
    assert len(legs) == 4 and {leg.state for leg in legs} == {"synced"}
    batches = {(leg.batch, leg.cluster.connection_mode) for leg in legs}
    assert batches == {(0, "push"), (0, "pull"), (1, "push"), (1, "pull")}, batches
    for name in sandboxes:
        assert cm(name)["data"] == {"v": "1"}, name
        assert sandboxes[name].get_object("apps/v1", "Deployment", "web", "apps") is not None, name
    approval = AuditEvent.objects.get(action="rollout.approval", target_id=str(first.pk))
    first_apply = AuditEvent.objects.filter(action="sync.succeeded").order_by("pk").first()
    assert approval.actor_name == "ann" and first_apply is not None and approval.pk < first_apply.pk

    # --- 3. drift on a pull cluster, healed by its agent
    pa.box.apply_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "apps"},
            "data": {"v": "tampered"},
        },
        manager="kubectl-edit",
    )
    wait_for(lambda: _audit("drift.healed", pa.cluster.name), timeout=120, what="drift.healed")
    assert _audit("drift.detected", pa.cluster.name)
    wait_for(lambda: cm(pa.cluster.name)["data"] == {"v": "1"}, timeout=30, what="the healed object")

    # --- 4. agent killed while it waits for a slow Deployment (the sandbox's rollout delay), restarted
    box = pa.box
    box.settings.rollout_delay = SLOW

    def release() -> None:
        box.settings.rollout_delay = 0

    agent_killed_mid_apply(
        story,
        "pa",
        {
            "apps/web/cm.yaml": configmap("web", {"v": "2"}),
            "apps/web/deploy.yaml": deployment("web", "nginx:1.28"),
        },
        applied=lambda: cm(pa.cluster.name)["data"] == {"v": "2"},
        release=release,
    )

    # --- 5. Fleetgate restarted while the agents wait
    def all_v3() -> None:
        for name in sandboxes:
            assert cm(name)["data"] == {"v": "3"}, name

    fleetgate_restarted(story, {"apps/web/cm.yaml": configmap("web", {"v": "3"})}, check=all_v3)

    # --- 6. revoked agent refused
    assert agent_tokens.revoke(pb.cluster) >= 1
    revoked = pb.agent
    assert revoked is not None
    wait_for(lambda: revoked.process.poll() is not None, timeout=60, what="the revoked agent to stop")
    assert revoked.process.returncode == 3, revoked.log[-3000:]
    assert _audit("agent.revoked", pb.cluster.name)
    assert "refused the agent credential" in revoked.log
    fourth = story.commit({"apps/web/cm.yaml": configmap("web", {"v": "4"})}, "fourth")
    story.approve(fourth)
    wait_for(
        lambda: ClusterSync.objects.filter(rollout=fourth, cluster=pa.cluster, state="synced").exists(),
        timeout=180,
        what="pa synced the fourth",
    )
    # pb is in the second batch (after pa's): queued for an agent that no longer gets in
    wait_for(
        lambda: ClusterSync.objects.get(rollout=fourth, cluster=pb.cluster).state == "queued",
        timeout=120,
        what="pb's leg queued",
    )
    assert ClusterSync.objects.get(rollout=fourth, cluster=pb.cluster).attempts == 0
    assert cm(pb.cluster.name)["data"] == {"v": "3"}


def test_pull_mode_end_to_end_on_a_real_kube_apiserver(
    stack: Stack,
    kube_apiserver: KubeApiServer,
    kube_namespace: str,
    git_repo: Any,
    make_fleet: Any,
    make_user: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The same agent on a real kube-apiserver (TLS, token): registered, a rollout with approval in two
    batches (a push sandbox cluster and the pull cluster), drift healed, the agent SIGKILLed mid-apply and
    restarted (:func:`agent_killed_mid_apply`), Fleetgate restarted under the waiting agent
    (:func:`fleetgate_restarted`), revoked agent refused. No kube-controller-manager runs: a Deployment
    stays unready until the test writes the status its controller would."""
    from kubernetes import client as k8s

    ns = kube_namespace
    fleet = make_fleet({"push-1": {"env": "kube"}})
    cluster = Cluster.objects.create(name=f"kube-{ns}"[:60], connection_mode="pull", labels={"env": "kube"})
    pull = stack.pulls["k"] = Pull(cluster, None, kube_apiserver.kubeconfig, tmp_path / "state-k")
    group = make_group("kube", "kube", batch_size=1, approval_required=True, self_heal=True)
    approver = make_user("ann", role="approver", scope=group)
    _, key = APIToken.issue(approver, description="e2e")
    repo = make_repository(git_repo)
    story = Story(stack, git_repo, repo, make_mapping(repo, "web", "apps/web", group), key)
    api = kube_apiserver.api_client()
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    push = fleet.sandboxes["push-1"]

    def live() -> dict[str, str] | None:
        try:
            return dict(core.read_namespaced_config_map("web", ns).data or {})
        except k8s.ApiException as exc:
            assert exc.status == 404
            return None

    def pushed() -> dict[str, str] | None:
        obj = push.get_object("v1", "ConfigMap", "web", ns)
        return None if obj is None else obj["data"]

    # --- 1. register
    token, _ = agent_tokens.issue_bootstrap(cluster)
    stack.start_agent("k", token)
    wait_for(
        _registered(cluster),
        timeout=120,
        what="the agent to register",
    )
    cluster.refresh_from_db()
    assert cluster.kubernetes_version == kube_apiserver.version
    replay = run_agent_once(
        stack.web.url,
        kubeconfig=pull.kubeconfig,
        state_dir=tmp_path / "replay",
        bootstrap_token=token,
        timeout=120,
    )
    assert replay.returncode == 3 and "registration refused" in replay.stdout + replay.stderr

    # --- 2. rollout in two batches, approval first
    namespace = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    rollout = story.commit(
        {"apps/web/ns.yaml": namespace, "apps/web/cm.yaml": configmap("web", {"v": "1"}, ns)}, "one"
    )
    story.awaiting_approval(rollout)
    assert live() is None and pushed() is None
    story.approve(rollout)
    done = story.finished(rollout)
    assert done.state == "synced", done.reason
    legs = list(ClusterSync.objects.filter(rollout=rollout).select_related("cluster"))
    assert {leg.state for leg in legs} == {"synced"} and len({leg.batch for leg in legs}) == 2
    assert live() == {"v": "1"} and pushed() == {"v": "1"}

    # --- 3. drift healed by the agent
    core.patch_namespaced_config_map("web", ns, {"data": {"v": "tampered"}}, field_manager="kubectl-edit")
    wait_for(lambda: _audit("drift.healed", cluster.name), timeout=120, what="drift.healed")
    assert _audit("drift.detected", cluster.name)
    wait_for(lambda: live() == {"v": "1"}, timeout=30, what="the healed object")

    # --- 4. agent killed while it waits for the Deployment (unready: no controller), restarted
    def applied() -> bool:
        try:
            apps.read_namespaced_deployment("web", ns)
        except k8s.ApiException as exc:
            assert exc.status == 404
            return False
        return live() == {"v": "2"}

    def release() -> None:
        """Write the status the Deployment controller would: the current generation, one replica available
        (attempt 2 applies the same spec, so the generation stays)."""
        generation = apps.read_namespaced_deployment("web", ns).metadata.generation
        status = {
            "observedGeneration": generation,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        }
        apps.patch_namespaced_deployment_status(
            "web", ns, {"status": status}, _content_type="application/merge-patch+json"
        )

    agent_killed_mid_apply(
        story,
        "k",
        {
            "apps/web/cm.yaml": configmap("web", {"v": "2"}, ns),
            "apps/web/deploy.yaml": deployment("web", "nginx:1.28", ns),
        },
        applied=applied,
        release=release,
    )
    assert apps.read_namespaced_deployment("web", ns).spec.template.spec.containers[0].image == "nginx:1.28"

    # --- 5. Fleetgate restarted while the agent waits
    def v3() -> None:
        assert live() == {"v": "3"} and pushed() == {"v": "3"}

    fleetgate_restarted(story, {"apps/web/cm.yaml": configmap("web", {"v": "3"}, ns)}, check=v3)

    # --- 6. revoked agent refused
    agent = pull.agent
    assert agent is not None
    agent_tokens.revoke(cluster)
    wait_for(lambda: agent.process.poll() is not None, timeout=60, what="the revoked agent to stop")
    assert agent.process.returncode == 3, agent.log[-3000:]
    assert _audit("agent.revoked", cluster.name)
    core.patch_namespaced_config_map("web", ns, {"data": {"v": "tampered"}}, field_manager="kubectl-edit")
    run_agent_once(stack.web.url, kubeconfig=pull.kubeconfig, state_dir=pull.state_dir, timeout=120)
    assert live() == {"v": "tampered"}  # refused: nothing healed or applied any more


@pytest.fixture
def second_kube_apiserver(
    kube_apiserver: KubeApiServer, kube_apiserver_bin_dir: Path, tmp_path: Path
) -> Iterator[KubeApiServer]:
    """A second real kube-apiserver (its own etcd, CA and token), for a second pull-mode cluster."""
    handle = kube_helper.start_kube_apiserver(tmp_path / "kube-apiserver-2", bin_dir=kube_apiserver_bin_dir)
    try:
        yield KubeApiServer.of(handle)
    finally:
        handle.stop()


def test_two_push_and_two_pull_clusters_on_real_kube_apiservers(
    stack: Stack,
    kube_apiserver: KubeApiServer,
    second_kube_apiserver: KubeApiServer,
    kube_namespace: str,
    git_repo: Any,
    make_fleet: Any,
    make_user: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The issue's layout on real API servers: two push sandbox clusters and two pull-mode clusters, each
    pull cluster a real kube-apiserver with its own agent; registered, a rollout with approval in two batches
    of two that mix both modes, every leg synced, the objects on both kube-apiservers."""
    from kubernetes import client as k8s

    ns = kube_namespace
    fleet = make_fleet({"push-1": {"env": "kube2", "canary": "yes"}, "push-2": {"env": "kube2"}})
    servers = {"k1": kube_apiserver, "k2": second_kube_apiserver}
    for short, server in servers.items():
        labels = {"env": "kube2", **({"canary": "yes"} if short == "k1" else {})}
        cluster = Cluster.objects.create(name=f"{short}-{ns}"[:60], connection_mode="pull", labels=labels)
        stack.pulls[short] = Pull(cluster, None, server.kubeconfig, tmp_path / f"state-{short}")
        token, _ = agent_tokens.issue_bootstrap(cluster)
        stack.start_agent(short, token)
    for short, server in servers.items():
        cluster = stack.pulls[short].cluster
        wait_for(_registered(cluster), timeout=120, what=f"agent {short} to register")
        cluster.refresh_from_db()
        assert cluster.kubernetes_version == server.version
    # batch 0: the canaries push-1 and k1; batch 1: push-2 and k2
    group = make_group("kube2", "kube2", batch_size=2, canary_selector={"matchLabels": {"canary": "yes"}},
                       approval_required=True)
    approver = make_user("kim", role="approver", scope=group)
    _, key = APIToken.issue(approver, description="e2e")
    repo = make_repository(git_repo)
    story = Story(stack, git_repo, repo, make_mapping(repo, "web", "apps/web", group), key)

    def live(server: KubeApiServer) -> dict[str, str] | None:
        try:
            return dict(k8s.CoreV1Api(server.api_client()).read_namespaced_config_map("web", ns).data or {})
        except k8s.ApiException as exc:
            assert exc.status == 404
            return None

    namespace = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    rollout = story.commit(
        {"apps/web/ns.yaml": namespace, "apps/web/cm.yaml": configmap("web", {"v": "1"}, ns)}, "one"
    )
    story.awaiting_approval(rollout)
    assert live(second_kube_apiserver) is None
    story.approve(rollout)
    done = story.finished(rollout)
    assert done.state == "synced", done.reason
    legs = list(ClusterSync.objects.filter(rollout=rollout).select_related("cluster"))
    assert len(legs) == 4 and {leg.state for leg in legs} == {"synced"}
    batches = {(leg.batch, leg.cluster.connection_mode) for leg in legs}
    assert batches == {(0, "push"), (0, "pull"), (1, "push"), (1, "pull")}, batches
    assert all(live(server) == {"v": "1"} for server in servers.values())
    assert all(fleet.sandboxes[name].get_object("v1", "ConfigMap", "web", ns)["data"] == {"v": "1"}
               for name in ("push-1", "push-2"))
    for short in servers:  # applied by each cluster's own agent, audited with the cluster as actor
        name = stack.pulls[short].cluster.name
        assert AuditEvent.objects.filter(action="sync.succeeded", cluster_name=name,
                                         actor_name=f"agent:{name}").exists()
