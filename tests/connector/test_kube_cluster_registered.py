"""The real kube-apiserver as a registered Fleetgate Cluster: the production path (model credentials →
connector → official client over TLS with the CA bundle) reaches it, and a wrong CA is refused."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.services import check_cluster, connector_for

pytestmark = [pytest.mark.kube_apiserver, pytest.mark.django_db]


def test_registered_cluster_is_reachable_with_its_ca_bundle(kube_cluster: Any, kube_apiserver: Any) -> None:
    outcome = check_cluster(kube_cluster)
    kube_cluster.refresh_from_db()
    assert kube_cluster.status == "reachable", kube_cluster.last_error
    assert kube_cluster.kubernetes_version == kube_apiserver.version
    assert outcome is not None


def test_apply_through_the_registered_cluster(kube_cluster: Any, kube_namespace: str) -> None:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "registered", "namespace": kube_namespace},
        "data": {"via": "cluster-model"},
    }
    with connector_for(kube_cluster) as kube:
        sync = kube.apply([configmap], mapping="registered", default_namespace=kube_namespace)
    assert sync.ok and sync.results[0].action == "created"


def test_a_wrong_ca_bundle_is_refused(kube_cluster: Any, sandbox_ca_pem: str) -> None:
    kube_cluster.ca_data = sandbox_ca_pem
    kube_cluster.save()
    check_cluster(kube_cluster)
    kube_cluster.refresh_from_db()
    assert kube_cluster.status == "unreachable"
    assert "certificate" in kube_cluster.last_error.lower() or "ssl" in kube_cluster.last_error.lower()
    assert kube_cluster.token not in kube_cluster.last_error


@pytest.fixture
def sandbox_ca_pem(tmp_path: Any) -> str:
    """Some other CA: the sandbox's own, generated for a TLS sandbox."""
    from clusters.sandbox import SandboxServer

    server = SandboxServer(tls=True, tls_dir=tmp_path / "tls").start()
    try:
        return server.ca_pem
    finally:
        server.stop()
