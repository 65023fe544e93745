"""One virtual cluster's state: objects, resourceVersion counter, event history and watchers.

Every public method takes the cluster's own lock (never a global one). Stored objects are never changed
in place after they are stored: a write builds a new dict, so readers and the event history can share
them without copies.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from . import errors
from . import fieldmanager as fm
from .errors import ApiError
from .objects import (
    apply_defaults,
    check_kind,
    clone,
    compact,
    crd_status,
    default_status,
    generated_name,
    now,
    omit_empty,
    present,
    require_crd_name,
    same_meta,
    scale_of,
    spec_part,
    validate_metadata,
    validate_name,
)
from .patches import json_patch, merge_patch, strategic_merge_patch
from .resources import (
    BUILTIN_BY_KEY,
    BUILTIN_ROUTES,
    CRDS,
    NAMESPACES,
    WORKLOAD_KEYS,
    ResourceType,
    custom_type_from_crd,
)
from .selectors import Matcher
from .watch import Event, Watcher

TypeKey = tuple[str, str]
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"


class ClusterState:
    """The stored objects of one virtual cluster and the operations of the REST API on them."""

    def __init__(
        self,
        name: str,
        history_size: int = 128,
        on_workload: Callable[[ClusterState, ResourceType, str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.rv = 0
        self.objects: dict[TypeKey, dict[str, dict[str, dict[str, Any]]]] = {}
        self.custom_types: dict[TypeKey, ResourceType] = {}
        self.custom_routes: dict[tuple[str, str, str], ResourceType] = {}
        self.history: deque[Event] = deque(maxlen=max(1, history_size))
        self.floor = 0  # events with rv <= floor are no longer in the history
        self.watchers: dict[TypeKey, set[Watcher]] = {}
        self.on_workload = on_workload
        self.settings: Any = None  # the owning cluster's ClusterSettings (for history_size), if any
        self.ip_counter = 10
        for ns in DEFAULT_NAMESPACES:
            self._store_new(
                NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )

    # -- types -------------------------------------------------------------------------------------
    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = BUILTIN_ROUTES.get((group, version, plural))
        if rt is None and self.custom_routes:
            rt = self.custom_routes.get((group, version, plural))
        return rt

    def type_for(self, key: TypeKey) -> ResourceType | None:
        return BUILTIN_BY_KEY.get(key) or self.custom_types.get(key)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        rt = custom_type_from_crd(crd)
        self._unregister_crd(crd["metadata"]["name"])
        if rt is None or rt.key in BUILTIN_BY_KEY:
            return
        self.custom_types[rt.key] = rt
        for v in rt.served_versions:
            self.custom_routes[(rt.group, v, rt.plural)] = rt

    def _unregister_crd(self, crd_name: str) -> ResourceType | None:
        for key, rt in list(self.custom_types.items()):
            if f"{rt.plural}.{rt.group}" == crd_name:
                del self.custom_types[key]
                for route in [r for r, t in self.custom_routes.items() if t is rt]:
                    del self.custom_routes[route]
                return rt
        return None

    def allocate_ip(self) -> str:
        self.ip_counter += 1
        return f"10.96.{(self.ip_counter // 250) % 250}.{self.ip_counter % 250 + 1}"

    # -- reads -------------------------------------------------------------------------------------
    def _bucket(self, rt: ResourceType, ns: str) -> dict[str, dict[str, Any]]:
        return self.objects.get(rt.key, {}).get(ns if rt.namespaced else "", {})

    def peek(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any] | None:
        return self._bucket(rt, ns).get(name)

    def get(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self._bucket(rt, ns).get(name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    def _items(self, rt: ResourceType, ns: str | None) -> list[dict[str, Any]]:
        by_ns = self.objects.get(rt.key, {})
        if rt.namespaced and ns:
            bucket = by_ns.get(ns, {})
            return [bucket[n] for n in sorted(bucket)]
        return [by_ns[s][n] for s in sorted(by_ns) for n in sorted(by_ns[s])]

    def list_collection(
        self,
        rt: ResourceType,
        version: str,
        ns: str | None,
        label: Matcher | None,
        field: Matcher | None,
        limit: int = 0,
        cont: str = "",
        full: bool = False,
    ) -> dict[str, Any]:
        """A list answer; ``full`` keeps apiVersion/kind on built-in items (for in-process helpers)."""
        with self.lock:
            items = self._items(rt, ns)
            rv = self.rv
        if label or field:
            items = [o for o in items if (not label or label(o)) and (not field or field(o))]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if cont:
            try:
                start = tuple(json.loads(base64.urlsafe_b64decode(cont.encode())))
            except (ValueError, TypeError):
                raise errors.bad_request("invalid continue token") from None
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start]
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = json.dumps([last.get("namespace", ""), last["name"]]).encode()
            meta["continue"] = base64.urlsafe_b64encode(token).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if not rt.builtin:
            items = [present(o, rt, version) for o in items]
        elif not full:  # like kube-apiserver: items of built-in lists carry no apiVersion/kind
            items = [{k: v for k, v in o.items() if k != "apiVersion" and k != "kind"} for o in items]
        return {"kind": rt.list_kind, "apiVersion": rt.api_version(version), "metadata": meta, "items": items}

    # -- the write pipeline -----------------------------------------------------------------------
    def _emit(self, ev_type: str, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        wanted = max(1, int(self.settings.history_size)) if self.settings is not None else None
        if wanted is not None and wanted != self.history.maxlen:
            kept = list(self.history)[-wanted:]
            if len(kept) < len(self.history):
                self.floor = max(self.floor, self.history[len(self.history) - len(kept) - 1].rv)
            self.history = deque(kept, maxlen=wanted)
        if len(self.history) == self.history.maxlen:
            self.floor = self.history[0].rv
        if old is not None:  # selectors only look at name, namespace and labels: keep just those
            meta = old["metadata"]
            old = {"metadata": {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}}
        ev = Event(self.rv, ev_type, rt.key, obj, old)
        self.history.append(ev)
        for w in self.watchers.get(rt.key, ()):
            out = w.translate(ev)
            if out is not None:
                w.queue.put(out)

    def _store_new(self, rt: ResourceType, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        if rt.kind == "Namespace":
            apply_defaults(rt, obj, self)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self.objects.setdefault(rt.key, {}).setdefault(ns, {})[meta["name"]] = obj
        self._emit("ADDED", rt, obj, None)
        return obj

    def _commit(
        self,
        rt: ResourceType,
        ns: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        managers: list[fm.Manager],
        dry_run: bool,
        notify: bool = True,
    ) -> dict[str, Any]:
        """Finish a write: server-set metadata, defaults, generation, storage, events and controllers."""
        meta = new["metadata"]
        name = meta["name"]
        new["apiVersion"] = (old or {}).get("apiVersion") or new.get("apiVersion") or rt.api_version()
        new["kind"] = rt.kind
        if rt.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            meta["generation"] = 1
        else:
            om = old["metadata"]
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in om:
                    meta[k] = om[k]
                else:
                    meta.pop(k, None)
        validate_metadata(rt, new)
        apply_defaults(rt, new, self)
        if rt.builtin and rt.has_status and new.get("status") is None:
            new["status"] = default_status(rt)
        if rt.builtin:
            omit_empty(rt, new)
        if rt is CRDS:
            require_crd_name(new)
            new["status"] = crd_status(new)
        if old is not None:
            changed = spec_part(old) != spec_part(new)
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if changed else 0)
        if not rt.generation:
            meta.pop("generation", None)
        encoded = fm.encode_managers(managers)
        if old is not None:
            if not changed and old.get("status") == new.get("status") and same_meta(old, new, encoded):
                return old  # a no-op write keeps the resourceVersion, like the apiserver
        if encoded:
            meta["managedFields"] = encoded
        else:
            meta.pop("managedFields", None)
        if old is not None and meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if dry_run:
                return new
            return self._remove(rt, ns, name, new)
        if dry_run:
            if old is not None:
                meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            else:
                meta.pop("resourceVersion", None)  # a dry-run create stores nothing, so it has no version
            return new
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        head = {"apiVersion": new.pop("apiVersion"), "kind": new.pop("kind"), "metadata": new.pop("metadata")}
        new = compact({**head, **new})
        self.objects.setdefault(rt.key, {}).setdefault(ns, {})[name] = new
        self._emit("ADDED" if old is None else "MODIFIED", rt, new, old)
        if rt is CRDS:
            self._register_crd(new)
        if notify and rt.key in WORKLOAD_KEYS and self.on_workload is not None:
            self.on_workload(self, rt, ns, name)
        return new

    def _remove(self, rt: ResourceType, ns: str, name: str, final: dict[str, Any]) -> dict[str, Any]:
        bucket = self.objects.get(rt.key, {}).get(ns, {})
        old = bucket.pop(name, None)
        self.rv += 1
        final = dict(final)
        final["metadata"] = dict(final["metadata"], resourceVersion=str(self.rv))
        self._emit("DELETED", rt, final, old)
        if rt is NAMESPACES:
            for key, by_ns in list(self.objects.items()):
                contained = by_ns.pop(name, None)
                t = self.type_for(key)
                if contained and t is not None and t.namespaced:
                    for obj in list(contained.values()):
                        self.rv += 1
                        gone = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self.rv)))
                        self._emit("DELETED", t, gone, obj)
        elif rt is CRDS:
            custom = self._unregister_crd(name)
            if custom is not None:
                for by_name in self.objects.pop(custom.key, {}).values():
                    for obj in by_name.values():
                        self.rv += 1
                        self._emit(
                            "DELETED",
                            custom,
                            dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self.rv))),
                            obj,
                        )
        return final

    def _require_namespace(self, rt: ResourceType, ns: str) -> None:
        if rt.namespaced:
            if not ns:
                raise errors.method_not_allowed()
            namespace = self.objects.get(NAMESPACES.key, {}).get("", {}).get(ns)
            if namespace is None:
                raise errors.not_found("namespaces", "", ns)
            if namespace["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f"{rt.plural} is forbidden: unable to create new content in namespace {ns} because it is "
                    "being terminated",
                    {"name": ns, "kind": rt.plural, **({"group": rt.group} if rt.group else {})},
                )

    def _check_names(self, rt: ResourceType, ns: str, name: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        body_name = meta.get("name")
        if body_name and name and body_name != name:
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        body_ns = meta.get("namespace")
        if rt.namespaced and body_ns and body_ns != ns:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )

    # -- create / update / patch / apply / delete --------------------------------------------------------
    def create(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        body: dict[str, Any],
        manager: str,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        check_kind(rt, body, version)
        validate_metadata(rt, body)
        self._check_names(rt, ns, "", body)
        meta = body["metadata"]
        with self.lock:
            self._require_namespace(rt, ns)
            if not meta.get("name") and meta.get("generateName"):
                bucket = self._bucket(rt, ns)
                name = generated_name(meta["generateName"])
                while name in bucket:
                    name = generated_name(meta["generateName"])
                meta["name"] = name
            validate_name(rt, meta.get("name"))
            if self._bucket(rt, ns).get(meta["name"]) is not None:
                raise errors.already_exists(rt.plural, rt.group, meta["name"])
            body["apiVersion"] = rt.api_version(version)
            if rt.has_status and rt is not NAMESPACES:
                body.pop("status", None)
            me = fm.Manager(manager, "Update", rt.api_version(version), time=now())
            managers = fm.track_update(
                {}, fm.managed_view(body, "main", rt.has_status), [], me, rt.merge_rules
            )
            for k in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "managedFields"):
                meta.pop(k, None)
            return present(self._commit(rt, ns, None, body, managers, dry_run), rt, version)

    def update(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        name: str,
        body: dict[str, Any],
        manager: str,
        subresource: str = "",
        dry_run: bool = False,
    ) -> dict[str, Any]:
        check_kind(rt, body, version)
        validate_metadata(rt, body)
        self._check_names(rt, ns, name, body)
        with self.lock:
            old = self.peek(rt, ns, name)
            if old is None:
                raise errors.not_found(rt.plural, rt.group, name)
            want_rv = body["metadata"].get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)
            return present(
                self._write_update(rt, version, ns, name, old, body, manager, subresource, dry_run),
                rt,
                version,
            )

    def _write_update(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        name: str,
        old: dict[str, Any],
        new: dict[str, Any],
        manager: str,
        subresource: str,
        dry_run: bool,
    ) -> dict[str, Any]:
        if subresource == "status":
            status = new.get("status")
            new = clone(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        else:
            new["metadata"]["name"] = name
            if rt.has_status and rt is not NAMESPACES:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        part = "status" if subresource == "status" else "main"
        me = fm.Manager(manager, "Update", rt.api_version(version), subresource, now())
        managers = fm.track_update(
            fm.managed_view(old, part, rt.has_status),
            fm.managed_view(new, part, rt.has_status),
            fm.decode_managers(old["metadata"]),
            me,
            rt.merge_rules,
        )
        return self._commit(rt, ns, old, new, managers, dry_run, notify=subresource != "status")

    def patch(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        name: str,
        content_type: str,
        body: Any,
        manager: str,
        force: bool = False,
        subresource: str = "",
        dry_run: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """PATCH in any of the four content types; returns (HTTP code, object)."""
        if content_type == APPLY:
            return self.apply(rt, version, ns, name, body, manager, force, subresource, dry_run)
        if content_type == STRATEGIC and not rt.builtin:
            raise errors.unsupported_media_type(content_type)
        with self.lock:
            old = self.peek(rt, ns, name)
            if old is None:
                raise errors.not_found(rt.plural, rt.group, name)
            doc = clone(old)
            if content_type == MERGE:
                if not isinstance(body, dict):
                    raise errors.bad_request("merge patch: the body must be a JSON object")
                new = merge_patch(doc, body)
            elif content_type == STRATEGIC:
                if not isinstance(body, dict):
                    raise errors.bad_request("strategic merge patch: the body must be a JSON object")
                new = strategic_merge_patch(doc, body)
            elif content_type == JSONPATCH:
                new = json_patch(doc, body)
            else:
                raise errors.unsupported_media_type(content_type)
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise errors.bad_request("the patched object must be an object with metadata")
            want_rv = new["metadata"].get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)
            check_kind(rt, new, version)
            self._check_names(rt, ns, name, new)
            return 200, present(
                self._write_update(rt, version, ns, name, old, new, manager, subresource, dry_run),
                rt,
                version,
            )

    def apply(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        name: str,
        body: Any,
        manager: str,
        force: bool = False,
        subresource: str = "",
        dry_run: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        if not manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch",
                {
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        errors.cause(
                            "FieldValueRequired",
                            "fieldManager",
                            "Required value: is required for apply patch",
                        )
                    ],
                },
            )
        if not isinstance(body, dict):
            raise errors.bad_request("apply patch: the body must be an object")
        check_kind(rt, body, version, required=True)
        body.setdefault("metadata", {})
        validate_metadata(rt, body)
        if not body["metadata"].get("name"):
            body["metadata"]["name"] = name
        self._check_names(rt, ns, name, body)
        part = "status" if subresource == "status" else "main"
        with self.lock:
            old = self.peek(rt, ns, name)
            if old is None:
                if subresource:
                    raise errors.not_found(rt.plural, rt.group, name)
                self._require_namespace(rt, ns)
                validate_name(rt, name)
            want_rv = body["metadata"].get("resourceVersion")
            if want_rv and old is not None and want_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)
            if body["metadata"].get("managedFields"):
                raise errors.bad_request("metadata.managedFields must be nil in an apply configuration")
            live = clone(old) if old is not None else {"metadata": {"name": name}}
            applied_view = fm.managed_view(body, part, rt.has_status and rt is not NAMESPACES)
            live_view = fm.managed_view(old, part, rt.has_status) if old is not None else {}
            me = fm.Manager(manager, "Apply", rt.api_version(version), subresource, now())
            managers = fm.decode_managers(old["metadata"]) if old is not None else []
            merged, managers = fm.apply(live, applied_view, live_view, managers, me, force, rt.merge_rules)
            merged.setdefault("metadata", {})["name"] = name
            if old is None and rt.has_status and rt is not NAMESPACES:
                merged.pop("status", None)
            result = self._commit(rt, ns, old, merged, managers, dry_run, notify=not subresource)
            return (201 if old is None else 200), present(result, rt, version)

    def delete(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        name: str,
        options: dict[str, Any],
        dry_run: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            old = self.peek(rt, ns, name)
            if old is None:
                raise errors.not_found(rt.plural, rt.group, name)
            pre = options.get("preconditions") or {}
            meta = old["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise errors.conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f"Precondition failed: UID in precondition: "
                    f"{pre['uid']}, UID in object meta: {meta.get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                raise errors.conflict(
                    rt.plural,
                    rt.group,
                    name,
                    "Precondition failed: ResourceVersion in "
                    f"precondition: {pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta.get('resourceVersion')}",
                )
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return 200, present(old, rt, version)
                new = clone(old)
                new["metadata"]["deletionTimestamp"] = now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                if rt is NAMESPACES:
                    new["status"] = {"phase": "Terminating"}
                if dry_run:
                    return 200, present(new, rt, version)
                self.rv += 1
                new["metadata"]["resourceVersion"] = str(self.rv)
                self.objects[rt.key][ns if rt.namespaced else ""][name] = new
                self._emit("MODIFIED", rt, new, old)
                return 200, present(new, rt, version)
            if not dry_run:
                self._remove(rt, ns if rt.namespaced else "", name, old)
            details: dict[str, Any] = {"name": name, "kind": rt.plural, "uid": meta.get("uid")}
            if rt.group:
                details["group"] = rt.group
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }

    def delete_collection(
        self,
        rt: ResourceType,
        version: str,
        ns: str | None,
        label: Matcher | None,
        field: Matcher | None,
        options: dict[str, Any],
        dry_run: bool = False,
    ) -> dict[str, Any]:
        with self.lock:
            items = self.list_collection(rt, version, ns, label, field)["items"]
            for obj in items:
                self.delete(
                    rt,
                    version,
                    obj["metadata"].get("namespace", ""),
                    obj["metadata"]["name"],
                    options,
                    dry_run,
                )
            return {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(version),
                "metadata": {"resourceVersion": str(self.rv)},
                "items": items,
            }

    def get_scale(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        return scale_of(self.get(rt, ns, name))

    def write_scale(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        name: str,
        content_type: str,
        body: Any,
        manager: str,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PUT (``content_type="PUT"``) or PATCH of the autoscaling/v1 Scale subresource."""
        with self.lock:
            old = self.peek(rt, ns, name)
            if old is None:
                raise errors.not_found(rt.plural, rt.group, name)
            current = clone(scale_of(old))
            if content_type == "PUT":
                scale = body
            elif content_type in (MERGE, APPLY):
                scale = merge_patch(current, body)
            elif content_type == STRATEGIC:
                scale = strategic_merge_patch(current, body)
            elif content_type == JSONPATCH:
                scale = json_patch(current, body)
            else:
                raise errors.unsupported_media_type(content_type)
            if not isinstance(scale, dict):
                raise errors.bad_request("the Scale body must be an object")
            want_rv = (scale.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)
            replicas = (scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.invalid(
                    "Scale",
                    "autoscaling",
                    name,
                    [errors.cause("FieldValueInvalid", "spec.replicas", "Invalid value: must be >= 0")],
                )
            new = clone(old)
            new.setdefault("spec", {})["replicas"] = replicas
            operation = "Apply" if content_type == APPLY else "Update"
            me = fm.Manager(manager, operation, rt.api_version(version), "scale", now())
            managers = fm.track_update(
                fm.managed_view(old, "main", rt.has_status),
                fm.managed_view(new, "main", rt.has_status),
                fm.decode_managers(old["metadata"]),
                me,
                rt.merge_rules,
            )
            return scale_of(self._commit(rt, ns, old, new, managers, dry_run))

    def write_status(
        self, rt: ResourceType, ns: str, name: str, status: dict[str, Any], manager: str
    ) -> None:
        """A controller's status update (an Update on the status subresource) when it changes anything."""
        with self.lock:
            old = self.peek(rt, ns, name)
            if old is None or old.get("status") == status:
                return
            self._write_update(rt, rt.version, ns, name, old, {"status": status}, manager, "status", False)

    # -- watch ------------------------------------------------------------------------------------------
    def watch(
        self,
        rt: ResourceType,
        ns: str | None,
        resource_version: str,
        label: Matcher | None,
        field: Matcher | None,
    ) -> Watcher:
        """Register a watcher; its queue already holds the initial or replayed events.

        Raises an ``Expired`` ApiError when ``resource_version`` is older than the event history."""
        w = Watcher(rt.key, ns if rt.namespaced else None, label, field)
        with self.lock:
            if resource_version in ("", "0"):
                for obj in self._items(rt, ns):
                    if w.matches(obj):
                        w.queue.put(("ADDED", obj))
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise errors.bad_request(f"invalid resource version: {resource_version}") from None
                if since < self.floor:
                    raise errors.expired(f"too old resource version: {since} ({self.floor + 1})")
                for ev in self.history:
                    if ev.rv > since and ev.key == rt.key:
                        out = w.translate(ev)
                        if out is not None:
                            w.queue.put(out)
            self.watchers.setdefault(rt.key, set()).add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            ws = self.watchers.get(w.key)
            if ws is not None:
                ws.discard(w)
                if not ws:
                    del self.watchers[w.key]

    def close_watchers(self) -> None:
        with self.lock:
            for ws in self.watchers.values():
                for w in ws:
                    w.queue.put(None)

    # -- persistence --------------------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        with self.lock:
            objs = [
                o for by_ns in self.objects.values() for bucket in by_ns.values() for o in bucket.values()
            ]
            return {"rv": self.rv, "ipCounter": self.ip_counter, "objects": objs}

    def load(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.objects.clear()
            self.custom_types.clear()
            self.custom_routes.clear()
            self.history.clear()
            crds = [o for o in data.get("objects", []) if o.get("kind") == CRDS.kind]
            for crd in crds:
                self._register_crd(crd)
            for obj in data.get("objects", []):
                group, _, _ = obj.get("apiVersion", "").rpartition("/")
                rt = next(
                    (
                        t
                        for t in list(BUILTIN_BY_KEY.values()) + list(self.custom_types.values())
                        if t.group == group and t.kind == obj.get("kind")
                    ),
                    None,
                )
                if rt is None:
                    continue
                ns = obj["metadata"].get("namespace", "") if rt.namespaced else ""
                self.objects.setdefault(rt.key, {}).setdefault(ns, {})[obj["metadata"]["name"]] = obj
            self.rv = int(data.get("rv", 0))
            self.floor = self.rv
            self.ip_counter = int(data.get("ipCounter", self.ip_counter))

    def count(self) -> int:
        with self.lock:
            return sum(len(b) for by_ns in self.objects.values() for b in by_ns.values())
