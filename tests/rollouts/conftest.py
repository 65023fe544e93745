"""Rollout test fixtures on real parts: a git repository made by the test (file:// URL), a SandboxServer
with virtual clusters over HTTP, Cluster rows pointing at them, and an in-process task queue.

The task queue: rollout services hand tasks to ``fleet.rollouts.dispatch`` after commit; here they are
collected and run in this process by ``tasks.drain()`` (honouring countdowns unless told otherwise), so
a test can see every step. The real Celery worker path is tested in test_rollout_worker_failure.py."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clusters.models import Cluster, ClusterGroup
from clusters.sandbox import SandboxCluster, SandboxServer
from fleet.rollouts import dispatch, services
from fleet.rollouts.services import lifecycle
from fleet.sources.models import PathMapping, Repository

_ids = itertools.count(1)

RUNNERS: dict[str, Callable[..., Any]] = {
    dispatch.PREPARE: services.prepare,
    dispatch.EVALUATE_SLICE: lambda rollout_id, *ids: lifecycle.evaluate_slice(rollout_id, ids),
    dispatch.ADVANCE: services.advance_and_sync,
    dispatch.SYNC_CLUSTER: services.run_cluster_sync,
    dispatch.SYNC_SLICE: lambda *ids: services.run_slice(ids),
    dispatch.RECONCILE: lambda follow=False: services.reconcile(follow=False),
    dispatch.CHECK_DRIFT: services.check_all_drift,
    dispatch.CHECK_DRIFT_ONE: services.check_drift,
    dispatch.CHECK_DRIFT_BATCH: lambda *ids: services.check_drift_many(ids),
}


@dataclass
class Queued:
    name: str
    args: list[Any]
    due: float
    task_id: str | None


@dataclass
class TaskQueue:
    items: list[Queued] = field(default_factory=list)
    ran: list[tuple[str, list[Any], Any]] = field(default_factory=list)

    def send(self, name: str, args: list[Any], countdown: float | None, task_id: str | None) -> None:
        self.items.append(Queued(name, args, time.monotonic() + (countdown or 0), task_id))

    def delayed(self, name: str | None = None) -> list[Queued]:
        now = time.monotonic()
        return [q for q in self.items if q.due > now and (name is None or q.name == name)]

    def drain(
        self, *, include_delayed: bool = False, max_steps: int = 5000, until: Callable[[], bool] | None = None
    ) -> int:
        """Run queued tasks (those due, or all) in order until none is left to run (or ``until()``)."""
        steps = 0
        while steps < max_steps:
            if until is not None and until():
                return steps
            now = time.monotonic()
            ready = [q for q in self.items if include_delayed or q.due <= now]
            if not ready:
                return steps
            item = ready[0]
            self.items.remove(item)
            result = RUNNERS[item.name](*item.args)
            self.ran.append((item.name, item.args, result))
            steps += 1
        raise AssertionError("the task queue did not settle")

    def clear(self) -> None:
        self.items.clear()


@pytest.fixture
def tasks(settings: Any) -> Iterator[TaskQueue]:
    """The in-process queue. A slice task's next slice goes through the queue too (no chain,
    FLEETGATE_SYNC_CHAIN_SECONDS 0), so a test sees, and can stop between, every step; the chain itself is
    tested in test_rollout_slices.py."""
    settings.FLEETGATE_SYNC_CHAIN_SECONDS = 0
    queue = TaskQueue()
    dispatch.set_sender(queue.send)
    yield queue
    dispatch.set_sender(None)


@pytest.fixture(autouse=True)
def _fast_retries(settings: Any) -> None:
    settings.FLEETGATE_KUBE_RETRIES = 1
    settings.FLEETGATE_SYNC_RETRY_BASE = 0.01


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


class GitRepo:
    """A real git repository in a temporary directory, committed to with the git command line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *args: str, email: str = "dev@example.com") -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": email.split("@")[0],
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": "ci",
            "GIT_COMMITTER_EMAIL": "ci@example.com",
        }
        out = subprocess.run(
            ["git", *args], cwd=self.path, env=env, check=True, capture_output=True, text=True
        )
        return out.stdout.strip()

    def commit(
        self,
        files: dict[str, str],
        message: str,
        *,
        delete: tuple[str, ...] = (),
        email: str = "dev@example.com",
    ) -> str:
        for rel, text in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        for rel in delete:
            (self.path / rel).unlink()
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, email=email)
        return self.git("rev-parse", "HEAD")


def configmap(name: str, data: dict[str, str], namespace: str = "apps") -> str:
    lines = [
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {namespace}",
        "data:",
    ]
    lines += [f'  {k}: "{v}"' for k, v in data.items()]
    return "\n".join(lines) + "\n"


def deployment(name: str, image: str, namespace: str = "apps", replicas: int = 1) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: main
          image: {image}
"""


NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n"


@dataclass
class Fleet:
    server: SandboxServer
    sandboxes: dict[str, SandboxCluster]
    clusters: dict[str, Cluster]
    prefix: str

    def sandbox(self, name: str) -> SandboxCluster:
        return self.sandboxes[name]


@pytest.fixture
def make_fleet(sandbox_server: SandboxServer) -> Iterator[Callable[..., Fleet]]:
    """Sandbox clusters and their Cluster rows: make_fleet({"dev-1": {"env": "dev"}, ...})."""
    made: list[str] = []

    def make(spec: dict[str, dict[str, str]], own_port: bool = False, **settings: Any) -> Fleet:
        prefix = f"r{next(_ids)}"
        sandboxes, clusters = {}, {}
        for short, labels in spec.items():
            name = f"{prefix}-{short}"
            token = f"tok-{name}-secret"
            box = sandbox_server.add_cluster(
                name, token=token, own_port=own_port, rollout_delay=0, **settings
            )
            made.append(name)
            sandboxes[short] = box
            clusters[short] = Cluster.objects.create(
                name=name, api_url=box.url, auth_method="token", token=token, labels=labels
            )
        return Fleet(sandbox_server, sandboxes, clusters, prefix)

    yield make
    for name in made:
        try:
            sandbox_server.remove_cluster(name)
        except KeyError:
            pass


def make_group(name: str, env: str, **settings: Any) -> ClusterGroup:
    return ClusterGroup.objects.create(name=name, selector={"matchLabels": {"env": env}}, **settings)


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


def make_repository(repo: GitRepo, name: str = "apps") -> Repository:
    return Repository.objects.create(name=name, url=repo.url, branch="main", poll_interval=0)


def make_mapping(repository: Repository, name: str, path: str, group: ClusterGroup) -> PathMapping:
    return PathMapping.objects.create(repository=repository, name=name, path=path, cluster_group=group)
