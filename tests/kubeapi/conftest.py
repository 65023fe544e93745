"""Fixtures that run a real etcd + kube-apiserver (built from Go modules) for the whole test session.

- ``kube_apiserver`` (session): builds the binaries if needed (scripts/build-kube-apiserver.sh), starts
  etcd and kube-apiserver on 127.0.0.1, yields a :class:`KubeApiServer` and stops both at the end.
  When the binaries are missing and ``FLEETGATE_SKIP_KUBE_APISERVER=1`` is set, the tests that use it
  are skipped with that reason; otherwise a missing binary is built, never silently skipped.
- ``kube_apiserver_bin_dir`` (session): the directory of the built binaries (same build/skip rule).
- ``kube_dynamic_client`` (session): the official client's DynamicClient, token auth, CA verified.
- ``kube_namespace`` (function): a fresh namespace per test, deleted afterwards. With no
  kube-controller-manager (as in envtest) a deleted namespace stays ``Terminating`` with its objects.

Tests that use these are marked ``kube_apiserver`` automatically, so ``-m "not kube_apiserver"`` drops
them. A fixture that registers the server as a Fleetgate ``Cluster`` can build on ``kube_apiserver``:
its url, token and ca_pem are what a Cluster's credentials hold.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from kubernetes import client as k8s_client
from kubernetes.dynamic import DynamicClient

REPO_ROOT = Path(__file__).resolve().parents[2]
SKIP_ENV = "FLEETGATE_SKIP_KUBE_APISERVER"


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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if {"kube_apiserver", "kube_apiserver_bin_dir"} & set(getattr(item, "fixturenames", ())):
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


@pytest.fixture(scope="session")
def kube_apiserver(
    kube_apiserver_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeApiServer]:
    bin_dir = kube_apiserver_bin_dir
    handle = kube_helper.start_kube_apiserver(tmp_path_factory.mktemp("kube-apiserver"), bin_dir=bin_dir)
    try:
        yield KubeApiServer(
            url=handle.url,
            token=handle.token,
            ca_pem=handle.ca_data,
            ca_file=handle.ca_file,
            kubeconfig=handle.kubeconfig,
            version=handle.version,
        )
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def kube_dynamic_client(
    kube_apiserver: KubeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> DynamicClient:
    return kube_apiserver.dynamic_client(tmp_path_factory.mktemp("kube-discovery") / "discovery.json")


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-") or "test"
    return f"fg-{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def kube_namespace(kube_apiserver: KubeApiServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace made for this test alone (its name is yielded); deleted after the test."""
    name = _namespace_name(request.node.name)
    with kube_apiserver.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        try:
            yield name
        finally:
            core.delete_namespace(name)
