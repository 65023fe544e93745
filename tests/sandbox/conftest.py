"""Sandbox test fixtures: a real SandboxServer on 127.0.0.1 and the official kubernetes client over HTTP."""

from __future__ import annotations

import http.client
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as kclient
from kubernetes.dynamic import DynamicClient

from clusters.sandbox import SandboxCluster, SandboxServer

_names = itertools.count(1)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture
def cluster(sandbox_server: SandboxServer) -> Iterator[SandboxCluster]:
    """A fresh virtual cluster (settled workloads at once: rollout_delay=0)."""
    name = f"test-{next(_names)}"
    c = sandbox_server.add_cluster(name, rollout_delay=0)
    yield c
    sandbox_server.remove_cluster(name)


@pytest.fixture
def make_client(tmp_path: Any) -> Callable[..., DynamicClient]:
    """A DynamicClient for a cluster URL, with its own discovery cache file (see the reference)."""
    counter = itertools.count()

    def make(
        url: str | SandboxCluster, token: str | None = None, ca_file: str | None = None, verify: bool = True
    ) -> DynamicClient:
        cfg = kclient.Configuration()
        cfg.host = url.url if isinstance(url, SandboxCluster) else url
        cfg.retries = False
        if token:
            cfg.api_key = {"authorization": f"Bearer {token}"}
        if ca_file:
            cfg.ssl_ca_cert = ca_file
        cfg.verify_ssl = verify
        return DynamicClient(
            kclient.ApiClient(cfg), cache_file=str(tmp_path / f"discovery-{next(counter)}.json")
        )

    return make


@pytest.fixture
def dyn(cluster: SandboxCluster, make_client: Callable[..., DynamicClient]) -> DynamicClient:
    return make_client(cluster)


class Raw:
    """Plain HTTP to one cluster, for what the kubernetes client cannot express (status codes, raw bodies)."""

    def __init__(self, cluster: SandboxCluster) -> None:
        self.cluster = cluster

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        base = self.cluster.url
        hostport = base.split("://", 1)[1].split("/", 1)[0]
        prefix = "/" + base.split("://", 1)[1].split("/", 1)[1] if base.count("/") > 2 else ""
        conn = http.client.HTTPConnection(hostport, timeout=10)
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        hdrs = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = content_type
        conn.request(method, prefix + path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode()
        return resp.status, parsed, resp


@pytest.fixture
def raw(cluster: SandboxCluster) -> Raw:
    return Raw(cluster)


def _deployment(
    name: str = "web", replicas: int = 2, image: str = "nginx:1.27", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    }
    for k, v in extra.items():
        body["metadata"][k] = v
    return body


@pytest.fixture
def deployment() -> Callable[..., dict[str, Any]]:
    """A Deployment manifest factory: deployment(name, replicas, image, annotations={...})."""
    return _deployment
