"""The two Kubernetes backends for tests: a real etcd + kube-apiserver, and sandbox clusters.

Fixtures are defined here once and registered by the conftest of each directory that needs them::

    from tests.kube_backends import *  # noqa: F403  (tests/kubeapi, tests/connector, tests/contract)

- ``kube_apiserver`` (session): builds the binaries if needed (scripts/build-kube-apiserver.sh), starts
  etcd and kube-apiserver on 127.0.0.1, yields a :class:`KubeApiServer`; one server per test process
  even when several directories register the fixture, stopped when the last user finishes.
  When the binaries are missing and ``FLEETGATE_SKIP_KUBE_APISERVER=1`` is set, the tests that use it
  are skipped with that reason; otherwise a missing binary is built, never silently skipped.
- ``kube_apiserver_bin_dir`` (session): the directory of the built binaries (same build/skip rule).
- ``kube_dynamic_client`` (session): the official client's DynamicClient, token auth, CA verified.
- ``kube_namespace`` (function): a fresh namespace per test, deleted afterwards. With no
  kube-controller-manager (as in envtest) a deleted namespace stays ``Terminating`` with its objects.
- ``sandbox_backend_server`` (session): one SandboxServer on 127.0.0.1 for the sandbox backend.

Tests that use the kube-apiserver fixtures are marked ``kube_apiserver`` automatically (hook
``pytest_collection_modifyitems`` below, registered with the fixtures), so ``-m "not kube_apiserver"``
drops them. Parametrized backends mark their kube-apiserver param explicitly.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.dynamic import DynamicClient

from clusters.sandbox import SandboxServer

REPO_ROOT = Path(__file__).resolve().parents[1]
SKIP_ENV = "FLEETGATE_SKIP_KUBE_APISERVER"

__all__ = [
    "KubeApiServer",
    "kube_apiserver",
    "kube_apiserver_bin_dir",
    "kube_dynamic_client",
    "kube_namespace",
    "pytest_collection_modifyitems",
    "sandbox_backend_server",
    "unique_name",
]


def _load_helper() -> ModuleType:
    name = "kube_apiserver"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "kube_apiserver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


kube_helper = _load_helper()


@dataclass(frozen=True)
class KubeApiServer:
    """What a client needs to reach the test API server (all credentials are throwaway)."""

    url: str
    token: str
    ca_pem: str
    ca_file: Path
    kubeconfig: Path
    version: str

    @classmethod
    def of(cls, handle: Any) -> KubeApiServer:
        """The client's view of a server ``kube_helper.start_kube_apiserver`` started."""
        return cls(url=handle.url, token=handle.token, ca_pem=handle.ca_data, ca_file=handle.ca_file,
                   kubeconfig=handle.kubeconfig, version=handle.version)

    def configuration(self) -> k8s_client.Configuration:
        """A client Configuration with bearer-token auth and TLS verified against ``ca_pem``."""
        config = k8s_client.Configuration(
            host=self.url,
            api_key={"authorization": self.token},
            api_key_prefix={"authorization": "Bearer"},
            ca_cert_data=self.ca_pem,
        )
        config.verify_ssl = True
        return config

    def api_client(self) -> k8s_client.ApiClient:
        return k8s_client.ApiClient(self.configuration())

    def dynamic_client(self, cache_file: Path) -> DynamicClient:
        """A DynamicClient whose discovery cache lives in ``cache_file`` (not shared via $TMPDIR)."""
        return DynamicClient(self.api_client(), cache_file=str(cache_file))


def unique_name(test_name: str, prefix: str = "fg") -> str:
    """A DNS-label name derived from the test's name, never repeated."""
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-") or "test"
    return f"{prefix}-{stem}-{secrets.token_hex(3)}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if {"kube_apiserver", "kube_apiserver_bin_dir"} & set(getattr(item, "fixturenames", ())):
            if not item.get_closest_marker("kube_apiserver"):
                item.add_marker(pytest.mark.kube_apiserver)


@pytest.fixture(scope="session")
def kube_apiserver_bin_dir() -> Path:
    """The directory with the built kube-apiserver and etcd: built now if missing (or skipped, see above)."""
    if os.environ.get(SKIP_ENV) == "1":
        bin_dir = kube_helper.default_bin_dir()
        if not kube_helper.binaries_present(bin_dir):
            pytest.skip(f"kube-apiserver is not built in {bin_dir} and {SKIP_ENV}=1")
        return bin_dir
    return kube_helper.ensure_built()  # instant when the stamp matches; a full build otherwise


# One server per test process, shared by every directory that registers the fixture.
_shared: dict[str, Any] = {"handle": None, "users": 0}
_shared_lock = threading.Lock()


@pytest.fixture(scope="session")
def kube_apiserver(
    kube_apiserver_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeApiServer]:
    with _shared_lock:
        if _shared["handle"] is None:
            _shared["handle"] = kube_helper.start_kube_apiserver(
                tmp_path_factory.mktemp("kube-apiserver"), bin_dir=kube_apiserver_bin_dir
            )
        _shared["users"] += 1
        handle = _shared["handle"]
    try:
        yield KubeApiServer.of(handle)
    finally:
        with _shared_lock:
            _shared["users"] -= 1
            if _shared["users"] == 0:
                _shared["handle"] = None
                handle.stop()


@pytest.fixture(scope="session")
def kube_dynamic_client(
    kube_apiserver: KubeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> DynamicClient:
    return kube_apiserver.dynamic_client(tmp_path_factory.mktemp("kube-discovery") / "discovery.json")


@pytest.fixture
def kube_cluster(kube_apiserver: KubeApiServer, db: Any) -> Any:
    """The real kube-apiserver registered as a Fleetgate Cluster (token auth, CA bundle verified)."""
    from clusters.models import Cluster

    return Cluster.objects.create(
        name="kube-apiserver",
        api_url=kube_apiserver.url,
        auth_method="token",
        token=kube_apiserver.token,
        ca_data=kube_apiserver.ca_pem,
        labels={"env": "test", "backend": "kube-apiserver"},
    )


@pytest.fixture
def kube_namespace(kube_apiserver: KubeApiServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace made for this test alone (its name is yielded); deleted after the test."""
    name = unique_name(request.node.name)
    with kube_apiserver.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        try:
            yield name
        finally:
            core.delete_namespace(name)


@pytest.fixture(scope="session")
def sandbox_backend_server() -> Iterator[SandboxServer]:
    """One sandbox server (plain HTTP on 127.0.0.1) hosting a fresh virtual cluster per test."""
    with SandboxServer() as server:
        yield server
