"""Field ownership for server-side apply: ``managedFields`` in the ``FieldsV1`` format.

A field set is a Python set of paths; a path is a tuple of FieldsV1 elements (``"f:spec"``,
``'k:{"name":"web"}'``, ``'v:"x"'``). Only leaves (scalars, atomic lists, empty maps) and list items
(the ``"."`` of a ``k:``/``v:`` node) are members, as in the apiserver.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, cause, invalid

Path = tuple[str, ...]
SET = "set"
MISSING: Any = object()

# Lists that Kubernetes merges by key (listType=map) in the built-in schemas.
KEYED_LISTS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
    "resourceClaims": ("name",),
    "resizePolicy": ("resourceName",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "ownerReferences": ("uid",),
}
SET_LISTS = frozenset({"finalizers"})
METADATA_ONLY = frozenset({"ownerReferences", "finalizers"})
SERVER_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)


# ``builtin`` below is True for the built-in kinds (merge rules by field name), or, for custom resources,
# the CRD's openAPIV3Schema (dict; x-kubernetes-list-type / -list-map-keys / -map-type decide) or False.
Schema = bool | dict[str, Any]


def schema_at(schema: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The structural schema node of ``path`` in a CRD's openAPIV3Schema, or None."""
    node: Any = schema
    for el in path:
        if not isinstance(node, dict):
            return None
        if el.startswith("f:"):
            props = node.get("properties") or {}
            if el[2:] in props:
                node = props[el[2:]]
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]
            else:
                return None
        else:
            node = node.get("items")
    return node if isinstance(node, dict) else None


def list_spec(name: str, items: list[Any], path: Path, builtin: Schema) -> Any:
    """How a list merges: None (atomic), SET, or the tuple of key fields."""
    in_metadata = len(path) == 2 and path[0] == "f:metadata"
    if builtin is not True and not in_metadata:
        if isinstance(builtin, dict):
            node = schema_at(builtin, path) or {}
            kind = node.get("x-kubernetes-list-type")
            if kind == "set":
                return SET
            if kind == "map" and node.get("x-kubernetes-list-map-keys"):
                return tuple(node["x-kubernetes-list-map-keys"])
        return None
    if name in SET_LISTS:
        return SET
    if builtin is not True and name not in METADATA_ONLY:
        return None
    if name == "ports":
        first = next((i for i in items if isinstance(i, dict)), None)
        if first is None:
            return ("containerPort", "protocol")
        return ("containerPort", "protocol") if "containerPort" in first else ("port", "protocol")
    return KEYED_LISTS.get(name)


def key_values(item: Any, spec: tuple[str, ...], path: Path) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid_list(path, "associative list with keys has an element that is not a map")
    out: dict[str, Any] = {}
    for k in sorted(spec):
        if k in item and item[k] is not None:
            out[k] = item[k]
        elif k == "protocol":
            out[k] = "TCP"
        else:
            raise invalid_list(path, f'associative list with keys has an element that omits key field "{k}"')
    return out


def item_element(item: Any, spec: Any, path: Path) -> str:
    if spec == SET:
        return "v:" + json.dumps(item, separators=(",", ":"), sort_keys=True)
    return "k:" + json.dumps(key_values(item, spec, path), separators=(",", ":"))


def invalid_list(path: Path, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f"{path_string(path)}: {message}",
        {"causes": [cause("FieldValueInvalid", path_string(path), message)]},
    )


def path_string(path: Path) -> str:
    out = []
    for el in path:
        if el.startswith("f:"):
            out.append("." + el[2:])
        elif el.startswith("k:"):
            keys = json.loads(el[2:])
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]")
        elif el.startswith("v:"):
            out.append(f"[={el[2:]}]")
        elif el.startswith("i:"):
            out.append(f"[{el[2:]}]")
    return "".join(out)


def managed_view(obj: dict[str, Any], part: str, has_status: bool) -> dict[str, Any]:
    """The part of an object that field managers own: ``main`` (no status when it is a subresource)
    or ``status``. Server-set metadata, apiVersion and kind are never owned."""
    if part == "status":
        return {"status": obj["status"]} if obj.get("status") is not None else {}
    view = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    if has_status:
        view.pop("status", None)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        m = {k: v for k, v in meta.items() if k not in SERVER_METADATA}
        if m:
            view["metadata"] = m
    return view


# Free-form maps of the built-in schemas (map[string]...): an Update that creates one owns the map itself
# too (its "." in FieldsV1), as kube-apiserver records it; appliers own only the keys.
MAP_FIELDS = frozenset(
    {
        "labels",
        "annotations",
        "data",
        "binaryData",
        "stringData",
        "nodeSelector",
        "limits",
        "requests",
        "capacity",
        "allocatable",
        "hard",
        "used",
        "parameters",
        "selector",
    }
)


def fieldset(view: dict[str, Any], builtin: Schema, maps: bool = False) -> set[Path]:
    """The owned paths of a managed view; ``maps`` adds free-form map members (for Update operations)."""
    out: set[Path] = set()
    for k, v in view.items():
        if v is not None:
            _walk(v, ("f:" + k,), out, k, builtin, maps)
    return out


_SELECTOR_FIELDS = frozenset({"selector", "labelSelector", "podSelector", "namespaceSelector"})


def atomic_map(name: str, value: dict[str, Any], builtin: Schema, path: Path = ()) -> bool:
    """LabelSelector is an atomic struct in the built-in schemas (a Service's plain selector map is not);
    custom resources say so with x-kubernetes-map-type: atomic."""
    if isinstance(builtin, dict):
        return (schema_at(builtin, path) or {}).get("x-kubernetes-map-type") == "atomic"
    return (
        builtin is True
        and name in _SELECTOR_FIELDS
        and ("matchLabels" in value or "matchExpressions" in value)
    )


def _walk(value: Any, path: Path, out: set[Path], name: str, builtin: Schema, maps: bool = False) -> None:
    if isinstance(value, dict):
        if not value or atomic_map(name, value, builtin, path):
            out.add(path)
            return
        if maps and builtin is True and name in MAP_FIELDS:
            out.add(path)
        for k, v in value.items():
            if v is not None:
                _walk(v, (*path, "f:" + k), out, k, builtin, maps)
    elif isinstance(value, list):
        spec = list_spec(name, value, path, builtin)
        if spec is None or not value:
            out.add(path)
            return
        seen: set[str] = set()
        for item in value:
            el = item_element(item, spec, path)
            if el in seen:
                raise invalid_list(path, f"duplicate entries for key {el[2:]}")
            seen.add(el)
            ip = (*path, el)
            out.add(ip)
            if spec != SET:
                for k, v in item.items():
                    if v is not None:
                        _walk(v, (*ip, "f:" + k), out, k, builtin, maps)
    else:
        out.add(path)


def _find_item(items: list[Any], el: str, path: Path, name: str, builtin: Schema) -> int:
    spec = list_spec(name, items, path, builtin)
    if spec is None:
        return -1
    for i, item in enumerate(items):
        try:
            if item_element(item, spec, path) == el:
                return i
        except ApiError:
            continue
    return -1


def get_value(obj: Any, path: Path, builtin: Schema) -> Any:
    cur = obj
    name = ""
    for depth, el in enumerate(path):
        if el.startswith("f:"):
            if not isinstance(cur, dict) or el[2:] not in cur:
                return MISSING
            name = el[2:]
            cur = cur[name]
        elif isinstance(cur, list):
            i = _find_item(cur, el, path[:depth], name, builtin)
            if i < 0:
                return MISSING
            cur = cur[i]
        else:
            return MISSING
    return cur


def remove_path(obj: dict[str, Any], path: Path, builtin: Schema) -> None:
    """Remove one owned field or list item from ``obj`` in place, pruning maps left empty."""
    chain: list[tuple[Any, Any]] = []  # (container, key/index)
    cur: Any = obj
    name = ""
    for depth, el in enumerate(path):
        if el.startswith("f:"):
            if not isinstance(cur, dict) or el[2:] not in cur:
                return
            chain.append((cur, el[2:]))
            name = el[2:]
            cur = cur[name]
        elif isinstance(cur, list):
            i = _find_item(cur, el, path[:depth], name, builtin)
            if i < 0:
                return
            chain.append((cur, i))
            cur = cur[i]
        else:
            return
    container, key = chain.pop()
    del container[key]
    # prune maps emptied by the removal (never the top-level fields themselves)
    while chain and len(chain) > 1:
        parent, pkey = chain[-1]
        if isinstance(container, dict) and not container:
            del parent[pkey]
            container = parent
            chain.pop()
        else:
            break


def merge_apply(live: Any, applied: Any, name: str, path: Path, builtin: Schema) -> Any:
    """Merge an applied configuration into the live value (maps recursively, keyed lists by key)."""
    if isinstance(applied, dict) and isinstance(live, dict) and not atomic_map(name, applied, builtin, path):
        out = dict(live)
        for k, v in applied.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge_apply(live.get(k, MISSING), v, k, (*path, "f:" + k), builtin)
        return out
    if isinstance(applied, list) and isinstance(live, list):
        spec = list_spec(name, applied or live, path, builtin)
        if spec is None:
            return applied
        live_keys = [_element_or_none(item, spec, path) for item in live]
        applied_keys = [item_element(item, spec, path) for item in applied]
        if spec == SET:
            return merge_ordered(live, applied, live_keys, applied_keys, lambda el, lv, av: av)
        return merge_ordered(
            live,
            applied,
            live_keys,
            applied_keys,
            lambda el, lv, av: av if lv is MISSING else merge_apply(lv, av, name, (*path, el), builtin),
        )
    return applied


def _element_or_none(item: Any, spec: Any, path: Path) -> str | None:
    try:
        return item_element(item, spec, path)
    except ApiError:
        return None


def merge_ordered(
    live: list[Any], applied: list[Any], lkeys: list[Any], rkeys: list[str], merge: Any
) -> list[Any]:
    """Merge two keyed lists in structured-merge-diff's order: items only in the live list stay where they
    were, shared items follow the applied order, new items go where the applied list puts them."""
    live_by = {k: v for k, v in zip(lkeys, live, strict=True) if k is not None}
    applied_by = dict(zip(rkeys, applied, strict=True))
    shared = [k for k in rkeys if k in live_by]
    next_shared = shared.pop(0) if shared else None
    done: set[str] = set()
    out: list[Any] = []
    li = ri = 0
    while li < len(lkeys) or ri < len(rkeys):
        if li < len(lkeys) and ri < len(rkeys):
            key = lkeys[li]
            if key == rkeys[ri]:
                done.add(key)
                out.append(merge(key, live_by[key], applied_by[key]))
                li += 1
                ri += 1
                next_shared = shared.pop(0) if shared else None
                continue
            if key in applied_by and next_shared is not None and next_shared != key:
                li += 1  # a shared item, but not the one due now: it comes in the applied order
                continue
        if li < len(lkeys):
            key = lkeys[li]
            if key is None or key not in applied_by:
                out.append(live[li])
                li += 1
                continue
            if key in done:
                li += 1
                continue
        if ri < len(rkeys):
            key = rkeys[ri]
            done.add(key)
            out.append(merge(key, live_by.get(key, MISSING), applied_by[key]))
            ri += 1
            if next_shared == key:
                next_shared = shared.pop(0) if shared else None
    return out


@dataclass(slots=True)
class Manager:
    manager: str
    operation: str  # "Apply" or "Update"
    api_version: str
    subresource: str = ""
    time: str = ""
    fields: set[Path] = field(default_factory=set)

    @property
    def ident(self) -> tuple[str, str, str, str]:
        return (
            self.manager,
            self.operation,
            self.subresource,
            self.api_version if self.operation == "Update" else "",
        )

    def printed(self) -> str:
        """As the apiserver names a manager in conflicts: appliers without their apiVersion (it is not part
        of an applier's identity), updaters with ``using <apiVersion>``."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        return f"{text} using {self.api_version}" if self.operation == "Update" else text


def decode_managers(meta: dict[str, Any]) -> list[Manager]:
    out = []
    for entry in meta.get("managedFields") or []:
        if not isinstance(entry, dict):
            continue
        fields: set[Path] = set()
        _decode(entry.get("fieldsV1") or {}, (), fields)
        out.append(
            Manager(
                entry.get("manager", ""),
                entry.get("operation", "Update"),
                entry.get("apiVersion", ""),
                entry.get("subresource", ""),
                entry.get("time", ""),
                fields,
            )
        )
    return out


def _decode(node: dict[str, Any], path: Path, out: set[Path]) -> None:
    for k, sub in node.items():
        if k == ".":
            out.add(path)
        elif not sub:
            out.add((*path, k))
        else:
            _decode(sub, (*path, k), out)


def encode_fields(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for p in paths:
        node = tree
        for el in p:
            node = node.setdefault(el, {})
    return _ordered(tree, (), paths)


# Stored objects are never changed in place, so every leaf of every fieldsV1 tree can share one empty dict.
_LEAF: dict[str, Any] = {}


def _ordered(node: dict[str, Any], path: Path, paths: set[Path]) -> dict[str, Any]:
    if not node:
        return _LEAF
    out: dict[str, Any] = {}
    if path and path in paths:
        out["."] = _LEAF
    for k in sorted(node):
        out[sys.intern(k)] = _ordered(node[k], (*path, k), paths)
    return out


def encode_managers(managers: list[Manager]) -> list[dict[str, Any]]:
    """managedFields entries in the apiserver's order: operation, time, manager, apiVersion, subresource."""
    out = []
    order = sorted(managers, key=lambda m: (m.operation, m.time, m.manager, m.api_version, m.subresource))
    for m in order:
        if not m.fields:
            continue
        entry: dict[str, Any] = {
            "manager": m.manager,
            "operation": m.operation,
            "apiVersion": m.api_version,
            "time": m.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode_fields(m.fields),
        }
        if m.subresource:
            entry["subresource"] = m.subresource
        out.append(entry)
    return out


def _leaf_differs(old: Any, new: Any, p: Path, builtin: Schema) -> bool:
    if p[-1].startswith(("k:", "v:")):
        return False
    before, after = get_value(old, p, builtin), get_value(new, p, builtin)
    if isinstance(after, dict) and after and not atomic_map(p[-1][2:], after, builtin, p):
        return False  # a map member: only its keys change
    return before != after


def track_update(
    old_view: dict[str, Any], new_view: dict[str, Any], managers: list[Manager], me: Manager, builtin: Schema
) -> list[Manager]:
    """Record an Update operation: the writer gains the fields it changed, others lose them."""
    old_fs = fieldset(old_view, builtin, maps=True)
    new_fs = fieldset(new_view, builtin, maps=True)
    added = new_fs - old_fs
    removed = old_fs - new_fs
    modified = {p for p in new_fs & old_fs if _leaf_differs(old_view, new_view, p, builtin)}
    changed = added | modified
    out: list[Manager] = []
    found = False
    for m in managers:
        if m.ident == me.ident:
            found = True
            m.fields = (m.fields | changed) - removed
            m.time = me.time
        elif changed or removed:
            m.fields = m.fields - changed - removed
        out.append(m)
    if not found:
        me.fields = changed
        out.append(me)
    return [m for m in out if m.fields]


def conflict_error(conflicts: list[tuple[Manager, Path]]) -> ApiError:
    conflicts = sorted(conflicts, key=lambda c: (c[0].printed(), path_string(c[1])))
    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {m.printed()}", "field": path_string(p)}
        for m, p in conflicts
    ]
    if len(conflicts) == 1:
        m, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {m.printed()}: {path_string(p)}"
    else:
        lines: list[str] = []
        last = None
        for m, p in conflicts:
            if m.printed() != last:
                last = m.printed()
                lines.append(f"conflicts with {last}:")
            lines.append(f"- {path_string(p)}")
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def apply(
    live: dict[str, Any] | None,
    applied_view: dict[str, Any],
    live_view: dict[str, Any],
    managers: list[Manager],
    me: Manager,
    force: bool,
    builtin: Schema,
) -> tuple[dict[str, Any], list[Manager]]:
    """Server-side apply of ``applied_view`` onto ``live`` (a private copy that may be changed).

    Returns the merged object and the new manager list, or raises a 409 conflict error.
    """
    new_fs = fieldset(applied_view, builtin)
    others = [m for m in managers if m.ident != me.ident]
    previous = next((m.fields for m in managers if m.ident == me.ident), set())
    conflicts: list[tuple[Manager, Path]] = []
    shared: set[Path] = set()
    for m in others:
        shared |= new_fs & m.fields
    for p in shared:  # only fields someone else owns can conflict
        if p[-1].startswith(("k:", "v:")):
            continue
        current = get_value(live_view, p, builtin)
        if current is MISSING or current == get_value(applied_view, p, builtin):
            continue
        conflicts.extend((m, p) for m in others if p in m.fields)
    if conflicts and not force:
        raise conflict_error(conflicts)
    for m, p in conflicts:
        m.fields.discard(p)
    merged = merge_apply(live if live is not None else {}, applied_view, "", (), builtin)
    owned_by_others: set[Path] = set()
    for m in others:
        owned_by_others |= m.fields
    removed: set[Path] = set()
    keep = owned_by_others | new_fs
    for p in sorted(previous - new_fs - owned_by_others, key=len):
        if any(p[:i] in removed for i in range(1, len(p))):
            continue  # an enclosing list item is already gone
        if any(o[: len(p)] == p for o in keep if len(o) > len(p)):
            continue  # someone still owns a field inside it: only its own leaves go (they follow)
        remove_path(merged, p, builtin)
        removed.add(p)
    me.fields = new_fs
    out: list[Manager] = []
    placed = False
    for m in managers:
        if m.ident == me.ident:
            out.append(me)
            placed = True
        elif m.fields:
            out.append(m)
    if not placed:
        out.append(me)
    return merged, [m for m in out if m.fields]


__all__ = [
    "MISSING",
    "Manager",
    "apply",
    "cause",
    "decode_managers",
    "encode_managers",
    "fieldset",
    "get_value",
    "invalid",
    "managed_view",
    "merge_apply",
    "path_string",
    "track_update",
]
