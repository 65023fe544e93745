"""Discovery shared by server version (clusters/connector/discovery.py): what a first contact with a cluster
asks, on sandbox clusters that count the requests they get; a CRD and a group the first cluster did not
serve still found; the cache file without the shared lists; a server answering with another kind refused.
The same reads on the real kube-apiserver, shared and not, give the same live state."""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
import threading
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

    # another process (nothing shared yet) reads the file: /version (the cluster may have been upgraded
    # since the file was written), no /apis; each built-in group version it needs once, then the objects
    disc.SHARED.clear()
    before = first.faults.requests
    with connector(first, tmp_path) as kube:
        kube.read_live(manifests(), mapping="m", default_namespace=NAMESPACE, prune=False)
        kube.client.resource(f"{group}/v1", "Widget")  # from the file: no request
    assert first.faults.requests - before == 1 + 2 + 3


def poison(version: str) -> None:
    """What a lying server of ``version`` could leave in the shared lists: ConfigMap's resource named
    'secrets'."""
    disc.SHARED.remember_list(
        version,
        "api/v1",
        [
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
        ],
    )


def secret_named_settings(cluster: SandboxCluster) -> None:
    cluster.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    cluster.apply_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "settings", "namespace": NAMESPACE},
            "data": {"password": "c2VjcmV0"},
        }
    )


def test_a_file_written_before_an_upgrade_shares_nothing_under_the_old_version(
    clusters: list[SandboxCluster], tmp_path: Path
) -> None:
    """The cache file says the cluster runs an older version (it was upgraded since): the lists of that
    version are not used for it (here: poisoned ones), and what it serves now is not kept under it."""
    first, _, _ = clusters
    read(first, tmp_path)
    (real,) = disc.SHARED.versions()
    with connector(first, tmp_path) as kube:
        path = Path(kube.client.cache_file())
    saved = json.loads(path.read_text())
    saved["version"]["kubernetes"]["gitVersion"] = "v1.0.0-before-the-upgrade"
    path.write_text(json.dumps(saved))
    disc.SHARED.clear()
    poison("v1.0.0-before-the-upgrade")
    secret_named_settings(first)
    first.apply_object(configmap("settings", {"a": "3"}, namespace=NAMESPACE))
    live, _ = read(first, tmp_path)
    assert {lo.ref.kind: (lo.live or {}).get("data") for lo in live.objects}["ConfigMap"] == {"a": "3"}
    assert disc.SHARED.versions() == ["v1.0.0-before-the-upgrade", real]  # today's lists under today's
    assert json.loads(path.read_text())["version"]["kubernetes"]["gitVersion"] == real


def test_a_refresh_reads_this_cluster_and_not_the_shared_lists(
    clusters: list[SandboxCluster], tmp_path: Path
) -> None:
    """A kind the version's shared groups lack (here: batch is dropped from them) refreshes discovery; from
    then on every group version comes from this cluster, also those shared (here: a poisoned api/v1)."""
    first, second, _ = clusters
    read(first, tmp_path)
    (version,) = disc.SHARED.versions()
    groups = disc.SHARED.groups(version)
    assert groups is not None and "batch" in groups
    disc.SHARED.remember_groups(version, {g: v for g, v in groups.items() if g != "batch"})
    poison(version)
    secret_named_settings(second)
    second.apply_object(configmap("settings", {"a": "4"}, namespace=NAMESPACE))
    with connector(second, tmp_path) as kube:
        assert kube.client.resource("batch/v1", "Job").name == "jobs"  # not in the shared groups: refresh
        found = kube.get(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": NAMESPACE},
            }
        )
    assert found is not None and found["kind"] == "ConfigMap" and found["data"] == {"a": "4"}


def test_a_list_answered_with_another_kind_is_refused(clusters: list[SandboxCluster], tmp_path: Path) -> None:
    """Past the LIST threshold read_live lists a kind instead of reading each object: a list of Secrets
    given for ConfigMaps (poisoned shared lists) is refused as a GET's answer is, nothing of it kept."""
    first, second, _ = clusters
    read(first, tmp_path)
    (version,) = disc.SHARED.versions()
    poison(version)
    secret_named_settings(second)
    many = [configmap(f"c{i}", {"a": "1"}, namespace=NAMESPACE) for i in range(6)]
    many.append(configmap("settings", {"a": "1"}, namespace=NAMESPACE))
    with connector(second, tmp_path) as kube, pytest.raises(ConnectorError) as caught:
        kube.read_live(many, mapping="m", default_namespace=NAMESPACE, prune=False)
    assert "answered with a SecretList" in str(caught.value)
    assert "c2VjcmV0" not in str(caught.value)
    # the same manifests, sharing off: this cluster's own discovery, the ConfigMaps read (none exists)
    with connector(second, tmp_path / "own", shared_discovery=False) as kube:
        live = kube.read_live(many, mapping="m", default_namespace=NAMESPACE, prune=False)
    assert [lo.live for lo in live.objects] == [None] * len(many)


def test_a_server_answering_with_another_kind_is_refused(
    clusters: list[SandboxCluster], tmp_path: Path
) -> None:
    """What a lying server of the same version could do to the shared lists (name ConfigMap's resource
    'secrets'): reading a ConfigMap that would return a Secret fails, and nothing of the Secret is kept."""
    first, second, _ = clusters
    read(first, tmp_path)
    (server_version,) = disc.SHARED.versions()  # the sandbox's, learnt from the first cluster
    poison(server_version)
    secret_named_settings(second)
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


class _Proxy(http.server.BaseHTTPRequestHandler):
    """An API server behind a proxy that answers discovery of the core group with something else."""

    answer = b""

    def do_GET(self) -> None:
        if self.path == "/version":
            body = json.dumps({"major": "1", "minor": "99", "gitVersion": "v1.99.0-behind-a-proxy"}).encode()
        elif self.path == "/apis":
            body = json.dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}).encode()
        elif self.path == "/api/v1":
            body = self.answer
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    "answer",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"message": "the proxy says hello"}',
        b'{"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": []}',
        b'{"kind": "APIResourceList", "groupVersion": "v1", "resources": [{"name": "configmaps"}]}',
    ],
    ids=["html", "another-json", "another-group-version", "no-kind"],
)
def test_a_discovery_answer_that_is_not_the_resource_list_is_never_shared(
    tmp_path: Path, answer: bytes
) -> None:
    handler = type("Proxy", (_Proxy,), {"answer": answer})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        creds = ClusterCredentials(name="proxied", server=f"http://127.0.0.1:{server.server_port}", token="t")
        with Connector(creds, ConnectorOptions(retry=FAST_RETRY, cache_dir=str(tmp_path))) as kube:
            with contextlib.suppress(Exception):  # the client's own handling: the kind is not served
                kube.client.resource("v1", "ConfigMap")
    finally:
        server.shutdown()
        server.server_close()
    assert disc.SHARED.versions() in ([], ["v1.99.0-behind-a-proxy"])
    assert disc.SHARED.resource_list("v1.99.0-behind-a-proxy", "api/v1") is None
    assert disc.SHARED.fetched == 0
