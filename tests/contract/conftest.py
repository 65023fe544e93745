"""Contract tests: the same raw HTTP requests against a sandbox cluster and the real kube-apiserver."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from clusters.sandbox import SandboxServer
from tests.kube_backends import (  # noqa: F401 - fixtures and the marker hook are registered by import
    KubeApiServer,
    kube_apiserver,
    kube_apiserver_bin_dir,
    pytest_collection_modifyitems,
    sandbox_backend_server,
    unique_name,
)

_n = itertools.count(1)


@dataclass
class Http:
    """Plain HTTP to one backend (``requests``), bearer token, TLS verified where there is TLS."""

    name: str
    base: str
    token: str
    verify: str | bool
    namespace: str
    session: requests.Session

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, str | bytes) else json.dumps(body)
            headers["Content-Type"] = content_type
        return self.session.request(
            method,
            self.base + path,
            data=data,
            headers=headers,
            params=params,
            verify=self.verify,
            timeout=30,
            stream=stream,
        )

    def ns(self, path: str = "") -> str:
        return f"/api/v1/namespaces/{self.namespace}{path}"


@pytest.fixture
def both(
    request: pytest.FixtureRequest,
    sandbox_backend_server: SandboxServer,  # noqa: F811 - the fixture, registered above
    kube_apiserver: KubeApiServer,  # noqa: F811
) -> Iterator[list[Http]]:
    """[sandbox, kube-apiserver], each with a fresh namespace of the same name."""
    namespace = unique_name(request.node.name, "ct")
    token = f"contract-{next(_n)}-token"
    cluster = sandbox_backend_server.add_cluster(f"contract-{next(_n)}", token=token, rollout_delay=0)
    session = requests.Session()
    backends = [
        Http("sandbox", cluster.url, token, False, namespace, session),
        Http(
            "kube-apiserver",
            kube_apiserver.url,
            kube_apiserver.token,
            str(kube_apiserver.ca_file),
            namespace,
            session,
        ),
    ]
    for b in backends:
        r = b(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        assert r.status_code == 201, (b.name, r.text)
    try:
        yield backends
    finally:
        backends[1]("DELETE", f"/api/v1/namespaces/{namespace}")
        sandbox_backend_server.remove_cluster(cluster.name)
        session.close()
