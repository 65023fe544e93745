"""Fault injection (errors, latency, dropped connections, down), bearer tokens, HTTPS, many clusters."""

from __future__ import annotations

import http.client
import itertools
import json
import ssl

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from clusters.sandbox import SandboxServer

_n = itertools.count()


@pytest.fixture
def cms(dyn):
    return dyn.resources.get(api_version="v1", kind="ConfigMap")


def test_fail_next_answers_the_given_status_then_recovers(cluster, cms):
    cluster.faults.fail_next(2, 503)
    codes = []
    for _ in range(3):
        try:
            cms.get(namespace="default")
            codes.append(200)
        except ApiException as exc:
            codes.append(exc.status)
            body = json.loads(exc.body)
            assert body["kind"] == "Status" and body["reason"] == "ServiceUnavailable"
    assert codes == [503, 503, 200]


def test_too_many_requests_carries_retry_after(cluster, raw):
    cluster.faults.fail_next(1, 429)
    code, body, resp = raw("GET", "/api/v1/namespaces")
    assert code == 429 and body["reason"] == "TooManyRequests" and resp.getheader("Retry-After") == "1"
    assert raw("GET", "/api/v1/namespaces")[0] == 200


def test_seeded_error_rate_is_reproducible(cluster, raw):
    def run() -> list[int]:
        cluster.faults.configure(error_rate=0.5, error_codes=[500, 503], seed=42)
        return [raw("GET", "/version")[0] for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert {500, 503, 200} == set(first)
    cluster.faults.clear()
    assert all(raw("GET", "/version")[0] == 200 for _ in range(5))


def test_latency_makes_a_short_client_timeout_expire(cluster, cms):
    cluster.faults.latency = 2.0
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        cms.get(namespace="default", _request_timeout=0.2)
    cluster.faults.latency = 0.0
    assert cms.get(namespace="default").kind == "ConfigMapList"


def test_dropped_connection_gets_no_answer(cluster, raw):
    cluster.faults.drop_next(1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        raw("GET", "/api/v1/namespaces")
    assert raw("GET", "/api/v1/namespaces")[0] == 200


def test_cluster_down_resets_connections_on_the_shared_port(cluster, raw, sandbox_server):
    cluster.faults.down = True
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        raw("GET", "/version")
    other = sandbox_server.add_cluster(f"neighbour-{next(_n)}")
    try:
        conn = http.client.HTTPConnection(other.url.split("://")[1].split("/")[0], timeout=5)
        conn.request("GET", f"/clusters/{other.name}/version")
        assert conn.getresponse().status == 200  # one cluster down does not take the others down
        conn.close()
    finally:
        sandbox_server.remove_cluster(other.name)
    cluster.faults.down = False
    assert raw("GET", "/version")[0] == 200


def test_cluster_with_its_own_port_refuses_connections_while_down(sandbox_server, make_client):
    cluster = sandbox_server.add_cluster(f"own-{next(_n)}", own_port=True)
    try:
        assert cluster.url.count("/") == 2  # served at the root of its own port
        cms = make_client(cluster).resources.get(api_version="v1", kind="ConfigMap")
        cluster.faults.down = True
        hostport = cluster.url.split("://")[1]
        conn = http.client.HTTPConnection(hostport, timeout=5)
        with pytest.raises(ConnectionRefusedError):
            conn.request("GET", "/version")
        cluster.faults.down = False
        assert cms.get(namespace="default").kind == "ConfigMapList"
    finally:
        sandbox_server.remove_cluster(cluster.name)


def test_bearer_token_is_required_when_set(sandbox_server, make_client):
    cluster = sandbox_server.add_cluster(f"secure-{next(_n)}", token="s3cret")
    try:
        hostport = cluster.url.split("://")[1].split("/")[0]
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            conn = http.client.HTTPConnection(hostport, timeout=5)
            conn.request("GET", f"/clusters/{cluster.name}/api/v1/namespaces", headers=headers)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            conn.close()
            assert resp.status == 401
            assert body == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "details": {},
                "code": 401,
            }
        with pytest.raises(ApiException) as err:
            make_client(cluster, token="wrong")
        assert err.value.status == 401
        dyn = make_client(cluster, token="s3cret")
        assert dyn.resources.get(api_version="v1", kind="Namespace").get().kind == "NamespaceList"
    finally:
        sandbox_server.remove_cluster(cluster.name)


def test_https_with_a_generated_ca(make_client):
    with SandboxServer(tls=True) as server:
        cluster = server.add_cluster("tls", token="t0k")
        assert cluster.url.startswith("https://127.0.0.1:")
        dyn = make_client(cluster, token="t0k", ca_file=server.ca_file)
        assert dyn.resources.get(api_version="v1", kind="Namespace").get().kind == "NamespaceList"
        with pytest.raises(DynamicApiError) as err:
            make_client(cluster, token="t0k")  # the system trust store does not know the sandbox CA
        assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
        ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
        conn = http.client.HTTPSConnection(cluster.url.split("://")[1].split("/")[0], context=ctx, timeout=5)
        conn.request("GET", "/clusters/tls/version", headers={"Authorization": "Bearer t0k"})
        assert conn.getresponse().status == 200
        conn.close()


def test_many_clusters_are_isolated_and_a_root_cluster_is_served_at_slash(make_client):
    with SandboxServer() as server:
        clusters = [server.add_cluster(f"c{i}", rollout_delay=0) for i in range(200)]
        root = server.add_cluster("root", root=True)
        assert root.url == server.url and server.url_for("c7") == f"{server.url}/clusters/c7"
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "only-here", "namespace": "default"},
        }
        make_client(clusters[7]).resources.get(api_version="v1", kind="ConfigMap").create(body=body)
        for c in (clusters[0], clusters[199], root):
            cms = make_client(c).resources.get(api_version="v1", kind="ConfigMap")
            assert cms.get(namespace="default").items == []
        assert clusters[7].get_object("v1", "ConfigMap", "only-here", "default") is not None
        with pytest.raises(ValueError):
            server.add_cluster("c1")
        conn = http.client.HTTPConnection(server.url.split("://")[1], timeout=5)
        conn.request("GET", "/clusters/missing/version")
        assert conn.getresponse().status == 404
        conn.close()


def test_stopping_the_server_cuts_keep_alive_connections(make_client):
    server = SandboxServer().start()
    cluster = server.add_cluster("stop-me")
    cms = make_client(cluster).resources.get(api_version="v1", kind="ConfigMap")
    assert cms.get(namespace="default").kind == "ConfigMapList"  # the client now holds a pooled connection
    server.stop()
    with pytest.raises((urllib3.exceptions.HTTPError, ApiException)):
        cms.get(namespace="default")


def test_clusters_lock_separately(sandbox_server, make_client):
    busy = sandbox_server.add_cluster(f"busy-{next(_n)}")
    free = sandbox_server.add_cluster(f"free-{next(_n)}")
    try:
        cms = make_client(free).resources.get(api_version="v1", kind="ConfigMap")
        with busy.state.lock:  # a long write in one cluster does not stall the others
            created = cms.create(
                body={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "x", "namespace": "default"},
                },
                _request_timeout=10,
            )
        assert created.metadata.name == "x"
    finally:
        sandbox_server.remove_cluster(busy.name)
        sandbox_server.remove_cluster(free.name)
