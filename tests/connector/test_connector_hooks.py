"""Hooks, sync phases and waves, and objects named by the server (``generateName``), on the sandbox and on the
real kube-apiserver with the same assertions.

The order is observed, not inferred from Fleetgate's own results: a watch on ConfigMaps, Jobs and Pods of the
test's namespace (started at the list's resourceVersion, so nothing is missed) records every ADDED, MODIFIED
and DELETED event with its resourceVersion; one server counter orders them across kinds (the sandbox's
counter, etcd's revision).

The real kube-apiserver runs no controllers, so no Job ever completes by itself there: the watcher plays the
Job controller, writing the Job's status subresource (Complete, or Failed when the Job carries the sandbox's
``sandbox.fleetgate.io/fail: "true"``) as soon as it sees the Job, as the sandbox's own controller does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import watch

from clusters.connector import hooks
from clusters.sandbox.controller import FAIL_ANNOTATION
from fleet.sources.render import ClusterContext, RenderRequest, SourceTree, render
from tests.connector.conftest import Backend

ARGO_HOOK, ARGO_POLICY, WAVE = hooks.ARGO_HOOK, hooks.ARGO_DELETE_POLICY, hooks.ARGO_WAVE
WATCHED = (("v1", "ConfigMap"), ("batch/v1", "Job"))


def config_map(name: str, wave: int | None = None, **notes: str) -> dict[str, Any]:
    annotations = dict(notes)
    if wave is not None:
        annotations[WAVE] = str(wave)
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": name}}


def job(name: str = "", *, generate: str = "", fail: bool = False, **notes: str) -> dict[str, Any]:
    annotations = dict(notes)
    if fail:
        annotations[FAIL_ANNOTATION] = "true"
    meta: dict[str, Any] = {"annotations": annotations}
    if generate:
        meta["generateName"] = generate
    else:
        meta["name"] = name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "run", "image": "busybox:1.36", "command": ["true"]}],
                }
            },
        },
    }


# A Helm chart with weighted hooks (also synced by a Celery worker in tests/rollouts/test_rollout_hooks.py)
CHART = {
    "chart/Chart.yaml": "apiVersion: v2\nname: shop\nversion: 0.1.0\n",
    "chart/values.yaml": "color: blue\n",
    "chart/templates/app.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-app
data:
  color: {{ .Values.color | quote }}
""",
    "chart/templates/hooks.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-db-init
  annotations:
    helm.sh/hook: pre-install
    helm.sh/hook-weight: "5"
    helm.sh/hook-delete-policy: hook-succeeded
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: run, image: "busybox:1.36", command: ["true"]}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-db-migrate
  annotations:
    helm.sh/hook: pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: run, image: "busybox:1.36", command: ["true"]}]
---
apiVersion: batch/v1
kind: Job
metadata:
  generateName: {{ .Release.Name }}-notify-
  annotations:
    helm.sh/hook: post-install,post-upgrade
    helm.sh/hook-weight: "1"
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: run, image: "busybox:1.36", command: ["true"]}]
""",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _job_status(live: dict[str, Any]) -> dict[str, Any]:
    """What the Job controller writes when the Job's pod finished (or failed past its backoff limit)."""
    failed = ((live["metadata"].get("annotations") or {}).get(FAIL_ANNOTATION)) == "true"
    ts = _now()
    if failed:
        return {"startTime": ts, "failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit", "lastProbeTime": ts,
             "lastTransitionTime": ts},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit", "lastProbeTime": ts,
             "lastTransitionTime": ts},
        ]}
    done = {"status": "True", "reason": "CompletionsReached", "lastProbeTime": ts, "lastTransitionTime": ts,
            "message": "Reached expected number of succeeded pods"}
    return {"startTime": ts, "completionTime": ts, "succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", **done}, {"type": "Complete", **done}]}


class Observer:
    """Records the events of the watched kinds in the namespace; on the kube-apiserver, completes Jobs."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.events: list[tuple[int, str, str, str, dict[str, Any]]] = []  # (rv, type, kind, name, object)
        self.lock = threading.Lock()
        self.watches: list[watch.Watch] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for api_version, kind in WATCHED:
            res = self.backend.resource(api_version, kind)
            listed = json.loads(self.backend.raw.get(res, namespace=self.backend.namespace,
                                                     serialize=False).data)
            w = watch.Watch()
            self.watches.append(w)
            thread = threading.Thread(target=self._run, args=(w, res, listed["metadata"]["resourceVersion"]),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, w: watch.Watch, res: Any, rv: str) -> None:
        try:
            for event in self.backend.raw.watch(res, namespace=self.backend.namespace, resource_version=rv,
                                                watcher=w, timeout=120):
                obj = event["raw_object"]
                meta = obj["metadata"]
                with self.lock:
                    self.events.append((int(meta["resourceVersion"]), event["type"], obj["kind"],
                                        meta["name"], obj))
                if (self.backend.sandbox is None and obj["kind"] == "Job" and event["type"] == "ADDED"
                        and not (obj.get("status") or {}).get("conditions")):
                    self.backend.raw.patch(res.status, body={"status": _job_status(obj)}, name=meta["name"],
                                           namespace=self.backend.namespace,
                                           content_type="application/merge-patch+json")
        except Exception:  # noqa: S110 - the watch ends when the test stops it
            pass

    def stop(self) -> None:
        for w in self.watches:
            w.stop()

    def sequence(self, *types: str) -> list[tuple[str, str, str]]:
        with self.lock:
            return [(t, k, n) for _rv, t, k, n, _o in sorted(self.events, key=lambda e: e[0])
                    if not types or t in types]

    def added(self, at_least: int = 0) -> list[str]:
        """The objects added, in order, once ``at_least`` of them arrived through the watch."""
        deadline = time.monotonic() + 20
        while len(self.sequence("ADDED")) < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
        return [f"{k}/{n}" for t, k, n in self.sequence("ADDED")]

    def all(self, event_type: str, kind: str, name: str) -> list[int]:
        with self.lock:
            return sorted(rv for rv, t, k, n, _o in self.events if (t, k, n) == (event_type, kind, name))

    def first(self, event_type: str, kind: str, name: str, condition: str = "") -> int:
        """The resourceVersion of the first matching event (a Job's status condition, when given). Events
        arrive through the watch after the request that caused them returned: wait for it a while."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with self.lock:
                for rv, t, k, n, obj in sorted(self.events, key=lambda e: e[0]):
                    if (t, k, n) != (event_type, kind, name):
                        continue
                    conds = {c["type"] for c in (obj.get("status") or {}).get("conditions") or []
                             if c.get("status") == "True"}
                    if not condition or condition in conds:
                        return rv
            time.sleep(0.05)
        raise AssertionError(f"no {event_type} {kind}/{name} {condition} in {self.sequence()}")


@pytest.fixture
def observer(backend: Backend) -> Iterator[Observer]:
    obs = Observer(backend)
    obs.start()
    time.sleep(0.2)  # let the watches connect (they start at the list's resourceVersion either way)
    try:
        yield obs
    finally:
        obs.stop()


def _sync(backend: Backend, manifests: list[dict[str, Any]], **kw: Any) -> Any:
    kw.setdefault("wave_timeout", 30.0)
    with backend.connector() as kube:
        return kube.apply(manifests, mapping="hooks", default_namespace=backend.namespace, force=True, **kw)


def _live_names(backend: Backend, api_version: str, kind: str) -> list[str]:
    res = backend.resource(api_version, kind)
    items = json.loads(backend.raw.get(res, namespace=backend.namespace, serialize=False).data)["items"]
    return sorted(i["metadata"]["name"] for i in items)


def test_phases_and_waves_run_in_argo_order_each_waiting_for_the_last(
    backend: Backend, observer: Observer
) -> None:
    manifests = [
        config_map("late", wave=3),
        config_map("zeta"),
        config_map("alpha"),
        config_map("early", wave=-2),
        job(generate="smoke-", **{ARGO_HOOK: "PostSync", ARGO_POLICY: "HookSucceeded"}),
        job("migrate", **{ARGO_HOOK: "PreSync", WAVE: "1"}),
        config_map("pre-config", **{ARGO_HOOK: "PreSync", WAVE: "-1"}),
    ]
    result = _sync(backend, manifests)
    assert result.ok, [r.to_dict() for r in result.results]
    added = observer.added(7)
    created = [a for a in added if not a.startswith("Job/smoke-")]
    assert created == ["ConfigMap/pre-config", "Job/migrate", "ConfigMap/early", "ConfigMap/alpha",
                       "ConfigMap/zeta", "ConfigMap/late"]
    smoke = next(a.split("/")[1] for a in added if a.startswith("Job/smoke-"))
    assert added[-1] == f"Job/{smoke}" and smoke != "smoke-"  # PostSync last, named by the server
    # each step waited for the one before: the PreSync Job completed before the Sync phase began, and the
    # Sync phase was applied before the PostSync hook was created
    assert observer.first("MODIFIED", "Job", "migrate", "Complete") < observer.first(
        "ADDED", "ConfigMap", "early")
    assert observer.first("ADDED", "ConfigMap", "late") < observer.first("ADDED", "Job", smoke)
    # HookSucceeded: the PostSync Job is deleted once it completed; BeforeHookCreation (the default): kept
    assert observer.first("DELETED", "Job", smoke) > observer.first("MODIFIED", "Job", smoke, "Complete")
    assert _live_names(backend, "batch/v1", "Job") == ["migrate"]
    # hooks are neither in the inventory (never pruned by name) nor in what drift compares
    assert sorted(r["name"] for r in result.inventory) == ["alpha", "early", "late", "zeta"]
    assert sorted(b["metadata"]["name"] for b in result.applied) == ["alpha", "early", "late", "zeta"]
    steps = {r.ref.name: r.step for r in result.results}
    assert steps["migrate"] == {"phase": "PreSync", "wave": 1, "hook": "argocd",
                                "delete_policies": ["BeforeHookCreation"]}
    assert steps["early"] == {"phase": "Sync", "wave": -2}
    assert steps[smoke]["generated"] is True


def test_a_failed_presync_hook_stops_the_sync_and_runs_syncfail(backend: Backend, observer: Observer) -> None:
    first = _sync(backend, [config_map("old")])
    assert first.ok
    manifests = [
        job("check", fail=True, **{ARGO_HOOK: "PreSync", ARGO_POLICY: "HookFailed"}),
        config_map("app"),
        job(generate="cleanup-", **{ARGO_HOOK: "SyncFail"}),
        job("smoke", **{ARGO_HOOK: "PostSync"}),
    ]
    result = _sync(backend, manifests, prune=True, previous_inventory=first.inventory)
    assert not result.ok
    check = result.result("Job", "check")
    assert check.action == "failed" and "hook failed (PreSync hook (Argo CD), wave 0)" in check.message
    assert "BackoffLimitExceeded" in check.message and "deleted (HookFailed)" in check.message
    assert result.result("ConfigMap", "app").action == "skipped"
    assert "the sync stopped (PreSync wave 0 failed)" in result.result("ConfigMap", "app").message
    added = observer.added(3)  # 'old' from the first sync, the PreSync hook, the SyncFail hook
    assert "ConfigMap/app" not in added and "Job/smoke" not in added  # nothing of Sync nor PostSync
    cleanup = [a for a in added if a.startswith("Job/cleanup-")]
    assert len(cleanup) == 1  # SyncFail ran, after the PreSync hook failed
    assert observer.first("MODIFIED", "Job", "check", "Failed") < observer.first(
        "ADDED", "Job", cleanup[0].split("/")[1])
    # nothing was pruned (the sync stopped before its Sync phase) and the inventory still holds 'old'
    assert [n for n in _live_names(backend, "v1", "ConfigMap") if n != "kube-root-ca.crt"] == ["old"]
    assert {r["name"] for r in result.inventory} == {"old", "app"}
    # HookFailed deleted the failed PreSync Job; the SyncFail Job (default policy) stays
    assert _live_names(backend, "batch/v1", "Job") == [cleanup[0].split("/")[1]]


def test_hooks_are_created_again_and_generated_names_are_new_on_every_sync(
    backend: Backend, observer: Observer
) -> None:
    manifests = [
        config_map("app"),
        job("migrate", **{ARGO_HOOK: "PreSync"}),  # BeforeHookCreation by default
        job(generate="report-", **{ARGO_HOOK: "PostSync"}),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "run-"}, "data": {"a": "b"}},
    ]
    first = _sync(backend, manifests, prune=True)
    assert first.ok, [r.to_dict() for r in first.results]
    uid1 = backend.get("batch/v1", "Job", "migrate", backend.namespace)["metadata"]["uid"]  # type: ignore[index]
    second = _sync(backend, manifests, prune=True, previous_inventory=first.inventory)
    assert second.ok, [r.to_dict() for r in second.results]
    uid2 = backend.get("batch/v1", "Job", "migrate", backend.namespace)["metadata"]["uid"]  # type: ignore[index]
    assert uid1 != uid2  # deleted before being created again
    added = observer.all("ADDED", "Job", "migrate")
    assert len(added) == 2 and added[0] < observer.first("DELETED", "Job", "migrate") < added[1]
    reports = [n for n in _live_names(backend, "batch/v1", "Job") if n.startswith("report-")]
    runs = [n for n in _live_names(backend, "v1", "ConfigMap") if n.startswith("run-")]
    assert len(reports) == 2 and len(runs) == 2  # server-assigned names, one more per sync, never pruned
    gen = [r for r in second.results if r.step.get("generated")]
    assert {r.message for r in gen} == {"created (generated name)"}
    assert {r.ref.name for r in gen} <= {*reports, *runs}
    assert [r["name"] for r in second.inventory] == ["app"]
    assert not [r for r in second.results if r.action == "deleted"]


def test_helm_hooks_by_weight_install_then_upgrade_with_delete_policies(
    backend: Backend, observer: Observer
) -> None:
    def helm(obj: dict[str, Any], hook: str, weight: int, policy: str = "") -> dict[str, Any]:
        notes = obj["metadata"].setdefault("annotations", {})
        notes.update({"helm.sh/hook": hook, "helm.sh/hook-weight": str(weight)})
        if policy:
            notes["helm.sh/hook-delete-policy"] = policy
        return obj

    manifests = [
        config_map("release-config"),
        helm(job("db-init"), "pre-install", 5, "hook-succeeded"),
        helm(config_map("pre-settings"), "pre-install,pre-upgrade", -5),
        helm(job("db-migrate"), "pre-upgrade", 0, "before-hook-creation,hook-succeeded"),
        helm(job("notify"), "post-install,post-upgrade", 1),
    ]
    install = _sync(backend, manifests)
    assert install.ok, [r.to_dict() for r in install.results]
    assert observer.added(4) == ["ConfigMap/pre-settings", "Job/db-init", "ConfigMap/release-config",
                                "Job/notify"]
    assert install.result("Job", "db-migrate").action == "skipped"
    assert install.result("Job", "db-migrate").message == "Helm hook not run on an install"
    assert "deleted (HookSucceeded)" in install.result("Job", "db-init").message
    with backend.connector() as kube:
        plan = kube.plan(manifests, mapping="hooks", default_namespace=backend.namespace)
    assert plan.helm_operation == "upgrade"
    assert [(s["phase"], s["wave"], s["objects"]) for s in plan.to_dict()["steps"]] == [
        ("PreSync", -5, [f"ConfigMap {backend.namespace}/pre-settings"]),
        ("PreSync", 0, [f"Job.batch {backend.namespace}/db-migrate"]),
        ("Sync", 0, [f"ConfigMap {backend.namespace}/release-config"]),
        ("PostSync", 1, [f"Job.batch {backend.namespace}/notify"]),
    ]
    upgrade = _sync(backend, manifests, previous_inventory=install.inventory)
    assert upgrade.ok, [r.to_dict() for r in upgrade.results]
    assert upgrade.result("Job", "db-init").action == "skipped"
    later = [a.split("/") for a in observer.added(7)[4:]]
    assert [f"{k}/{n}" for k, n in later] == ["ConfigMap/pre-settings", "Job/db-migrate",
                                                  "Job/notify"]
    assert _live_names(backend, "batch/v1", "Job") == ["notify"]  # hook-succeeded removed the others


def test_plan_shows_steps_hooks_and_generated_names_as_creates(backend: Backend) -> None:
    manifests = [
        config_map("app", wave=2),
        job(generate="migrate-", **{ARGO_HOOK: "PreSync", ARGO_POLICY: "HookSucceeded,HookFailed"}),
        config_map("ignored", **{ARGO_HOOK: "Skip"}),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "once-"}, "data": {"a": "b"}},
    ]
    with backend.connector() as kube:
        plan = kube.plan(manifests, mapping="hooks", default_namespace=backend.namespace)
    assert plan.ok, plan.to_dict()
    data = plan.to_dict()
    ns = backend.namespace
    assert data["steps"] == [
        {"phase": "PreSync", "wave": 0, "objects": [f"Job.batch {ns}/migrate-"], "hooks": 1},
        {"phase": "Sync", "wave": 0, "objects": [f"ConfigMap {ns}/once-"]},
        {"phase": "Sync", "wave": 2, "objects": [f"ConfigMap {ns}/app"]},
    ]
    migrate = plan.item("Job", "migrate-")
    assert migrate.action == "create"
    assert migrate.message == ("PreSync hook (Argo CD), wave 0, create (generated name); created on every "
                               "sync; delete policy HookSucceeded, HookFailed")
    assert "+  generateName: migrate-" in migrate.diff
    assert plan.item("ConfigMap", "once-").message == "Sync, wave 0, create (generated name)"
    assert plan.item("ConfigMap", "ignored").action == "unchanged"
    assert plan.item("ConfigMap", "ignored").message == "Skip hook: not applied"
    # nothing was created by the plan
    assert not [n for n in _live_names(backend, "v1", "ConfigMap") if n != "kube-root-ca.crt"]


def test_the_plan_has_the_shape_the_api_schema_publishes(backend: Backend) -> None:
    """A leg's plan (ClusterSync.plan in the API) with every kind of step: Namespaces first, a hook with its
    delete policies, waves, a server-named object and a prune, checked against the published schema."""
    import jsonschema
    from drf_spectacular.generators import SchemaGenerator

    first = _sync(backend, [config_map("old")])
    assert first.ok, [r.to_dict() for r in first.results]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{backend.namespace}-extra"}}
    manifests = [
        namespace,
        config_map("app", wave=2),
        job(generate="migrate-", **{ARGO_HOOK: "PreSync", ARGO_POLICY: "HookSucceeded"}),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "once-"}, "data": {"a": "b"}},
    ]
    with backend.connector() as kube:
        plan = kube.plan(manifests, mapping="hooks", default_namespace=backend.namespace,
                         previous_inventory=first.inventory)
    data = json.loads(json.dumps(plan.to_dict()))
    assert [(s["phase"], s["wave"], s.get("first", False), s.get("prune", False)) for s in data["steps"]] == [
        ("Sync", None, True, False), ("PreSync", 0, False, False), ("Sync", 0, False, False),
        ("Sync", 2, False, False), ("Sync", None, False, True)]

    document = SchemaGenerator().get_schema(request=None, public=True)
    components = json.loads(json.dumps(document, default=str))["components"]
    plan_schema = {"$ref": "#/components/schemas/Plan", "components": components}
    validator = jsonschema.Draft202012Validator(plan_schema)
    validator.validate(data)
    validator.validate({})  # a leg not planned yet
    validator.validate({"error": "ApiException: (500)", "items": [], "counts": {}})
    # what the schema refuses, a client may rely on never getting
    bad = {**data, "steps": [{**data["steps"][1], "phase": "Later"}]}
    assert not validator.is_valid(bad)
    sync = components["schemas"]["ClusterSync"]["properties"]["plan"]
    assert sync["allOf"] == [{"$ref": "#/components/schemas/Plan"}]


def test_a_bad_wave_fails_before_anything_is_applied(backend: Backend) -> None:
    result = _sync(backend, [config_map("a"), config_map("b", **{WAVE: "first"})])
    assert not result.ok
    assert result.result("ConfigMap", "b").message == (
        "argocd.argoproj.io/sync-wave must be an integer, not 'first'; nothing was applied")
    assert backend.get("v1", "ConfigMap", "a", backend.namespace) is None


def test_generated_names_are_assigned_by_the_server_and_a_long_prefix_is_cut(backend: Backend) -> None:
    prefix = "a-very-long-generate-name-prefix-" * 3  # 99 characters: the server keeps 58 of them
    result = _sync(backend, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": prefix},
                              "data": {"a": "b"}}])
    assert result.ok, [r.to_dict() for r in result.results]
    name = result.results[0].ref.name
    assert len(name) == 63 and name.startswith(prefix[:58]) and name != prefix[:63]
    assert backend.get("v1", "ConfigMap", name, backend.namespace) is not None
    assert result.inventory == []


def test_an_object_that_became_a_hook_is_not_pruned_by_name(backend: Backend) -> None:
    first = _sync(backend, [config_map("settings"), config_map("app")], prune=True)
    assert first.ok
    second = _sync(backend, [config_map("settings", **{ARGO_HOOK: "PreSync"}), config_map("app")], prune=True,
                   previous_inventory=first.inventory)
    assert second.ok, [r.to_dict() for r in second.results]
    assert not [r for r in second.results if r.action == "deleted"]
    assert backend.get("v1", "ConfigMap", "settings", backend.namespace) is not None  # re-created as a hook
    assert [r["name"] for r in second.inventory] == ["app"]


def test_a_rendered_helm_chart_runs_its_weighted_hooks_install_then_upgrade(
    backend: Backend, observer: Observer, tmp_path: Any
) -> None:
    for rel, text in CHART.items():
        (tmp_path / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / rel).write_text(text)
    cluster = ClusterContext(name="c1", labels={}, group="g", repository="file:///repo", commit="c" * 40)
    rendered = render(SourceTree(tmp_path / "repo"), RenderRequest(path="chart", cluster=cluster,
                                                                   namespace=backend.namespace))
    manifests = [o.body for o in rendered.objects]
    install = _sync(backend, manifests)
    assert install.ok, [r.to_dict() for r in install.results]
    added = [a.split("/")[1] for a in observer.added(4)]
    assert [a[:-5] if "notify" in a else a for a in added] == [
        "shop-settings", "shop-db-init", "shop-app", "shop-notify-"]
    assert observer.first("MODIFIED", "Job", "shop-db-init", "Complete") < observer.first(
        "ADDED", "ConfigMap", "shop-app")
    upgrade = _sync(backend, manifests, previous_inventory=install.inventory)
    assert upgrade.ok, [r.to_dict() for r in upgrade.results]
    later = [a.split("/")[1] for a in observer.added(7)[4:]]
    assert [a[:-5] if "notify" in a else a for a in later] == ["shop-settings", "shop-db-migrate",
                                                               "shop-notify-"]
    jobs = _live_names(backend, "batch/v1", "Job")
    assert len(jobs) == 2 and all(j.startswith("shop-notify-") for j in jobs)  # hook-succeeded: the others
