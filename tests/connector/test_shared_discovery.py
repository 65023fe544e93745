"""Discovery shared by server version (clusters/connector/discovery.py): what a first contact with a cluster
asks, on sandbox clusters that count the requests they get; a CRD and a group the first cluster did not
serve still found; the cache file without the shared lists; a server answering with another kind refused.
The same reads on the real kube-apiserver, shared and not, give the same live state."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from clusters.connector import ClusterCredentials, Connector, ConnectorError, ConnectorOptions
from clusters.connector import discovery as disc
from clusters.sandbox import SandboxCluster, SandboxServer
from tests.connector.conftest import FAST_RETRY, Backend
from tests.connector.test_connector_backends import configmap, crd, deployment

NAMESPACE = "web"


@pytest.fixture(autouse=True)
def _fresh_shared() -> Iterator[None]:
    """Each test starts as a new worker process does: nothing shared yet."""
    disc.SHARED.clear()
    yield
    disc.SHARED.clear()


@pytest.fixture
def clusters(sandbox_backend_server: SandboxServer) -> Iterator[list[SandboxCluster]]:
    made = [
        sandbox_backend_server.add_cluster(
            f"shared-{secrets.token_hex(4)}", token=f"tok-{i}", rollout_delay=0
        )
        for i in range(3)
    ]
    yield made
    for cluster in made:
        sandbox_backend_server.remove_cluster(cluster.name)


def manifests() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        configmap("settings", {"a": "1"}, namespace=NAMESPACE),
        {**deployment("web"), "metadata": {"name": "web", "namespace": NAMESPACE}},
    ]


def connector(cluster: SandboxCluster, cache: Path, **options: Any) -> Connector:
    creds = ClusterCredentials(name=cluster.name, server=cluster.url, token=cluster.token or "")
    return Connector(creds, ConnectorOptions(retry=FAST_RETRY, cache_dir=str(cache), **options))


def read(cluster: SandboxCluster, cache: Path, **options: Any) -> tuple[Any, int]:
    """One first-contact read of the three objects: (live state, requests the cluster got)."""
    before = cluster.faults.requests
    with connector(cluster, cache, **options) as kube:
        live = kube.read_live(manifests(), mapping="m", default_namespace=NAMESPACE, prune=False)
    return live, cluster.faults.requests - before


def test_a_second_cluster_of_the_version_asks_only_version_then_its_objects(
    clusters: list[SandboxCluster], tmp_path: Path
) -> None:
    first, second, third = clusters
    _, asked_first = read(first, tmp_path)
    # /version, /apis, /api/v1, /apis/apps/v1, then the three objects
    assert asked_first == 7
    live, asked_second = read(second, tmp_path)
    assert asked_second == 4  # /version, then the three objects
    assert [lo.live for lo in live.objects] == [None, None, None]  # all absent: read, not guessed
    assert disc.SHARED.fetched == 2 and disc.SHARED.reused == 2

    # objects that exist are read as they are
    third.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    third.apply_object(configmap("settings", {"a": "2"}, namespace=NAMESPACE))
    live, asked_third = read(third, tmp_path)
    assert asked_third == 4
    found = {lo.ref.kind: lo.live for lo in live.objects}
    assert found["Namespace"]["metadata"]["name"] == NAMESPACE
    assert found["ConfigMap"]["data"] == {"a": "2"}
    assert found["Deployment"] is None


def test_sharing_off_discovers_every_cluster_on_its_own(
    clusters: list[SandboxCluster], tmp_path: Path
) -> None:
    first, second, _ = clusters
    assert read(first, tmp_path, shared_discovery=False)[1] == 7
    assert read(second, tmp_path, shared_discovery=False)[1] == 7
    assert disc.SHARED.fetched == 0


def test_a_crd_on_one_cluster_only_is_found_by_its_own_discovery(
    clusters: list[SandboxCluster], tmp_path: Path
) -> None:
    first, second, _ = clusters
    read(first, tmp_path)  # the version's built-in groups are known now, without the CRD
    group = f"t{secrets.token_hex(4)}.fleetgate.test"
    with connector(second, tmp_path / "setup") as kube:
        assert kube.apply([crd(group)], mapping="crd", default_namespace=NAMESPACE).ok
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": NAMESPACE},
    }
    with connector(second, tmp_path) as kube:
        resource = kube.client.resource(f"{group}/v1", "Widget")
        assert resource.namespaced and resource.name == "widgets"
        live = kube.read_live([widget], mapping="m", default_namespace=NAMESPACE, prune=False)
    assert live.objects[0].live is None
    # the first cluster does not serve it: not found there, whatever the second one serves
    with connector(first, tmp_path) as kube, pytest.raises(ResourceNotFoundError):
        kube.client.resource(f"{group}/v1", "Widget")


def test_the_cache_file_keeps_the_cluster_and_not_the_shared_lists(
    clusters: list[SandboxCluster], tmp_path: Path
) -> None:
    first, _, _ = clusters
    group = f"t{secrets.token_hex(4)}.fleetgate.test"
    with connector(first, tmp_path / "setup") as kube:
        assert kube.apply([crd(group)], mapping="crd", default_namespace=NAMESPACE).ok
    with connector(first, tmp_path) as kube:
        kube.read_live(manifests(), mapping="m", default_namespace=NAMESPACE, prune=False)
        kube.client.resource(f"{group}/v1", "Widget")
        path = Path(kube.client.cache_file())
    saved = json.loads(path.read_text())
    assert saved["version"]["kubernetes"]["gitVersion"]
    resources = saved["resources"]
    assert resources["api"][""]["v1"]["resources"] == {}  # built-in: shared by version, not in the file
    assert resources["apis"]["apps"]["v1"]["resources"] == {}
    assert "Widget" in resources["apis"][group]["v1"]["resources"]  # the cluster's own CRD: in the file
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".discovery-")]  # no temporary left

    # another process (nothing shared yet) reads the file: no /version, no /apis; each built-in group
    # version it needs once, then the objects
    disc.SHARED.clear()
    before = first.faults.requests
    with connector(first, tmp_path) as kube:
        kube.read_live(manifests(), mapping="m", default_namespace=NAMESPACE, prune=False)
        kube.client.resource(f"{group}/v1", "Widget")  # from the file: no request
    assert first.faults.requests - before == 2 + 3


def test_a_server_answering_with_another_kind_is_refused(
    clusters: list[SandboxCluster], tmp_path: Path
) -> None:
    """What a lying server of the same version could do to the shared lists (name ConfigMap's resource
    'secrets'): reading a ConfigMap that would return a Secret fails, and nothing of the Secret is kept."""
    first, second, _ = clusters
    read(first, tmp_path)
    (server_version,) = disc.SHARED.versions()  # the sandbox's, learnt from the first cluster
    poisoned = [
        {
            "name": "secrets",
            "singularName": "",
            "namespaced": True,
            "kind": "ConfigMap",
            "verbs": ["get", "list"],
        },
        {
            "name": "namespaces",
            "singularName": "",
            "namespaced": False,
            "kind": "Namespace",
            "verbs": ["get"],
        },
    ]
    disc.SHARED.remember_list(server_version, "api/v1", poisoned)
    second.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    second.apply_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "settings", "namespace": NAMESPACE},
            "data": {"password": "c2VjcmV0"},
        }
    )
    with connector(second, tmp_path) as kube, pytest.raises(ConnectorError) as caught:
        kube.read_live(
            [configmap("settings", {"a": "1"}, namespace=NAMESPACE)],
            mapping="m",
            default_namespace=NAMESPACE,
            prune=False,
        )
    assert "answered with a Secret" in str(caught.value)
    assert "c2VjcmV0" not in str(caught.value)


@pytest.mark.parametrize("shared", [False, True])
def test_shared_discovery_reads_what_the_server_holds(backend: Backend, shared: bool) -> None:
    """Both backends, with sharing on (a second connector: the version's lists from the first) and off."""
    backend.apply_as("someone", configmap("present", {"k": "v"}, namespace=backend.namespace))
    wanted = [configmap("present", {"k": "w"}), configmap("absent", {"k": "x"}), deployment("web")]
    results = []
    for round_ in range(2):
        opts = {"retry": FAST_RETRY, "cache_dir": str(backend.tmp / f"d{round_}"), "shared_discovery": shared}
        with Connector(backend.credentials, ConnectorOptions(**opts)) as kube:
            live = kube.read_live(wanted, mapping="m", default_namespace=backend.namespace, prune=False)
        results.append([(lo.ref.kind, lo.ref.name, (lo.live or {}).get("data")) for lo in live.objects])
    assert (
        results[0]
        == results[1]
        == [
            ("ConfigMap", "present", {"k": "v"}),
            ("ConfigMap", "absent", None),
            ("Deployment", "web", None),
        ]
    )
    assert (disc.SHARED.reused > 0) is shared
