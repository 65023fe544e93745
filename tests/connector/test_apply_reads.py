"""What a sync reads around its apply (issue 19): with the live state read just before (a sync's re-review),
the apply lists nothing to tell "unchanged" from "configured"; the health wait's first poll reads only
the objects the apply's answers did not show Healthy. The same actions and health as without, on the
sandbox (which counts the requests it gets) and on the real kube-apiserver."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.connector import Connector, hooks
from tests.connector.conftest import Backend
from tests.connector.test_connector_backends import configmap, deployment
from tests.connector.test_connector_hooks import job


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
    (seen,) = result.observed.values()  # health only: the reference, state, reason and message
    assert set(seen.to_dict()) == {"ref", "state", "reason", "message"}
    assert seen.state == "Healthy" and seen.ref.kind == "Secret"


def hook_job(phase: str) -> dict[str, Any]:
    return job(f"hook-{phase.lower()}", **{hooks.ARGO_HOOK: phase})


@pytest.mark.parametrize("hook", ["", "wave", "PreSync", "PostSync"])
def test_a_hook_or_a_wait_ends_what_the_read_and_the_answers_tell(
    sandbox_backend: Backend, hook: str
) -> None:
    """The read before the apply gives the resource versions only until the first wait or hook (a stale
    version given here: used without a hook, then "configured"; forgotten after one, the object listed,
    then "unchanged"); what the answers showed Healthy before a hook is not trusted after it."""
    namespace = sandbox_backend.namespace
    settings = configmap("settings", {"color": "blue"}, namespace=namespace)
    settings["metadata"]["annotations"] = {hooks.ARGO_WAVE: "1"}
    manifests = [settings]
    with sandbox_backend.connector() as kube:
        assert kube.apply(manifests, mapping="web", default_namespace=namespace, force=True).ok
        live = kube.read_live(manifests, mapping="web", default_namespace=namespace, prune=False)
        (read,) = live.objects
        assert read.live is not None
        read.live["metadata"]["resourceVersion"] = "1"  # not the object's version now
        wanted = {
            "": manifests,
            "wave": [configmap("first", {"k": "v"}, namespace=namespace), *manifests],  # waited for: wave 0
            "PreSync": [*manifests, hook_job(hook)],
            "PostSync": [*manifests, hook_job(hook)],
        }[hook]
        result = kube.apply(wanted, mapping="web", default_namespace=namespace, force=True, live=live)
    assert result.ok, [(str(r.ref), r.message) for r in result.results]
    action = next(r.action for r in result.results if r.ref.name == "settings")
    kinds = sorted(key[1] for key in result.observed)
    if not hook:
        assert (action, kinds) == ("configured", ["ConfigMap"])
    elif hook == "wave":  # applied after the wait for wave 0: listed; no hook, both answers kept
        assert (action, kinds) == ("unchanged", ["ConfigMap", "ConfigMap"])
    elif hook == "PreSync":  # the ConfigMap is applied after the hook: listed, and its answer kept
        assert (action, kinds) == ("unchanged", ["ConfigMap"])
    else:  # the ConfigMap is applied before the hook: what its answer showed is forgotten after it
        assert (action, kinds) == ("configured", [])
