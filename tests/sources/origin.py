"""Fixtures for the sources app tests (registered by tests/sources/conftest.py; other folders import them):
real git repositories (file:// URLs), a git cache in tmp_path, clusters and groups made through the real
models (membership kept by the clusters app's signals)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clusters.models import Cluster, ClusterGroup
from fleet.sources.models import PathMapping, Repository

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_SYSTEM": os.devnull,
    "GIT_AUTHOR_NAME": "Ada Author",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Cole Committer",
    "GIT_COMMITTER_EMAIL": "cole@example.com",
    "LC_ALL": "C",
}


class Origin:
    """A normal git repository the tests commit to: the remote Fleetgate fetches from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._tick = 0
        self.git("init", "-q", "-b", "main")

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str) -> str:
        self._tick += 1
        date = f"2026-01-01T00:{self._tick // 60:02d}:{self._tick % 60:02d}+00:00"
        env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        out = subprocess.run(["git", *args], cwd=self.path, env=env, check=True, capture_output=True,
                             text=True)
        return out.stdout.strip()

    def write(self, files: dict[str, str | None]) -> None:
        """Write (or, for None, remove) files and stage them, without committing."""
        for rel, content in files.items():
            if content is None:
                self.git("rm", "-q", "-r", rel)
                continue
            p = self.path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)
            self.git("add", rel)

    def commit(self, message: str, files: dict[str, str | None] | None = None) -> str:
        self.write(files or {})
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


def configmap(name: str, data: str = "value: plain") -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  {data}\n"


@pytest.fixture(autouse=True)
def _git_cache(settings: Any, tmp_path: Path) -> Path:
    settings.FLEETGATE_GIT_CACHE = tmp_path / "git-cache"
    return settings.FLEETGATE_GIT_CACHE


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    return Origin(tmp_path / "origin")


@pytest.fixture
def make_origin(tmp_path: Path) -> Callable[[str], Origin]:
    return lambda name: Origin(tmp_path / name)


@pytest.fixture
def fleet(db: Any) -> dict[str, Any]:
    """Two groups: prod (eu-1 region eu, us-1 region us) and staging (st-1)."""
    clusters = {
        "eu-1": Cluster.objects.create(name="eu-1", api_url="https://eu-1:6443", token="t-eu-1-secret",
                                       labels={"env": "prod", "region": "eu"}),
        "us-1": Cluster.objects.create(name="us-1", api_url="https://us-1:6443", token="t-us-1-secret",
                                       labels={"env": "prod", "region": "us"}),
        "st-1": Cluster.objects.create(name="st-1", api_url="https://st-1:6443", token="t-st-1-secret",
                                       labels={"env": "staging", "region": "eu"}),
    }
    prod = ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})
    staging = ClusterGroup.objects.create(name="staging", selector={"matchLabels": {"env": "staging"}})
    return {"clusters": clusters, "prod": prod, "staging": staging}


@pytest.fixture
def make_repository(db: Any) -> Callable[..., Repository]:
    def make(origin: Origin, name: str = "apps", **kwargs: Any) -> Repository:
        kwargs.setdefault("branch", "main")
        return Repository.objects.create(name=name, url=origin.url, **kwargs)

    return make


@pytest.fixture
def make_mapping(db: Any) -> Callable[..., PathMapping]:
    def make(repo: Repository, name: str, path: str, group: ClusterGroup, **kwargs: Any) -> PathMapping:
        return PathMapping.objects.create(repository=repo, name=name, path=path, cluster_group=group,
                                          **kwargs)

    return make


@pytest.fixture
def git_http(tmp_path: Path) -> Any:
    """git's smart HTTP protocol behind Basic auth on 127.0.0.1 (the sources core tests' server)."""
    from tests.sources.conftest import GitHttpServer

    servers: list[Any] = []

    def start(username: str, token: str) -> Any:
        server = GitHttpServer(tmp_path, username, token).__enter__()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.__exit__()
