"""One cluster's sync in its steps: Namespaces and CRDs first, then the phases (PreSync, Sync, PostSync) and
their waves in Argo CD's order, hooks created and waited for, prune after the Sync phase, SyncFail hooks
when the sync failed. ``Connector.apply`` and ``Connector.plan`` call these; the rules are in ``hooks``.

How a step runs (as Argo CD's gitops-engine does):

* its objects are applied (server-side apply), or created when they are hooks or named by the server
  (a named hook is deleted first under BeforeHookCreation, the default);
* when anything comes after it, or it holds hooks, the step waits until its objects are healthy (a hook Job
  until it completes or fails, with the connector's health checks), at most ``wave_timeout`` seconds;
* hooks are then deleted as their policies say (HookSucceeded, HookFailed);
* a step that failed (an object not applied, not healthy, a hook that failed) stops the sync: no later step
  runs (a failed PreSync hook: nothing of the Sync phase is applied, nothing is pruned), then the SyncFail
  hooks run. A failure in the last step leaves nothing to stop (the prune still runs, as before hooks).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from clusters.connector import hooks as h
from clusters.connector import objects as o
from clusters.connector.results import (
    CREATED,
    DEGRADED,
    FAILED,
    HEALTHY,
    SKIPPED,
    LiveState,
    ObjectResult,
    SyncResult,
)

if TYPE_CHECKING:
    from kubernetes.dynamic.resource import Resource

    from clusters.connector.connector import Connector, _Prepared


def ref_of(manifest: Any) -> o.ObjectRef:
    if not isinstance(manifest, dict):
        return o.ObjectRef("", "", "", "")
    ref = o.ObjectRef.of(manifest)
    gen = h.generate_name(manifest)
    return dataclasses.replace(ref, name=gen) if gen else ref


def classify_all(
    manifests: list[dict[str, Any]], install: bool
) -> tuple[list[tuple[h.Step, dict[str, Any]]], list[ObjectResult], list[ObjectResult]]:
    """(step, manifest) per step each manifest runs in; skipped objects; objects whose hook annotations
    cannot be read (failed)."""
    tasks: list[tuple[h.Step, dict[str, Any]]] = []
    skipped: list[ObjectResult] = []
    failed: list[ObjectResult] = []
    for manifest in manifests:
        if not isinstance(manifest, dict):
            tasks.append((h.Step(h.SYNC, 0), manifest))  # the apply refuses it with its reason
            continue
        try:
            steps = h.classify(manifest, install=install)
        except h.HookError as exc:
            failed.append(ObjectResult(ref_of(manifest), FAILED, f"{exc}; nothing was applied"))
            continue
        if not steps:
            if h.is_helm_hook(manifest) and not h.annotations_of(manifest).get(h.ARGO_HOOK):
                why, step = f"Helm hook not run on an {'install' if install else 'upgrade'}", {"hook": "helm"}
            else:  # argocd.argoproj.io/hook: Skip: never applied, but still in the source (never pruned)
                why, step = "Skip hook: not applied", {}
            skipped.append(ObjectResult(ref_of(manifest), SKIPPED, why, step=step))
            continue
        tasks.extend((step, manifest) for step in steps)
    return tasks, skipped, failed


def helm_install(conn: Connector, manifests: list[dict[str, Any]], default_namespace: str) -> bool:
    """Whether this sync is a Helm install: none of the release's objects (every object that is not a
    hook, nor named by the server) exists on the cluster yet; otherwise it is an upgrade."""
    for manifest in manifests:
        if not isinstance(manifest, dict) or h.created(manifest):
            continue
        try:
            o.check_manifest(manifest)
        except o.ManifestError:
            continue
        if h.generate_name(manifest):
            continue
        ref = o.ObjectRef.of(manifest)
        try:
            resource = conn.client.resource(ref.api_version, ref.kind)
        except ResourceNotFoundError:
            continue
        namespace = (ref.namespace or default_namespace) if resource.namespaced else ""
        if conn._get(resource, o.ObjectRef(ref.api_version, ref.kind, namespace, ref.name)) is not None:
            return False
    return True


def install_from_live(manifests: list[dict[str, Any]], live: Any) -> bool:
    """``helm_install`` from the live objects already read (``LiveState``)."""
    for lo in live.objects:
        manifest = manifests[lo.index] if lo.index < len(manifests) else {}
        if isinstance(manifest, dict) and not h.is_helm_hook(manifest) and lo.live is not None:
            return False
    return True


class SyncRun:
    """One apply: what ``Connector.apply`` does after the allow-list check."""

    def __init__(self, conn: Connector, *, mapping: str, default_namespace: str, force: bool, dry_run: bool,
                 crd_kinds: dict[tuple[str, str], bool], wave_timeout: float,
                 live: LiveState | None = None) -> None:
        self.conn, self.mapping, self.default_namespace = conn, mapping, default_namespace
        # the resource version of each object as read just before the apply (None: absent), by key: no LIST
        # for those; forgotten after the first wait or hook (the objects may have changed since)
        self.read: dict[tuple[str, str, str, str], str | None] | None = None
        if live is not None:
            self.read = {
                lo.ref.key: (str((lo.live.get("metadata") or {}).get("resourceVersion", "")) or None)
                if lo.live is not None else None
                for lo in live.objects
            }
        self.force, self.dry_run, self.crd_kinds = force, dry_run, crd_kinds
        self.wave_timeout = wave_timeout
        self.result = SyncResult(dry_run=dry_run)
        self.desired: list[o.ObjectRef] = []
        self.failed = False  # something failed: SyncFail hooks run
        self.stopped = ""  # why later steps did not run
        self.tasks: list[tuple[h.Step, dict[str, Any]]] = []

    # -- one step --------------------------------------------------------------------------------------
    def _prepare(self, batch: list[tuple[h.Step, dict[str, Any]]]) -> list[tuple[h.Step, _Prepared]]:
        prepared: list[tuple[h.Step, _Prepared]] = []
        for step, manifest in batch:
            item, failure = self.conn._prepare(manifest, self.mapping, self.default_namespace, self.crd_kinds)
            if failure is not None:
                failure.step = step.to_dict()
                self.result.results.append(failure)
                if failure.ref.name and failure.ref.kind and not step.created:
                    self.desired.append(failure.ref)
                continue
            if item is not None:
                prepared.append((step, item))
                if not step.created:
                    self.desired.append(item.ref)
        return prepared

    def run_step(
        self, batch: list[tuple[h.Step, dict[str, Any]]], *, wait: bool, first: bool = False
    ) -> bool:
        """Apply one step; wait for it when ``wait`` (or when it holds hooks). Whether it went well."""
        prepared = self._prepare(batch)
        ok = len(prepared) == len(batch)
        known: dict[tuple[str, str, str, str], str] = {}
        if not self.dry_run:
            read = self.read or {}
            known.update({k: rv for k, rv in read.items() if rv is not None})
            kinds = {(p.resource, p.ref.namespace) for s, p in prepared
                     if p.resource and not s.created and p.ref.key not in read}
            for resource, namespace in kinds:
                try:
                    known.update(self.conn._list_rvs(resource, namespace))
                except Exception:  # noqa: S112 - only used to tell "unchanged" from "configured"
                    continue
        done: list[tuple[h.Step, ObjectResult]] = []
        for step, item in prepared:
            if step.created:
                outcome = self._create(step, item)
            else:
                outcome = self.conn._apply_one(item, self.force, self.dry_run, known, self.result.observed)
                if not outcome.failed:
                    self.result.applied.append(item.body)
            outcome.step = {**step.to_dict(), **({"first": True} if first else {})}
            self.result.results.append(outcome)
            if outcome.failed:
                ok = False
            else:
                done.append((step, outcome))
        if first and not self.dry_run:
            ok = self._wait_crds(prepared) and ok
        hooks = [(s, r) for s, r in done if s.hook]
        if not self.dry_run and ok and (wait or hooks):
            ok = self._wait(done)
            self.read = None  # time passed: what was read before the apply is not this moment's state
        if hooks:
            # a hook ran (it may have changed anything): neither the read before the apply nor what earlier
            # answers showed healthy is trusted after it; later steps list, the final wait reads again
            self.read = None
            self.result.observed.clear()
        if not self.dry_run:
            self._delete_hooks(hooks)
        if not ok:
            self.failed = True
        return ok

    def _wait_crds(self, prepared: list[tuple[h.Step, _Prepared]]) -> bool:
        crds = [p.body for s, p in prepared if p.ref.kind == "CustomResourceDefinition"
                and not self.result.result("CustomResourceDefinition", p.ref.name).failed]
        if not crds:
            return True
        deadline = time.monotonic() + self.conn.options.crd_timeout
        for name, error in self.conn._wait_crds(crds, deadline).items():
            self.result.result("CustomResourceDefinition", name).message = error
        return True  # as before hooks: a CRD not yet served fails its custom resources, not the step

    def _wait(self, done: list[tuple[h.Step, ObjectResult]]) -> bool:
        if not done:
            return True
        report = self.conn.wait_healthy(
            [r.ref for _, r in done], timeout=self.wave_timeout, observed=self.result.observed
        )
        if report.state == HEALTHY:
            return True
        for health in report.objects:
            if health.state == HEALTHY:
                continue
            for step, outcome in done:
                if outcome.ref.key == health.ref.key:
                    what = "hook failed" if step.hook and health.state == DEGRADED else "not healthy"
                    if report.timed_out:
                        what += f" after {self.wave_timeout:g}s"
                    outcome.action = FAILED
                    outcome.message = (f"{what} ({h.describe(step)}): {health.reason} {health.message}"
                                       ).strip()
        return False

    # -- hooks and generated names ----------------------------------------------------------------------
    def _resource(self, item: _Prepared) -> tuple[Resource | None, str]:
        if item.resource is not None:
            return item.resource, ""
        try:
            item.resource = self.conn.client.resource(item.ref.api_version, item.ref.kind)
        except ResourceNotFoundError:
            return None, f"the server has no kind {item.ref.kind} in {item.ref.api_version}"
        except Exception as exc:
            return None, self.conn.client.failure(exc).message
        return item.resource, ""

    def _create(self, step: h.Step, item: _Prepared) -> ObjectResult:
        """Create a hook or an object named by the server (POST), never apply it by name."""
        resource, why = self._resource(item)
        if resource is None:
            return ObjectResult(item.ref, FAILED, why)
        client, dyn = self.conn.client, self.conn.client.dyn
        if not step.generated and not self.dry_run:
            live = self.conn._get(resource, item.ref)
            if live is not None:
                if h.BEFORE_HOOK_CREATION not in step.delete_policies:
                    return ObjectResult(item.ref, FAILED, "the hook exists from an earlier sync and its "
                                        "delete policy has no BeforeHookCreation: delete it or use "
                                        "generateName")
                if not o.owned_by(live, self.mapping, item.ref):
                    return ObjectResult(item.ref, FAILED, "an object of that name exists and is not this "
                                        "mapping's hook (tracking annotation): not replaced")
                failure = self._delete(resource, item.ref, live, wait_gone=True)
                if failure:
                    return ObjectResult(item.ref, FAILED, f"BeforeHookCreation: {failure}")
        body = item.body
        try:
            # never retried: a POST that reached the server and is sent again would create a second object
            resp = client.call(
                lambda: dyn.create(resource, body=body, namespace=item.ref.namespace or None,
                                   field_manager=o.MANAGER, dry_run="All" if self.dry_run else None,
                                   serialize=False),
                dataclasses.replace(client.options.retry, attempts=1),
            )
        except Exception as exc:
            failure = client.failure(exc)
            return ObjectResult(item.ref, FAILED, failure.message, failure.status)
        created = json.loads(resp.data)
        name = str((created.get("metadata") or {}).get("name") or item.ref.name)
        ref = dataclasses.replace(item.ref, name=name)
        message = "created (generated name)" if step.generated else "created"
        return ObjectResult(ref, CREATED, message, status=resp.status)

    def _delete(self, resource: Resource, ref: o.ObjectRef, live: dict[str, Any], wait_gone: bool) -> str:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                "preconditions": {"uid": (live.get("metadata") or {}).get("uid")}}
        dyn = self.conn.client.dyn
        try:
            self.conn.client.call(lambda: dyn.delete(resource, name=ref.name, namespace=ref.namespace or None,
                                                     body=body, serialize=False))
        except NotFoundError:
            return ""
        except Exception as exc:
            return str(self.conn.client.failure(exc).message)
        deadline = time.monotonic() + self.wave_timeout
        delay = 0.05
        while wait_gone and self.conn._get(resource, ref) is not None:
            if time.monotonic() > deadline:
                return f"the previous {ref.kind} {ref.name} was not gone after {self.wave_timeout:g}s"
            time.sleep(delay)
            delay = min(1.0, delay * 2)
        return ""

    def _delete_hooks(self, hooks: list[tuple[h.Step, ObjectResult]]) -> None:
        for step, outcome in hooks:
            policy = h.HOOK_FAILED if outcome.failed else h.HOOK_SUCCEEDED
            if policy not in step.delete_policies:
                continue
            try:
                resource = self.conn.client.resource(outcome.ref.api_version, outcome.ref.kind)
                live = self.conn._get(resource, outcome.ref)
            except Exception as exc:
                outcome.message += f"; {policy}: not deleted: {self.conn.client.failure(exc).message}"
                continue
            failure = self._delete(resource, outcome.ref, live, wait_gone=False) if live is not None else ""
            outcome.message += f"; {policy}: not deleted: {failure}" if failure else f"; deleted ({policy})"

    # -- the whole sync ---------------------------------------------------------------------------------
    def run(self, tasks: list[tuple[h.Step, dict[str, Any]]], prune: Any) -> None:
        """Every step in order, ``prune()`` after the Sync phase, SyncFail hooks when something failed."""
        self.tasks = tasks

        ordered = plan_order(tasks)
        first = [(s, m) for s, m, f in ordered if f]
        rest = [(s, m) for s, m, f in ordered if not f and s.phase != h.SYNC_FAIL]
        sync_fail = [(s, m) for s, m, f in ordered if s.phase == h.SYNC_FAIL]
        groups = _groups(rest)
        if first:
            if not self.run_step(first, wait=False, first=True) and groups:
                self.stopped = "Namespaces or CRDs failed"
        pruned = False
        for index, (key, batch) in enumerate(groups):
            if self.stopped:
                self._not_run(batch)
                continue
            if key[0] > 0 and not pruned:  # PostSync: after the Sync phase and its prune
                pruned = True
                prune()
            later = index + 1 < len(groups)
            if not self.run_step(batch, wait=later) and later:
                self.stopped = f"{batch[0][0].phase} wave {batch[0][0].wave} failed"
        if not pruned and not self.stopped:
            prune()
        if self.failed and sync_fail and not self.dry_run:
            for _key, batch in _groups(sync_fail):
                self.run_step(batch, wait=False)
            self.failed = True

    def hook_keys(self) -> set[tuple[str, str, str, str]]:
        """The keys of the named hooks of this sync (created, never pruned by name)."""
        return {self.resolve(ref_of(m)).key for s, m in self.tasks if s.hook and not s.generated}

    def resolve(self, ref: o.ObjectRef) -> o.ObjectRef:
        """``ref`` with the namespace the apply would give it (the default one, or none: cluster-scoped)."""
        try:
            namespaced = bool(self.conn.client.resource(ref.api_version, ref.kind).namespaced)
        except Exception:
            namespaced = self.crd_kinds.get((ref.group, ref.kind), True)
        namespace = (ref.namespace or self.default_namespace) if namespaced else ""
        return dataclasses.replace(ref, namespace=namespace)

    def _not_run(self, batch: list[tuple[h.Step, dict[str, Any]]]) -> None:
        for step, manifest in batch:
            ref = ref_of(manifest)
            if not step.created and ref.name:
                ref = self.resolve(ref)
                self.desired.append(ref)  # still ours: kept in the inventory, never pruned for this
            self.result.results.append(ObjectResult(
                ref, SKIPPED, f"not run: the sync stopped ({self.stopped})", step=step.to_dict()))


def plan_order(tasks: list[tuple[h.Step, dict[str, Any]]]
               ) -> list[tuple[h.Step, dict[str, Any], bool]]:
    """The tasks in the order ``SyncRun.run`` runs them: (step, manifest, applied first); SyncFail last."""
    def first_kind(step: h.Step, m: Any) -> bool:
        return not step.created and isinstance(m, dict) and m.get("kind") in o.FIRST_KINDS

    first = sorted(((s, m) for s, m in tasks if first_kind(s, m)),
                   key=lambda t: (o.rank(t[1]), t[0].wave, str(ref_of(t[1]).name)))
    rest = [(s, m) for s, m in tasks if not first_kind(s, m)]
    out = [(s, m, True) for s, m in first]
    for _key, batch in _groups(rest):
        out.extend((s, m, False) for s, m in batch)
    return out


def _groups(tasks: Iterable[tuple[h.Step, dict[str, Any]]]
            ) -> list[tuple[tuple[int, int], list[tuple[h.Step, dict[str, Any]]]]]:
    """Tasks by (phase, wave) in Argo CD's order; within a group by kind, then name."""
    out: dict[tuple[int, int], list[tuple[h.Step, dict[str, Any]]]] = {}
    for step, manifest in tasks:
        out.setdefault(step.order, []).append((step, manifest))
    for batch in out.values():
        batch.sort(key=lambda t: (h.kind_rank(str(t[1].get("kind", "")) if isinstance(t[1], dict) else ""),
                                  ref_of(t[1]).name))
    return sorted(out.items())


__all__ = ["SyncRun", "classify_all", "helm_install", "install_from_live"]
