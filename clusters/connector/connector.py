"""The Kubernetes connector: connectivity, ordered server-side apply, prune, plan, health and drift.

One ``Connector`` talks to one cluster through the official ``kubernetes`` client. It knows nothing of
Django: it takes ``ClusterCredentials`` and plain manifests (dicts) and returns plain results.
"""

from __future__ import annotations

import difflib
import json
import random
import time
from collections.abc import Iterable
from typing import Any

import yaml
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError
from kubernetes.dynamic.resource import Resource

from clusters import allowlist
from clusters.connector import discovery, hooks, ordered
from clusters.connector import objects as o
from clusters.connector.client import ConnectorOptions, KubeClient
from clusters.connector.credentials import ClusterCredentials
from clusters.connector.drift import changed_fields
from clusters.connector.errors import ConnectorError
from clusters.connector.health import assess, overall
from clusters.connector.results import (
    CONFIGURED,
    CONFLICT,
    CREATE,
    CREATED,
    DEGRADED,
    DELETE,
    DELETED,
    ERROR,
    FAILED,
    HEALTHY,
    NOOP,
    SKIPPED,
    UNCHANGED,
    UPDATE,
    Connectivity,
    DriftReport,
    HealthReport,
    LiveObject,
    LiveState,
    ObjectDrift,
    ObjectHealth,
    ObjectResult,
    Plan,
    PlanItem,
    SyncResult,
)

CRD_API = "apiextensions.k8s.io/v1"
# read_live reads this many or more objects of one kind in one namespace with one LIST instead of GETs
LIST_READ_THRESHOLD = 4
# Only metadata is read from lists: ask for PartialObjectMetadataList, accept a full list otherwise.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
RefLike = o.ObjectRef | dict[str, Any]


def _ref(value: RefLike) -> o.ObjectRef:
    if isinstance(value, o.ObjectRef):
        return value
    if "metadata" in value:
        return o.ObjectRef.of(value)
    return o.ObjectRef.from_dict(value)


def _yaml(obj: dict[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def _path(ref: o.ObjectRef) -> str:
    return f"{ref.group or 'core'}/{ref.version}/{ref.kind}/{ref.namespace or '_'}/{ref.name}"


class _Prepared:
    """One manifest ready to apply: its reference, API resource and tracked body."""

    __slots__ = ("body", "ref", "resource")

    def __init__(self, ref: o.ObjectRef, resource: Resource | None, body: dict[str, Any]) -> None:
        self.ref, self.resource, self.body = ref, resource, body


def _items(resource: Resource, body: Any) -> list[dict[str, Any]]:
    """A LIST's objects, each with its apiVersion and kind (a list's items carry none). A list of another
    kind, or an item of another kind, is refused: discovery named another kind's resource for this one (a
    server's discovery that lied, shared by server version: discovery.py), and one object is never taken
    for another. A custom resource's list may have its own ``listKind``: only its items are checked."""
    if not isinstance(body, dict) or not isinstance(body.get("items") or [], list):
        raise ConnectorError(f"{resource.kind}: the server answered with no list at {resource.path()}")
    listed = body.get("kind")
    if listed not in (None, resource.kind + "List") and discovery.builtin_group(resource.group):
        raise ConnectorError(f"{resource.kind}: the server answered with a {listed} at {resource.path()}")
    items = [item for item in body.get("items") or [] if isinstance(item, dict)]
    for item in items:
        if item.setdefault("kind", resource.kind) != resource.kind:
            raise ConnectorError(
                f"{resource.kind}: the server answered with a {item['kind']} at {resource.path()}"
            )
        item.setdefault("apiVersion", resource.group_version)
    return items


class Connector:
    """Operations on one cluster. Use as a context manager (or call ``close()``). One connector serves one
    thread at a time; to work on many clusters at once, use one connector per cluster (and thread)."""

    def __init__(self, credentials: ClusterCredentials, options: ConnectorOptions | None = None) -> None:
        self.client = KubeClient(credentials, options)
        self.options = self.client.options

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @property
    def retries(self) -> int:
        """Transient failures retried so far."""
        return self.client.retries

    # -- connectivity ------------------------------------------------------------------------------
    def check(self) -> Connectivity:
        """Reachable? Which version? (``/version`` and the authenticated ``/apis`` discovery document.)"""
        try:
            info = self.client.version()
        except Exception as exc:
            return Connectivity(False, error=self.client.failure(exc).message)
        return Connectivity(
            True, version=str(info.get("gitVersion") or ""), platform=str(info["platform"] or "")
        )

    # -- reading ------------------------------------------------------------------------------------
    def _get(self, resource: Resource, ref: o.ObjectRef) -> dict[str, Any] | None:
        dyn = self.client.dyn
        try:
            found = self.client.call(lambda: dyn.get_or_none(resource, ref.name, ref.namespace or None))
        except NotFoundError:
            return None
        if found is not None and not isinstance(found, dict):
            raise ConnectorError(
                f"{ref.kind} {ref.name}: the server answered with no object at {resource.path()}"
            )
        if found is not None and found.get("kind") not in (None, resource.kind):
            # discovery named another kind's resource for this one (a server's discovery that lied, shared by
            # version: discovery.py): never take one object for another
            raise ConnectorError(
                f"{ref.kind} {ref.name}: the server answered with a {found.get('kind')} at {resource.path()}"
            )
        return found

    def get(self, ref: RefLike) -> dict[str, Any] | None:
        """The live object, or None when it (or its kind) does not exist."""
        r = _ref(ref)
        try:
            resource = self.client.resource(r.api_version, r.kind)
        except ResourceNotFoundError:
            return None
        return self._get(resource, r)

    def read_params(
        self, api_version: str, kind: str, namespace: str, name: str, label_selector: str | None
    ) -> list[dict[str, Any]]:
        """The objects a ValidatingAdmissionPolicy binding's ``paramRef`` names, as the API server finds
        them: the kind resolved by discovery; one GET by ``name`` (in ``namespace`` when the kind is
        namespaced), else one LIST with ``label_selector`` (in ``namespace``, or every namespace when it is
        empty). A kind not served, or an object absent (404), is an empty list; any other failure raises."""
        try:
            resource = self.client.resource(api_version, kind)
        except ResourceNotFoundError:
            return []
        namespace = namespace if resource.namespaced else ""
        if name and name != "*":
            if resource.namespaced and not namespace:
                return []  # a namespaced kind has no object outside a namespace
            found = self._get(resource, o.ObjectRef(api_version, kind, namespace, name))
            return [found] if found is not None else []
        dyn = self.client.dyn
        resp = self.client.call(
            lambda: dyn.get(
                resource, namespace=namespace or None, label_selector=label_selector or None, serialize=False
            )
        )
        return _items(resource, json.loads(resp.data))

    def _list_full(self, resource: Resource, namespace: str) -> dict[str, dict[str, Any]]:
        """Every object of ``resource`` in ``namespace`` by name, as a GET would return it (a list's items
        carry no apiVersion and kind: they are set)."""
        dyn = self.client.dyn
        resp = self.client.call(lambda: dyn.get(resource, namespace=namespace or None, serialize=False))
        items = _items(resource, json.loads(resp.data))
        return {str((item.get("metadata") or {}).get("name", "")): item for item in items}

    def _list_rvs(self, resource: Resource, namespace: str) -> dict[tuple[str, str, str, str], str]:
        dyn = self.client.dyn
        selector = f"{o.MANAGED_BY_LABEL}={o.MANAGED_BY_VALUE}"
        resp = self.client.call(
            lambda: dyn.get(
                resource,
                namespace=namespace or None,
                label_selector=selector,
                serialize=False,
                header_params={"Accept": METADATA_ONLY},
            )
        )
        out = {}
        for item in json.loads(resp.data).get("items") or []:
            meta = item.get("metadata") or {}
            key = (resource.group, resource.kind, meta.get("namespace") or "", meta.get("name", ""))
            out[key] = str(meta.get("resourceVersion", ""))
        return out

    # -- preparing manifests ------------------------------------------------------------------------
    @staticmethod
    def _crd_kinds(manifests: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
        """(group, kind) -> namespaced, for CRDs in the batch."""
        out = {}
        for m in manifests:
            if isinstance(m, dict) and m.get("kind") == "CustomResourceDefinition":
                spec = m.get("spec") or {}
                kind = (spec.get("names") or {}).get("kind")
                if spec.get("group") and kind:
                    out[(spec["group"], kind)] = spec.get("scope", "Namespaced") == "Namespaced"
        return out

    def _prepare(
        self,
        manifest: dict[str, Any],
        mapping: str,
        default_namespace: str,
        crd_kinds: dict[tuple[str, str], bool],
    ) -> tuple[_Prepared | None, ObjectResult | None]:
        """Resolve the kind, set the namespace, add tracking; or a failed result saying why."""
        try:
            o.check_manifest(manifest)
        except o.ManifestError as exc:
            ref = o.ObjectRef(
                str(manifest.get("apiVersion", "")) if isinstance(manifest, dict) else "",
                str(manifest.get("kind", "")) if isinstance(manifest, dict) else "",
                "",
                str(((manifest.get("metadata") or {}) if isinstance(manifest, dict) else {}).get("name", "")),
            )
            return None, ObjectResult(ref, FAILED, str(exc))
        given = o.ObjectRef.of(manifest)
        resource: Resource | None
        try:
            resource = self.client.resource(given.api_version, given.kind)
            namespaced = bool(resource.namespaced)
        except ResourceNotFoundError:
            if (given.group, given.kind) not in crd_kinds:
                return None, ObjectResult(
                    given, FAILED, f"the server has no kind {given.kind} in {given.api_version}"
                )
            resource, namespaced = None, crd_kinds[(given.group, given.kind)]
        except Exception as exc:
            failure = self.client.failure(exc)
            return None, ObjectResult(given, FAILED, failure.message, failure.status)
        namespace = (given.namespace or default_namespace) if namespaced else ""
        ref = o.ObjectRef(given.api_version, given.kind, namespace, given.name)
        return _Prepared(ref, resource, o.with_tracking(manifest, mapping, ref)), None

    def _scope_refusals(
        self,
        manifests: list[dict[str, Any]],
        crd_kinds: dict[tuple[str, str], bool],
        rules: allowlist.Rules,
        default_namespace: str,
    ) -> list[ObjectResult]:
        """The objects a restricted group's allow-list refuses once the cluster's discovery says their kind
        is cluster-scoped (a kind of a CRD already installed on the cluster, which the render could not
        know), failed; also a kind whose scope discovery cannot tell (fail closed)."""
        refused = []
        for manifest in manifests:
            if not isinstance(manifest, dict) or not manifest.get("kind") or not manifest.get("apiVersion"):
                continue  # _prepare reports it
            given = o.ObjectRef.of(manifest)
            try:
                namespaced = bool(self.client.resource(given.api_version, given.kind).namespaced)
            except ResourceNotFoundError:
                namespaced = crd_kinds.get((given.group, given.kind), True)  # else _prepare fails it
            except Exception as exc:
                failure = self.client.failure(exc)
                refused.append(ObjectResult(
                    given, FAILED, f"the scope of kind {given.kind} is unknown, so the tenant allow-list "
                    f"of cluster group {rules.group!r} cannot be checked: {failure.message}; nothing was "
                    "applied",
                    failure.status,
                ))
                continue
            if namespaced:
                continue
            why = allowlist.object_refusal(
                rules,
                {"apiVersion": given.api_version, "kind": given.kind, "name": given.name, "namespace": None,
                 "cluster_scoped": True},
                default_namespace,
            )
            if why:
                ref = o.ObjectRef(given.api_version, given.kind, "", given.name)
                refused.append(ObjectResult(
                    ref, FAILED, f"not allowed: {why} (the cluster serves {given.kind} as a cluster-scoped "
                    "kind); nothing of this mapping was applied",
                ))
        return refused

    # -- apply ---------------------------------------------------------------------------------------
    def _ssa(
        self, resource: Resource, body: dict[str, Any], ref: o.ObjectRef, force: bool, dry_run: bool
    ) -> Any:
        dyn = self.client.dyn
        return self.client.call(
            lambda: dyn.server_side_apply(
                resource,
                body=body,
                namespace=ref.namespace or None,
                field_manager=o.MANAGER,
                force_conflicts="true" if force else None,
                dry_run="All" if dry_run else None,
                serialize=False,
            )
        )

    def _apply_one(
        self,
        item: _Prepared,
        force: bool,
        dry_run: bool,
        known: dict[tuple[str, str, str, str], str],
        observed: dict[tuple[str, str, str, str], ObjectHealth] | None = None,
    ) -> ObjectResult:
        if item.resource is None:
            try:
                item.resource = self.client.resource(item.ref.api_version, item.ref.kind)
            except ResourceNotFoundError:
                return ObjectResult(
                    item.ref, FAILED, f"the server has no kind {item.ref.kind} in {item.ref.api_version}"
                )
            except Exception as exc:
                failure = self.client.failure(exc)
                return ObjectResult(item.ref, FAILED, failure.message, failure.status)
        try:
            resp = self._ssa(item.resource, item.body, item.ref, force, dry_run)
        except Exception as exc:
            failure = self.client.failure(exc)
            if failure.conflicts:
                managers = sorted({c.manager for c in failure.conflicts})
                message = (
                    f"{failure.message} (owned by field manager {', '.join(managers)}; "
                    "apply with force to take these fields over)"
                )
                return ObjectResult(item.ref, FAILED, message, failure.status, failure.conflicts)
            return ObjectResult(item.ref, FAILED, failure.message, failure.status)
        live = json.loads(resp.data)
        if observed is not None and not dry_run and isinstance(live, dict):
            observed[item.ref.key] = assess(item.ref, live)  # the object as the server has it now
        if resp.status == 201:
            return ObjectResult(item.ref, CREATED, status=201)
        rv = str((live.get("metadata") or {}).get("resourceVersion", ""))
        before = known.get(item.ref.key)
        action = UNCHANGED if before is not None and before == rv else CONFIGURED
        return ObjectResult(item.ref, action, status=resp.status)

    def _wait_crds(self, crds: list[dict[str, Any]], deadline: float) -> dict[str, str]:
        """Wait until each CRD is Established and discovery serves its kind; return {crd name: error}."""
        problems: dict[str, str] = {}
        try:
            crd_resource = self.client.resource(CRD_API, "CustomResourceDefinition")
        except Exception as exc:
            return {c["metadata"]["name"]: self.client.failure(exc).message for c in crds}
        for crd in crds:
            name = crd["metadata"]["name"]
            spec = crd.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind", "")
            versions = [v["name"] for v in spec.get("versions") or [] if v.get("served", True)]
            delay = 0.05
            while True:
                error = ""
                live = self._get(crd_resource, o.ObjectRef(CRD_API, "CustomResourceDefinition", "", name))
                conds = {c.get("type"): c for c in ((live or {}).get("status") or {}).get("conditions") or []}
                established = (conds.get("Established") or {}).get("status") == "True"
                if not established:
                    error = f"CRD {name} is not Established"
                else:
                    for version in versions:
                        try:
                            self.client.resource(f"{spec['group']}/{version}", kind)
                        except ResourceNotFoundError:
                            error = f"discovery does not serve {kind} in {spec['group']}/{version} yet"
                            break
                if not error:
                    break
                if time.monotonic() > deadline:
                    problems[name] = error
                    break
                time.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311
                delay = min(1.0, delay * 2)
        return problems

    def apply(
        self,
        manifests: Iterable[dict[str, Any]],
        *,
        mapping: str,
        default_namespace: str = "default",
        force: bool = False,
        prune: bool = False,
        previous_inventory: Iterable[RefLike] = (),
        dry_run: bool = False,
        prune_cascading: bool = False,
        restrict: allowlist.Rules | None = None,
        wave_timeout: float | None = None,
        live: LiveState | None = None,
    ) -> SyncResult:
        """Server-side apply ``manifests`` as field manager ``fleetgate``, Namespaces and CRDs first.

        ``force=False`` reports fields owned by another manager as a failed object (with the conflicts);
        ``force=True`` takes them over. With ``prune=True``, objects of ``previous_inventory`` that are
        no longer in ``manifests`` are deleted, but only those that still carry this mapping's tracking
        annotation and have not opted out (``fleetgate.io/prune: disabled`` or Argo's ``Prune=false``);
        Namespaces and CRDs only with ``prune_cascading=True``.
        ``restrict``: the allow-list of a restricted cluster group; an object whose kind the cluster serves
        as cluster-scoped and the list does not allow fails, and then nothing is applied or pruned.
        The returned ``inventory`` is what the caller stores for the next sync. ``live``: these manifests'
        live state as ``read_live`` read it just before (a sync's re-review): the objects' resource versions
        come from it instead of a LIST per kind and namespace (they tell "unchanged" from "configured").

        Objects run in their sync steps (``ordered``, rules in ``hooks``): Namespaces and CRDs first, then
        the PreSync, Sync and PostSync phases wave by wave, each step waiting (``wave_timeout`` seconds at
        most; the CRD timeout when None) for the health of the one before; hooks and objects named by the
        server are created, never in the inventory or ``applied``; a failed step stops the later ones and
        runs the SyncFail hooks.
        """
        manifests = list(manifests)
        previous = [_ref(r) for r in previous_inventory]
        crd_kinds = self._crd_kinds(manifests)
        if restrict is not None:
            refused = self._scope_refusals(manifests, crd_kinds, restrict, default_namespace)
            if refused:
                result = SyncResult(dry_run=dry_run)
                result.results.extend(refused)
                result.inventory = list({r.key: r.to_dict() for r in previous}.values())
                return result
        install = True
        if hooks.uses_helm_hooks(m for m in manifests if isinstance(m, dict)):
            install = ordered.helm_install(self, manifests, default_namespace)
        tasks, skipped, unreadable = ordered.classify_all(manifests, install)
        if unreadable:  # the order cannot be known: nothing is applied
            result = SyncResult(dry_run=dry_run)
            result.results.extend(unreadable)
            result.inventory = list({r.key: r.to_dict() for r in previous}.values())
            return result
        run = ordered.SyncRun(self, mapping=mapping, default_namespace=default_namespace, force=force,
                              dry_run=dry_run, crd_kinds=crd_kinds, live=live,
                              wave_timeout=self.options.crd_timeout if wave_timeout is None else wave_timeout)
        result = run.result
        result.results.extend(skipped)
        # skipped objects are not pruned for it (Argo CD's Skip)
        run.desired.extend(run.resolve(r.ref) for r in skipped if r.ref.name and not r.step.get("hook"))
        pruned: list[ObjectResult] = []
        ran = [False]

        def prune_now() -> None:
            ran[0] = True
            if prune:
                # a named hook is never pruned by name, even one that was an ordinary object before
                desired_keys = {r.key for r in run.desired} | run.hook_keys()
                leftovers = [r for r in previous if r.key not in desired_keys]
                pruned.extend(self._prune(leftovers, mapping, dry_run, prune_cascading))
                result.results.extend(pruned)

        run.run(tasks, prune_now)
        desired_keys = {r.key for r in run.desired} | run.hook_keys()
        leftovers = [r for r in previous if r.key not in desired_keys]
        kept: list[o.ObjectRef] = []
        if prune and ran[0]:
            # still ours: a failed delete (retried next time), a namespace or CRD kept by policy
            kept = [outcome.ref for outcome in pruned if outcome.action == FAILED or outcome.kept]
        else:
            kept = leftovers
        seen: set[tuple[str, str, str, str]] = set()
        for ref in [*run.desired, *kept]:
            if ref.key not in seen:
                seen.add(ref.key)
                result.inventory.append(ref.to_dict())
        return result

    # -- prune ---------------------------------------------------------------------------------------
    def prune_candidates(
        self, leftovers: Iterable[RefLike], mapping: str, cascading: bool = False
    ) -> list[tuple[o.ObjectRef, Resource | None, dict[str, Any] | None, str]]:
        """(ref, resource, live object, why not) for each leftover; an empty reason means: delete it.

        Namespaces and CRDs are kept unless ``cascading``: deleting one deletes everything in it (every
        custom resource of a CRD), objects Fleetgate does not own included."""
        out: list[tuple[o.ObjectRef, Resource | None, dict[str, Any] | None, str]] = []
        refs = sorted((_ref(r) for r in leftovers), key=lambda r: o.rank({"kind": r.kind}), reverse=True)
        for ref in refs:
            try:
                resource = self.client.resource(ref.api_version, ref.kind)
            except ResourceNotFoundError:
                out.append((ref, None, None, "already absent (the kind is no longer served)"))
                continue
            live = self._get(resource, ref)
            if live is None:
                out.append((ref, resource, None, "already absent"))
            elif not o.owned_by(live, mapping, ref):
                out.append(
                    (ref, resource, live, "not pruned: not owned by this mapping (tracking annotation)")
                )
            elif o.prune_disabled(live):
                out.append((ref, resource, live, "not pruned: pruning disabled by annotation"))
            elif ref.kind in o.CASCADING_KINDS and not cascading:
                why = (
                    f"not pruned: deleting a {ref.kind} deletes what it holds; prune it with prune_cascading"
                )
                out.append((ref, resource, live, why))
            else:
                out.append((ref, resource, live, ""))
        return out

    def _prune(
        self, leftovers: list[o.ObjectRef], mapping: str, dry_run: bool, cascading: bool
    ) -> list[ObjectResult]:
        results: list[ObjectResult] = []
        try:
            candidates = self.prune_candidates(leftovers, mapping, cascading)
        except Exception as exc:
            message = self.client.failure(exc).message
            return [ObjectResult(r, FAILED, f"prune: {message}") for r in leftovers]
        dyn = self.client.dyn
        for ref, resource, live, why in candidates:
            if why:
                kept = ref.kind in o.CASCADING_KINDS and "prune_cascading" in why
                results.append(ObjectResult(ref, SKIPPED, why, kept=kept))
                continue
            if resource is None or live is None:
                continue
            body = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "propagationPolicy": "Background",
                "preconditions": {"uid": live["metadata"].get("uid")},
            }
            if dry_run:
                body["dryRun"] = ["All"]
            try:
                self.client.call(
                    lambda resource=resource, ref=ref, body=body: dyn.delete(
                        resource, name=ref.name, namespace=ref.namespace or None, body=body, serialize=False
                    )
                )
            except NotFoundError:
                results.append(ObjectResult(ref, SKIPPED, "already absent"))
                continue
            except Exception as exc:
                results.append(ObjectResult(ref, FAILED, self.client.failure(exc).message))
                continue
            results.append(ObjectResult(ref, DELETED, "pruned: no longer in the source"))
        return results

    # -- live state ------------------------------------------------------------------------------------
    def read_live(
        self,
        manifests: Iterable[dict[str, Any]],
        *,
        mapping: str,
        default_namespace: str = "default",
        previous_inventory: Iterable[RefLike] = (),
        prune: bool = True,
        prune_cascading: bool = False,
    ) -> LiveState:
        """The live object of each manifest (None when absent or its kind is not served) and what a sync
        would prune (the plan's prune candidates), without writing anything. Objects are read with one GET
        each, or one LIST per kind and namespace that holds ``LIST_READ_THRESHOLD`` or more of them.

        A manifest that is not a valid object is left out (the apply refuses it). Any failure to read
        (unreachable, forbidden, 5xx) raises: the caller cannot know what the cluster holds."""
        manifests = list(manifests)
        crd_kinds = self._crd_kinds(manifests)
        state = LiveState()
        desired: set[tuple[str, str, str, str]] = set()
        # (api version, kind, namespace) -> resource and [(index, ref)]: read by one LIST when many
        batches: dict[tuple[str, str, str], tuple[Resource | None, list[tuple[int, o.ObjectRef]]]] = {}
        for index, manifest in enumerate(manifests):
            try:
                o.check_manifest(manifest)
            except o.ManifestError:
                continue
            if hooks.created(manifest):
                continue  # created anew by the sync: nothing live to read (the gate reviews a CREATE)
            given = o.ObjectRef.of(manifest)
            resource: Resource | None
            try:
                resource = self.client.resource(given.api_version, given.kind)
                namespaced = bool(resource.namespaced)
            except ResourceNotFoundError:  # not served (yet): absent
                resource, namespaced = None, crd_kinds.get((given.group, given.kind), True)
            namespace = (given.namespace or default_namespace) if namespaced else ""
            ref = o.ObjectRef(given.api_version, given.kind, namespace, given.name)
            desired.add(ref.key)
            batches.setdefault((ref.api_version, ref.kind, namespace), (resource, []))[1].append((index, ref))
        found: list[LiveObject] = []
        for (_api, _kind, namespace), (resource, items) in batches.items():
            if resource is None:
                found.extend(LiveObject(i, ref, None) for i, ref in items)
            elif len(items) >= LIST_READ_THRESHOLD:
                listed = self._list_full(resource, namespace)
                found.extend(LiveObject(i, ref, listed.get(ref.name)) for i, ref in items)
            else:
                found.extend(LiveObject(i, ref, self._get(resource, ref)) for i, ref in items)
        state.objects = sorted(found, key=lambda lo: lo.index)
        if prune:
            leftovers = [r for r in map(_ref, previous_inventory) if r.key not in desired]
            for ref, _resource, live, why in self.prune_candidates(leftovers, mapping, prune_cascading):
                if not why and live is not None:
                    state.prunes.append((ref, live))
                else:
                    state.kept.append((ref, live, why))
        return state

    # -- plan -----------------------------------------------------------------------------------------
    def plan(
        self,
        manifests: Iterable[dict[str, Any]],
        *,
        mapping: str,
        default_namespace: str = "default",
        previous_inventory: Iterable[RefLike] = (),
        force: bool = False,
        prune: bool = True,
        prune_cascading: bool = False,
        live: LiveState | None = None,
        restrict: allowlist.Rules | None = None,
    ) -> Plan:
        """Server-side dry-run apply of each object, diffed (YAML, unified) against the live object.

        Server-managed fields and status are ignored; Secret values are masked. Objects that left the
        source and would be pruned appear as deletes. ``live`` (from :meth:`read_live` with the same
        arguments) is used instead of reading the live objects and prune candidates again.
        """
        manifests = list(manifests)
        known = live.by_key() if live is not None else None
        crd_kinds = self._crd_kinds(manifests)
        if restrict is not None:  # what apply() would refuse, as errors (apply would change nothing)
            refused = self._scope_refusals(manifests, crd_kinds, restrict, default_namespace)
            if refused:
                return Plan([PlanItem(r.ref, ERROR, message=r.message) for r in refused])
        new_namespaces = {
            m["metadata"]["name"] for m in manifests if isinstance(m, dict) and m.get("kind") == "Namespace"
        }
        plan = Plan()
        install = True
        if hooks.uses_helm_hooks(m for m in manifests if isinstance(m, dict)):
            install = (ordered.install_from_live(manifests, live) if live is not None
                       else ordered.helm_install(self, manifests, default_namespace))
            plan.helm_operation = "install" if install else "upgrade"
        tasks, skipped, unreadable = ordered.classify_all(manifests, install)
        if unreadable:
            return Plan([PlanItem(r.ref, ERROR, message=r.message) for r in unreadable])
        desired: set[tuple[str, str, str, str]] = set()
        for step, manifest, first in ordered.plan_order(tasks):
            item, failure = self._prepare(manifest, mapping, default_namespace, crd_kinds)
            shown = {**step.to_dict(), **({"first": True} if first else {})}
            if failure is not None:
                plan.items.append(PlanItem(failure.ref, ERROR, message=failure.message, step=shown))
                continue
            if item is None:
                continue
            if step.created:
                planned = self._plan_create(item, step)
            else:
                desired.add(item.ref.key)
                planned = self._plan_one(item, force, new_namespaces, known)
            planned.step = shown
            plan.items.append(planned)
        for r in skipped:
            plan.items.append(PlanItem(r.ref, NOOP, message=r.message, step=r.step))
            if r.ref.name and not r.step.get("hook"):
                given, _ = self._prepare_ref(r.ref, default_namespace, crd_kinds)
                desired.add(given.key)
        if prune:
            candidates: list[tuple[o.ObjectRef, Resource | None, dict[str, Any] | None, str]]
            if live is not None:
                candidates = [(ref, None, obj, "") for ref, obj in live.prunes]
            else:
                leftovers = [r for r in map(_ref, previous_inventory) if r.key not in desired]
                candidates = self.prune_candidates(leftovers, mapping, prune_cascading)
            for ref, _resource, current, why in candidates:
                if not why and current is not None:
                    before, _ = o.mask_secret_pair(o.normalize(current), None)
                    diff = "".join(
                        difflib.unified_diff(_yaml(before), [], f"live/{_path(ref)}", f"desired/{_path(ref)}")
                    )
                    plan.items.append(PlanItem(ref, DELETE, diff, "no longer in the source: will be pruned"))
        return plan

    def _plan_one(
        self,
        item: _Prepared,
        force: bool,
        new_namespaces: set[str],
        known: dict[tuple[str, str, str, str], dict[str, Any] | None] | None = None,
    ) -> PlanItem:
        ref = item.ref
        live = None
        if known is not None and ref.key in known:
            live = known[ref.key]
        elif item.resource is not None:
            try:
                live = self._get(item.resource, ref)
            except Exception as exc:
                return PlanItem(ref, ERROR, message=self.client.failure(exc).message)
        after: dict[str, Any] | None
        note = ""
        if item.resource is None:
            after, note = item.body, "kind defined by a CRD in this batch: not validated by the server"
        else:
            try:
                resp = self._ssa(item.resource, item.body, ref, force, dry_run=True)
                after = json.loads(resp.data)
            except NotFoundError:
                if live is None and ref.namespace in new_namespaces:
                    after, note = item.body, f"namespace {ref.namespace} is created by this batch"
                else:
                    raise
            except Exception as exc:
                failure = self.client.failure(exc)
                if failure.conflicts:
                    return PlanItem(ref, CONFLICT, message=failure.message, conflicts=failure.conflicts)
                return PlanItem(ref, ERROR, message=failure.message)
        before_n, after_n = o.normalize(live), o.normalize(after)
        if before_n == after_n:
            return PlanItem(ref, NOOP)
        before_m, after_m = o.mask_secret_pair(before_n, after_n)
        diff = "".join(
            difflib.unified_diff(
                _yaml(before_m), _yaml(after_m), f"live/{_path(ref)}", f"desired/{_path(ref)}"
            )
        )
        return PlanItem(ref, CREATE if live is None else UPDATE, diff, note)

    def _prepare_ref(
        self, ref: o.ObjectRef, default_namespace: str, crd_kinds: dict[tuple[str, str], bool]
    ) -> tuple[o.ObjectRef, bool]:
        """``ref`` with the namespace an apply gives it, and whether its kind is served."""
        try:
            namespaced, served = bool(self.client.resource(ref.api_version, ref.kind).namespaced), True
        except Exception:
            namespaced, served = crd_kinds.get((ref.group, ref.kind), True), False
        namespace = (ref.namespace or default_namespace) if namespaced else ""
        return o.ObjectRef(ref.api_version, ref.kind, namespace, ref.name), served

    def _plan_create(self, item: _Prepared, step: hooks.Step) -> PlanItem:
        """A hook or an object named by the server: created on every sync, so shown as a create of the
        object (a server-side dry-run create where the server can check it) and never diffed against a
        live one."""
        ref = item.ref
        if step.generated:
            ref = o.ObjectRef(ref.api_version, ref.kind, ref.namespace, hooks.generate_name(item.body))
        note = hooks.describe(step)
        if step.hook:
            note += "; created on every sync; delete policy " + ", ".join(step.delete_policies)
        after: dict[str, Any] | None = item.body
        if item.resource is not None:
            dyn = self.client.dyn
            resource = item.resource
            try:
                resp = self.client.call(lambda: dyn.create(
                    resource, body=item.body, namespace=item.ref.namespace or None, field_manager=o.MANAGER,
                    dry_run="All", serialize=False))
                after = json.loads(resp.data)
                if step.generated:  # the dry run's name is not the one a sync will get
                    after.get("metadata", {}).pop("name", None)
            except Exception as exc:
                failure = self.client.failure(exc)
                if failure.status not in (404, 409):  # 409: the last sync's hook (deleted first); 404: new ns
                    return PlanItem(ref, ERROR, message=failure.message)
        after_m = o.mask_secret_pair(None, o.normalize(after))[1]
        diff = "".join(
            difflib.unified_diff([], _yaml(after_m), f"live/{_path(ref)}", f"desired/{_path(ref)}")
        )
        return PlanItem(ref, CREATE, diff, note)

    # -- health ----------------------------------------------------------------------------------------
    def health(
        self,
        refs: Iterable[RefLike],
        observed: dict[tuple[str, str, str, str], ObjectHealth] | None = None,
    ) -> HealthReport:
        """The health of each object now, and overall (Healthy, Progressing or Degraded). ``observed``: what
        was seen of some objects a moment ago (the apply's answers, ``SyncResult.observed``); an object
        Healthy there is not read again, any other is."""
        objects = []
        for ref in map(_ref, refs):
            seen = observed.get(ref.key) if observed else None
            if seen is not None and seen.state == HEALTHY:
                objects.append(seen)
                continue
            try:
                live = self.get(ref)
            except Exception as exc:
                raise ConnectorError(self.client.failure(exc).message) from None
            objects.append(assess(ref, live))
        state, reason = overall(objects)
        return HealthReport(state, reason, objects)

    def wait_healthy(
        self,
        refs: Iterable[RefLike],
        timeout: float = 300.0,
        interval: float = 0.1,
        max_interval: float = 2.0,
        observed: dict[tuple[str, str, str, str], ObjectHealth] | None = None,
    ) -> HealthReport:
        """Poll (backing off from ``interval`` to ``max_interval``) until every object is Healthy, one is
        Degraded, or ``timeout`` passes (then: Degraded, reason HealthTimeout, ``timed_out=True``).
        ``observed`` (the apply's answers): the first poll reads only the objects not Healthy there; every
        later poll reads them all."""
        refs = [_ref(r) for r in refs]
        deadline = time.monotonic() + timeout
        delay = interval
        while True:
            report = self.health(refs, observed)
            observed = None
            if report.state in (HEALTHY, DEGRADED):
                return report
            if time.monotonic() >= deadline:
                report.state, report.timed_out = DEGRADED, True
                report.reason = f"HealthTimeout: not healthy after {timeout:g}s ({report.reason})"
                return report
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(max_interval, delay * 1.5)

    # -- drift -----------------------------------------------------------------------------------------
    def drift(
        self, last_applied: Iterable[dict[str, Any]], default_namespace: str = "default"
    ) -> DriftReport:
        """Compare the live objects with what Fleetgate last applied (``SyncResult.applied``): the fields of
        that intent whose live value differs, and the objects that were deleted."""
        report = DriftReport()
        for applied in last_applied:
            ref = o.ObjectRef.of(applied)
            try:
                resource = self.client.resource(ref.api_version, ref.kind)
                if resource.namespaced and not ref.namespace:
                    ref = o.ObjectRef(ref.api_version, ref.kind, default_namespace, ref.name)
                live = self._get(resource, ref)
            except ResourceNotFoundError:
                live = None
            except Exception as exc:
                report.errors.append(f"{ref}: {self.client.failure(exc).message}")
                continue
            report.checked += 1
            if live is None:
                report.objects.append(ObjectDrift(ref, "deleted", message="the object was deleted"))
                continue
            fields = changed_fields(applied, live)
            if fields:
                report.objects.append(ObjectDrift(ref, "changed", fields))
        return report


__all__ = ["CONFIGURED", "CREATED", "DELETED", "FAILED", "SKIPPED", "UNCHANGED", "UPDATE", "Connector"]
