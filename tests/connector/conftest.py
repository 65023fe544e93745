"""Connector tests run on two backends with the same assertions: a sandbox cluster over HTTP and the real
kube-apiserver. ``backend`` is parametrized over both; each test gets its own namespace (and, on the
sandbox, its own virtual cluster)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from clusters.connector import ClusterCredentials, Connector, ConnectorOptions, RetryPolicy
from clusters.sandbox import SandboxCluster, SandboxServer
from tests.kube_backends import (  # noqa: F401 - fixtures and the marker hook are registered by import
    KubeApiServer,
    kube_apiserver,
    kube_apiserver_bin_dir,
    kube_cluster,
    kube_dynamic_client,
    kube_namespace,
    pytest_collection_modifyitems,
    sandbox_backend_server,
    unique_name,
)

_clusters = itertools.count(1)
FAST_RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, deadline=10)


def deployment_status(generation: int, replicas: int, ok: bool) -> dict[str, Any]:
    """The status a settled (or failed) deployment controller writes."""
    progressing = (
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "done"}
        if ok
        else {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "web-1" has timed out progressing.',
        }
    )
    ready = replicas if ok else 0
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if ok else "False",
                "reason": "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
                "message": "x",
            },
            progressing,
        ],
    }


@dataclass
class Backend:
    """One cluster to test against, the credentials the connector uses, and a raw client for the test's
    own moves (another field manager, status writes, deletes behind Fleetgate's back)."""

    name: str
    credentials: ClusterCredentials
    namespace: str
    raw: DynamicClient
    tmp: Path
    sandbox: SandboxCluster | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def connector(self, **options: Any) -> Connector:
        opts = {"retry": FAST_RETRY, "cache_dir": str(self.tmp / "discovery"), "crd_timeout": 30.0}
        opts.update(options)
        return Connector(self.credentials, ConnectorOptions(**opts))

    def resource(self, api_version: str, kind: str) -> Any:
        return self.raw.resources.get(api_version=api_version, kind=kind)

    def apply_as(self, manager: str, body: dict[str, Any], force: bool = True) -> dict[str, Any]:
        res = self.resource(body["apiVersion"], body["kind"])
        resp = self.raw.server_side_apply(
            res,
            body=body,
            namespace=body["metadata"].get("namespace"),
            field_manager=manager,
            force_conflicts="true" if force else None,
            serialize=False,
        )
        return json.loads(resp.data)  # type: ignore[no-any-return]

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        res = self.resource(api_version, kind)
        try:
            resp = self.raw.get(res, name=name, namespace=namespace, serialize=False)
        except NotFoundError:
            return None
        return json.loads(resp.data)  # type: ignore[no-any-return]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        self.raw.delete(self.resource(api_version, kind), name=name, namespace=namespace)

    def rollout(self, name: str, ok: bool = True, delay: float = 0.3) -> None:
        """Make the Deployment ``name`` (applied next) finish its rollout after ``delay`` (or fail).

        Sandbox: its workload controller does it (rollout_delay, fail_rollouts). Real server: no
        controller-manager runs, so a thread writes the status subresource as envtest users do."""
        if self.sandbox is not None:
            self.sandbox.settings.update(rollout_delay=delay, fail_rollouts=not ok)
            return

        def settle() -> None:
            deadline = time.monotonic() + 30
            live = None
            while time.monotonic() < deadline:
                live = self.get("apps/v1", "Deployment", name, self.namespace)
                if live is not None:
                    break
                time.sleep(0.05)
            if live is None:
                return
            time.sleep(delay)
            res = self.resource("apps/v1", "Deployment")
            status = deployment_status(
                live["metadata"]["generation"], int(live["spec"].get("replicas", 1)), ok
            )
            self.raw.patch(
                res.status,
                body={"status": status},
                name=name,
                namespace=self.namespace,
                content_type="application/merge-patch+json",
            )

        thread = threading.Thread(target=settle, daemon=True)
        thread.start()
        self._threads.append(thread)

    def finish(self) -> None:
        for thread in self._threads:
            thread.join(timeout=30)


def _sandbox_backend(server: SandboxServer, tmp: Path, namespace: str) -> Backend:
    token = f"token-{next(_clusters)}-secret"
    cluster = server.add_cluster(f"conn-{next(_clusters)}", token=token, rollout_delay=0)
    cfg = k8s_client.Configuration()
    cfg.host = cluster.url
    cfg.retries = False
    cfg.api_key = {"authorization": f"Bearer {token}"}
    raw = DynamicClient(k8s_client.ApiClient(cfg), cache_file=str(tmp / "raw-discovery.json"))
    creds = ClusterCredentials(name=cluster.name, server=cluster.url, token=token)
    cluster.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    return Backend("sandbox", creds, namespace, raw, tmp, cluster)


def _sandbox_only(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    namespace = unique_name(request.node.originalname, "cn")
    server: SandboxServer = request.getfixturevalue("sandbox_backend_server")
    b = _sandbox_backend(server, tmp_path, namespace)
    try:
        yield b
    finally:
        b.finish()
        server.remove_cluster(b.sandbox.name)  # type: ignore[union-attr]


@pytest.fixture
def sandbox_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The sandbox alone, for what only it can do (fault injection)."""
    yield from _sandbox_only(request, tmp_path)


@pytest.fixture(params=["sandbox", pytest.param("kube-apiserver", marks=pytest.mark.kube_apiserver)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sandbox":
        yield from _sandbox_only(request, tmp_path)
        return
    namespace = unique_name(request.node.originalname, "cn")
    kube: KubeApiServer = request.getfixturevalue("kube_apiserver")
    raw = kube.dynamic_client(tmp_path / "raw-discovery.json")
    core = k8s_client.CoreV1Api(raw.client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    creds = ClusterCredentials(name="kube-apiserver", server=kube.url, token=kube.token, ca_data=kube.ca_pem)
    b = Backend("kube-apiserver", creds, namespace, raw, tmp_path)
    try:
        yield b
    finally:
        b.finish()
        core.delete_namespace(namespace)
