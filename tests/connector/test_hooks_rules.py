"""The rules of sync phases, waves and hooks (clusters/connector/hooks.py), and how the render keeps objects
named by the server (``generateName``) instead of failing the whole mapping."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.connector import hooks as h
from clusters.connector.health import assess
from clusters.connector.objects import ObjectRef
from fleet.sources.render.errors import RenderError
from fleet.sources.render.objects import RawObject, normalize


def obj(kind: str = "Job", name: str = "x", **notes: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name} if name else {"generateName": "gen-"}
    if notes:
        meta["annotations"] = notes
    return {"apiVersion": "batch/v1" if kind == "Job" else "v1", "kind": kind, "metadata": meta}


def test_argo_hooks_waves_and_delete_policies() -> None:
    assert h.classify(obj()) == [h.Step("Sync", 0)]
    assert h.classify(obj(**{h.ARGO_WAVE: "-3"})) == [h.Step("Sync", -3)]
    assert h.classify(obj(**{h.ARGO_HOOK: "PreSync,PostSync", h.ARGO_WAVE: "2"})) == [
        h.Step("PreSync", 2, "argocd", ("BeforeHookCreation",)),
        h.Step("PostSync", 2, "argocd", ("BeforeHookCreation",)),
    ]
    step = h.classify(obj(name="", **{h.ARGO_HOOK: "SyncFail", h.ARGO_DELETE_POLICY: "HookSucceeded"}))
    assert step == [h.Step("SyncFail", 0, "argocd", ("HookSucceeded",), generated=True)]
    assert h.classify(obj(**{h.ARGO_HOOK: "Skip"})) == []
    assert h.classify(obj(**{h.ARGO_HOOK: "PreDelete"})) == []  # runs only when an Application is deleted


def test_helm_hooks_follow_the_operation_and_argo_annotations_win() -> None:
    pre = obj(**{h.HELM_HOOK: "pre-install,pre-upgrade", h.HELM_WEIGHT: "-5",
                 h.HELM_DELETE_POLICY: "hook-succeeded,before-hook-creation"})
    both = [h.Step("PreSync", -5, "helm", ("HookSucceeded", "BeforeHookCreation"))]
    assert h.classify(pre, install=True) == both
    assert h.classify(pre, install=False) == both
    post = obj(**{h.HELM_HOOK: "post-install"})
    assert h.classify(post, install=True) == [h.Step("PostSync", 0, "helm", ("BeforeHookCreation",))]
    assert h.classify(post, install=False) == []
    argo = obj(**{h.HELM_HOOK: "post-install", h.ARGO_HOOK: "PreSync"})
    assert h.classify(argo, install=False)[0].hook == "argocd"
    assert h.uses_helm_hooks([post]) and not h.uses_helm_hooks([argo])


@pytest.mark.parametrize(("notes", "message"), [
    ({h.ARGO_WAVE: "1.5"}, "argocd.argoproj.io/sync-wave must be an integer, not '1.5'"),
    ({h.ARGO_HOOK: "PreSnyc"}, "unknown argocd.argoproj.io/hook PreSnyc"),
    ({h.ARGO_HOOK: "Sync", h.ARGO_DELETE_POLICY: "Always"}, "unknown argocd.argoproj.io/hook-delete-policy"),
    ({h.HELM_HOOK: "pre-install", h.HELM_WEIGHT: "high"}, "helm.sh/hook-weight must be an integer"),
])
def test_unreadable_annotations_are_refused(notes: dict[str, str], message: str) -> None:
    with pytest.raises(h.HookError, match=message.replace(".", r"\.")):
        h.classify(obj(**notes))


def test_argo_order_within_a_sync() -> None:
    steps = [
        (h.Step("Sync", 0), "Deployment", "a"),
        (h.Step("Sync", 0), "ConfigMap", "b"),
        (h.Step("PreSync", 5, "argocd"), "Job", "z"),
        (h.Step("Sync", -1), "Widget", "w"),
        (h.Step("Sync", 0), "ConfigMap", "a"),
        (h.Step("PostSync", -9, "argocd"), "Job", "p"),
    ]
    ordered = sorted(steps, key=lambda t: h.task_order(*t))
    assert [(k, n) for _s, k, n in ordered] == [
        ("Job", "z"), ("Widget", "w"), ("ConfigMap", "a"), ("ConfigMap", "b"), ("Deployment", "a"),
        ("Job", "p"),
    ]


def test_the_render_keeps_generate_name_objects_each_document_its_own() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "migrate-"}}
    objects = normalize([RawObject(job, "hooks.yaml", 0), RawObject(dict(job), "hooks.yaml", 1),
                         RawObject({**job, "metadata": {"name": "named"}}, "hooks.yaml", 2)])
    assert [(o.name, o.generate_name) for o in objects] == [("", "migrate-"), ("", "migrate-"), ("named", "")]
    assert objects[0].key != objects[1].key
    assert objects[0].to_dict()["generateName"] == "migrate-"
    with pytest.raises(RenderError, match=r"Job has no metadata.name \(nor metadata.generateName\)"):
        normalize([RawObject({"apiVersion": "batch/v1", "kind": "Job", "metadata": {}}, "a.yaml", 0)])
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": 3}}
    with pytest.raises(RenderError, match=r"metadata\.generateName must be a non-empty string"):
        normalize([RawObject(bad, "a.yaml", 0)])


def test_a_pod_hook_is_judged_by_its_phase() -> None:
    ref = ObjectRef("v1", "Pod", "ns", "check")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}}
    assert assess(ref, {**pod, "status": {"phase": "Succeeded"}}).state == "Healthy"
    failed = assess(ref, {**pod, "status": {"phase": "Failed", "reason": "Error", "message": "exit 1"}})
    assert (failed.state, failed.reason, failed.message) == ("Degraded", "Error", "exit 1")
