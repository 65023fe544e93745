"""What a sync reads around its apply (issue 19): with the live state read just before (a sync's re-review),
the apply lists nothing to tell "unchanged" from "configured"; the health wait's first poll reads only
the objects the apply's answers did not show Healthy. The same actions and health as without, on the
sandbox (which counts the requests it gets) and on the real kube-apiserver."""

from __future__ import annotations

from typing import Any

from clusters.connector import Connector
from tests.connector.conftest import Backend
from tests.connector.test_connector_backends import configmap, deployment


def objects(namespace: str, color: str) -> list[dict[str, Any]]:
    return [
        configmap("settings", {"color": color}, namespace=namespace),
        {**deployment("web"), "metadata": {"name": "web", "namespace": namespace}},
    ]


def sync(kube: Connector, namespace: str, color: str, *, reread: bool) -> tuple[list[str], Any]:
    """One sync as the rollouts run it: (the re-review's read), apply, wait for health."""
    manifests = objects(namespace, color)
    live = (
        kube.read_live(manifests, mapping="web", default_namespace=namespace, prune=False) if reread else None
    )
    result = kube.apply(manifests, mapping="web", default_namespace=namespace, force=True, live=live)
    assert result.ok, [(str(r.ref), r.message) for r in result.results]
    report = kube.wait_healthy(result.inventory, timeout=30, observed=result.observed)
    return [r.action for r in result.results], report


def test_the_same_actions_and_health_with_the_read_before_the_apply(backend: Backend) -> None:
    backend.rollout("web", ok=True, delay=0.2)
    actions = {}
    for reread in (False, True):
        namespace = backend.namespace
        with backend.connector() as kube:
            steps = [sync(kube, namespace, color, reread=reread) for color in ("blue", "blue", "green")]
        actions[reread] = [a for a, _ in steps]
        for _, report in steps:
            assert report.state == "Healthy", report.to_dict()
            assert [h.ref.kind for h in report.objects] == ["ConfigMap", "Deployment"]
        # the other round starts from scratch
        backend.delete("v1", "ConfigMap", "settings", backend.namespace)
        backend.delete("apps/v1", "Deployment", "web", backend.namespace)
        backend.rollout("web", ok=True, delay=0.2)
    assert (
        actions[True]
        == actions[False]
        == [
            ["created", "created"],
            ["unchanged", "unchanged"],
            ["configured", "unchanged"],
        ]
    )


def test_no_list_before_the_apply_and_no_read_of_what_the_apply_showed_healthy(
    sandbox_backend: Backend,
) -> None:
    cluster = sandbox_backend.sandbox
    assert cluster is not None
    cluster.settings.update(rollout_delay=0.3, fail_rollouts=False)
    namespace = sandbox_backend.namespace
    with sandbox_backend.connector() as kube:
        sync(kube, namespace, "blue", reread=True)  # discovery done; the objects exist
        manifests = objects(namespace, "green")
        before = cluster.faults.requests
        live = kube.read_live(manifests, mapping="web", default_namespace=namespace, prune=False)
        assert cluster.faults.requests - before == 2  # one GET per object
        before = cluster.faults.requests
        result = kube.apply(manifests, mapping="web", default_namespace=namespace, force=True, live=live)
        assert cluster.faults.requests - before == 2  # the two applies; no LIST per kind and namespace
        assert [r.action for r in result.results] == ["configured", "unchanged"]
        # the ConfigMap is Healthy in the apply's answer; the Deployment is not (unchanged: it is)
        assert {ref[1]: h.state for ref, h in result.observed.items()} == {
            "ConfigMap": "Healthy",
            "Deployment": "Healthy",
        }
        before = cluster.faults.requests
        report = kube.wait_healthy(result.inventory, timeout=30, observed=result.observed)
        assert report.state == "Healthy" and cluster.faults.requests - before == 0

        # a new image: the Deployment's answer shows the new generation not yet observed
        changed = objects(namespace, "green")
        changed[1]["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
        result = kube.apply(changed, mapping="web", default_namespace=namespace, force=True)
        assert result.observed[changed_key(result, "Deployment")].state == "Progressing"
        before = cluster.faults.requests
        report = kube.wait_healthy(result.inventory, timeout=30, observed=result.observed)
        assert report.state == "Healthy"
        polls = cluster.faults.requests - before
        # the first poll reads the Deployment only; every later poll reads both objects
        assert polls >= 1 and (polls - 1) % 2 == 0, polls
        # without the apply's answers the first poll reads both
        before = cluster.faults.requests
        kube.wait_healthy(result.inventory, timeout=30)
        assert cluster.faults.requests - before == 2


def changed_key(result: Any, kind: str) -> tuple[str, str, str, str]:
    return next(r.ref.key for r in result.results if r.ref.kind == kind)


def test_what_the_apply_observed_is_never_serialized(sandbox_backend: Backend) -> None:
    with sandbox_backend.connector() as kube:
        manifests = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s", "namespace": sandbox_backend.namespace},
                "stringData": {"password": "hunter2-do-not-keep"},
            },
        ]
        result = kube.apply(manifests, mapping="web", default_namespace=sandbox_backend.namespace, force=True)
    assert result.ok and result.observed
    assert "observed" not in result.to_dict()
    assert "hunter2" not in repr(result.observed) and "aHVudGVyMi" not in repr(result.observed)
