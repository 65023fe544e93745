"""Watch: newline-delimited JSON events, resume from a resourceVersion, bookmarks, 410 Expired."""

from __future__ import annotations

import http.client
import itertools
import json

import pytest

_n = itertools.count()


def _cm(name: str, labels: dict | None = None, ns: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
    }


def _open_watch(cluster, query: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    hostport, _, prefix = cluster.url.split("://", 1)[1].partition("/")
    conn = http.client.HTTPConnection(hostport, timeout=10)
    conn.request("GET", f"/{prefix}/api/v1/namespaces/default/configmaps?watch=true&{query}")
    return conn, conn.getresponse()


def _events(resp: http.client.HTTPResponse, count: int | None = None) -> list[dict]:
    out = []
    while count is None or len(out) < count:
        line = resp.readline()
        if not line:
            break
        out.append(json.loads(line))
    return out


def test_watch_replays_changes_after_a_resource_version(dyn):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(body=_cm("before"))
    start = cms.get(namespace="default").metadata.resourceVersion
    cms.create(body=_cm("a"))
    cms.patch(
        name="a", namespace="default", body={"data": {"x": "1"}}, content_type="application/merge-patch+json"
    )
    cms.delete(name="a", namespace="default")
    seen = []
    for event in dyn.watch(cms, namespace="default", resource_version=start, timeout=5):
        seen.append((event["type"], event["object"].metadata.name, event["object"].metadata.resourceVersion))
        if len(seen) == 3:
            break
    assert [(t, n) for t, n, _ in seen] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    rvs = [int(rv) for _, _, rv in seen]
    assert rvs == sorted(rvs) and rvs[0] > int(start)


def test_watch_without_resource_version_starts_with_current_objects_then_streams(dyn, make_client, cluster):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(body=_cm("existing"))
    writer = make_client(cluster).resources.get(api_version="v1", kind="ConfigMap")
    seen = []
    for event in dyn.watch(cms, namespace="default", timeout=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 1:
            writer.create(body=_cm("new"))  # the watch is registered: this arrives as a live event
        if len(seen) == 2:
            break
    assert seen == [("ADDED", "existing"), ("ADDED", "new")]


def test_too_old_resource_version_gets_an_expired_error_event(sandbox_server, make_client):
    cluster = sandbox_server.add_cluster(f"small-history-{next(_n)}", history_size=3, rollout_delay=0)
    try:
        cms = make_client(cluster).resources.get(api_version="v1", kind="ConfigMap")
        for i in range(6):
            cms.create(body=_cm(f"c{i}"))
        conn, resp = _open_watch(cluster, "resourceVersion=2&timeoutSeconds=5")
        assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
        events = _events(resp)
        conn.close()
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
        assert status["message"].startswith("too old resource version: 2")
    finally:
        sandbox_server.remove_cluster(cluster.name)


def test_bookmark_is_sent_when_allowed_and_the_stream_closes_after_timeout(cluster, raw):
    raw("POST", "/api/v1/namespaces/default/configmaps", _cm("one"))
    conn, resp = _open_watch(cluster, "timeoutSeconds=1&allowWatchBookmarks=true")
    events = _events(resp)  # ends when the server closes the stream after timeoutSeconds
    conn.close()
    assert events[0]["type"] == "ADDED" and events[-1]["type"] == "BOOKMARK"
    bookmark = events[-1]["object"]
    assert bookmark["kind"] == "ConfigMap" and bookmark["metadata"]["resourceVersion"] == str(
        cluster.resource_version
    )


def test_send_initial_events_is_refused_so_kubectl_falls_back(raw):
    code, body, _ = raw("GET", "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true")
    assert code == 422 and body["reason"] == "Invalid"


def test_label_selected_watch_sees_an_object_leave_the_selection(dyn):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(body=_cm("sel", {"app": "a"}))
    start = cms.get(namespace="default").metadata.resourceVersion
    cms.create(body=_cm("other", {"app": "b"}))
    cms.patch(
        name="sel",
        namespace="default",
        body={"metadata": {"labels": {"app": "c"}}},
        content_type="application/merge-patch+json",
    )
    event = next(
        iter(dyn.watch(cms, namespace="default", label_selector="app=a", resource_version=start, timeout=5))
    )
    assert event["type"] == "DELETED" and event["object"].metadata.name == "sel"


def test_watch_across_namespaces_and_by_name(dyn, cluster):
    dyn.resources.get(api_version="v1", kind="Namespace").create(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "w2"}}
    )
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    start = str(cluster.resource_version)
    cms.create(body=_cm("x", ns="w2"))
    cms.create(body=_cm("y"))
    everywhere = []
    for event in dyn.watch(cms, resource_version=start, timeout=5):
        everywhere.append((event["object"].metadata.namespace, event["object"].metadata.name))
        if len(everywhere) == 2:
            break
    assert everywhere == [("w2", "x"), ("default", "y")]
    named = next(iter(dyn.watch(cms, field_selector="metadata.name=y", resource_version=start, timeout=5)))
    assert named["object"].metadata.name == "y"


def test_legacy_watch_path_for_one_object(cluster, raw):
    raw("POST", "/api/v1/namespaces/default/configmaps", _cm("a"))
    raw("POST", "/api/v1/namespaces/default/configmaps", _cm("b"))
    hostport, _, prefix = cluster.url.split("://", 1)[1].partition("/")
    conn = http.client.HTTPConnection(hostport, timeout=10)
    conn.request("GET", f"/{prefix}/api/v1/watch/namespaces/default/configmaps/b?timeoutSeconds=1")
    events = _events(conn.getresponse())
    conn.close()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


def test_kubernetes_client_raises_gone_for_an_expired_watch(sandbox_server, make_client):
    from kubernetes.client.exceptions import ApiException

    cluster = sandbox_server.add_cluster(f"expired-{next(_n)}", history_size=3)
    try:
        dyn = make_client(cluster)
        cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
        for i in range(6):
            cms.create(body=_cm(f"c{i}"))
        with pytest.raises(ApiException) as err:
            for _ in dyn.watch(cms, namespace="default", resource_version="2", timeout=5):
                pass
        assert err.value.status == 410 and "too old resource version: 2" in err.value.reason
    finally:
        sandbox_server.remove_cluster(cluster.name)
