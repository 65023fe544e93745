"""Pull-mode fixtures: pull clusters, agents speaking the real agent API through DRF's APIClient (register
with a real bootstrap token, poll, heartbeat, result, report), and the rollout fixtures of tests/rollouts
(a real git repository, the in-process task queue)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from clusters import agent_tokens
from clusters.models import Cluster
from tests.rollouts.conftest import (  # noqa: F401  (fixtures used by the pull tests)
    _fast_retries,
    git_repo,
    make_fleet,
    sandbox_server,
    tasks,
)

BASE = "/api/agent/v1/"


def pull_cluster(name: str, labels: dict[str, str] | None = None) -> Cluster:
    cluster = Cluster(name=name, connection_mode="pull", labels=labels or {"env": "edge"})
    cluster.full_clean()
    cluster.save()
    return cluster


@dataclass
class Agent:
    """One cluster's agent as the test drives it: real HTTP calls to the agent API (Django test client)."""

    cluster: Cluster
    client: APIClient
    token: str

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.client.post(BASE + path, body or {}, format="json")

    def work(self, wait: int = 0) -> list[dict[str, Any]]:
        resp = self.client.get(BASE + "work", {"wait": wait})
        assert resp.status_code == 200, resp.content
        return list(resp.json()["work"])

    def heartbeat(self, work: dict[str, Any], attempt: int | None = None) -> Any:
        return self.post(f"work/{work['id']}/heartbeat", {"attempt": attempt or work["attempt"]})

    def result(self, work: dict[str, Any], ok: bool = True, **overrides: Any) -> Any:
        return self.post(f"work/{work['id']}/result", {**result_body(work, ok), **overrides})


def ref_of(obj: dict[str, Any], namespace: str) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    scoped = obj.get("kind") not in ("Namespace", "ClusterRole", "CustomResourceDefinition")
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "namespace": (meta.get("namespace") or namespace) if scoped else "", "name": meta["name"]}


def result_body(work: dict[str, Any], ok: bool = True) -> dict[str, Any]:
    """What an agent sends after applying the work: every object created, healthy (or a failure)."""
    refs = [ref_of(o, work["namespace"]) for o in work["objects"]]
    return {
        "attempt": work["attempt"],
        "digest": work["digest"],
        "ok": ok,
        "results": [{"ref": r, "action": "created"} for r in refs] if ok else [],
        "counts": {"created": len(refs)} if ok else {},
        "inventory": refs if ok else [],
        "applied": work["objects"] if ok else [],
        "error": "" if ok else "ConfigMap apps/web: admission webhook denied the request",
        "transient": False,
        "health": {"state": "Healthy", "reason": "", "detail": {}} if ok else None,
    }


@pytest.fixture
def make_agent(db: Any) -> Callable[[Cluster], Agent]:
    def make(cluster: Cluster) -> Agent:
        plain, _ = agent_tokens.issue_bootstrap(cluster)
        client = APIClient()
        resp = client.post(BASE + "register",
                           {"agent_version": "test-agent/1", "kubernetes_version": "v1.31.0"},
                           format="json", HTTP_AUTHORIZATION=f"Bearer {plain}")
        assert resp.status_code == 201, resp.content
        token = resp.json()["token"]
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return Agent(cluster, client, token)

    return make
