"""Drift: the fields of the applied intent whose live value differs (not the whole live object)."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

from clusters.connector.objects import MASK, SERVER_ANNOTATIONS, SERVER_METADATA, is_secret
from clusters.connector.results import FieldDrift

# Keys by which Kubernetes merges list items (strategic merge / server-side apply list-map keys).
MERGE_KEYS = ("name", "containerPort", "mountPath", "devicePath", "ip", "type", "topologyKey", "port")

_ABSENT = object()


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in MERGE_KEYS:
        if all(key in i for i in items):
            return key
    return None


def _same_scalar(a: Any, b: Any) -> bool:
    return a == b or (not isinstance(a, bool) and not isinstance(b, bool) and str(a) == str(b))


def _compare(path: str, want: Any, live: Any, out: list[FieldDrift]) -> None:
    if isinstance(want, dict):
        if not isinstance(live, dict):
            out.append(FieldDrift(path, want, None if live is _ABSENT else live))
            return
        for key, value in want.items():
            _compare(f"{path}.{key}", value, live.get(key, _ABSENT), out)
        return
    if isinstance(want, list):
        if not isinstance(live, list):
            out.append(FieldDrift(path, want, None if live is _ABSENT else live))
            return
        key = _merge_key(want)
        if key is not None and _merge_key(live) == key:
            by_key = {str(item[key]): item for item in live}
            for item in want:
                _compare(f"{path}[{key}={item[key]}]", item, by_key.get(str(item[key]), _ABSENT), out)
            return
        if len(want) != len(live):
            out.append(FieldDrift(path, want, live))
            return
        for i, (w, v) in enumerate(zip(want, live, strict=True)):
            _compare(f"{path}[{i}]", w, v, out)
        return
    if live is _ABSENT:
        out.append(FieldDrift(path, want, None))
    elif not _same_scalar(want, live):
        out.append(FieldDrift(path, want, live))


def intent_of(applied: dict[str, Any]) -> dict[str, Any]:
    """The applied object as intent: no status, no server metadata; Secret stringData as data."""
    intent = {k: v for k, v in applied.items() if k not in ("status", "apiVersion", "kind")}
    meta = dict(intent.get("metadata") or {})
    for key in (*SERVER_METADATA, "namespace", "name"):
        meta.pop(key, None)
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in SERVER_ANNOTATIONS}
    if notes:
        meta["annotations"] = notes
    else:
        meta.pop("annotations", None)
    intent["metadata"] = meta
    if is_secret(applied) and intent.get("stringData"):
        data = dict(intent.get("data") or {})
        for k, v in intent.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        intent["data"] = data
    return intent


_SEGMENT = re.compile(r"\.([^.\[]+)|\[([^=\]]+)=([^\]]*)\]|\[(\d+)\]")


def _fields_key(path: str) -> list[str] | None:
    """``.spec.template.spec.containers[name=web].image`` as FieldsV1 keys, or None when not expressible."""
    keys: list[str] = []
    for m in _SEGMENT.finditer(path):
        if m.group(1) is not None:
            keys.append(f"f:{m.group(1)}")
        elif m.group(2) is not None:
            value: Any = m.group(3)
            if value.isdigit() and m.group(2) in ("containerPort", "port"):
                value = int(value)
            keys.append("k:" + json.dumps({m.group(2): value}, separators=(",", ":")))
        else:
            return None  # an atomic list item: owned through its list
    return keys


def owners(live: dict[str, Any], path: str) -> list[str]:
    """The field managers whose managedFields cover ``path`` (a field or something it is inside of)."""
    keys = _fields_key(path)
    if not keys:
        return []
    found = []
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        node: Any = entry.get("fieldsV1") or {}
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                node = None
                break
            node = node[key]
            if node == {} or "." in (node or {}):  # a leaf, or a map/list owned as a whole
                break
        if node is not None and entry.get("manager") not in found:
            found.append(str(entry.get("manager")))
    return found


# JSON pointers (RFC 6901) of fields that are not drift, a JSON list in this annotation of the applied object
# (fleet.yaml diff.comparePatches, set by fleet/sources/render/fleetbundle.py); ["*"]: the whole object.
COMPARE_IGNORE_ANNOTATION = "fleetgate.io/compare-ignore"


def compare_ignored(applied: dict[str, Any]) -> list[str]:
    raw = ((applied.get("metadata") or {}).get("annotations") or {}).get(COMPARE_IGNORE_ANNOTATION)
    try:
        pointers = json.loads(raw) if isinstance(raw, str) else []
    except ValueError:
        return []
    return [p for p in pointers if isinstance(p, str)] if isinstance(pointers, list) else []


def _without(doc: Any, pointer: str) -> None:
    """Remove the field at ``pointer`` from ``doc`` in place, when it is there."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")] if pointer else []
    node = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, dict) and part in node:
            if last:
                del node[part]
                return
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            if last:
                del node[int(part)]
                return
            node = node[int(part)]
        else:
            return


def changed_fields(applied: dict[str, Any], live: dict[str, Any]) -> list[FieldDrift]:
    out: list[FieldDrift] = []
    ignored = compare_ignored(applied)
    if "*" in ignored:
        return out
    intent = intent_of(applied)
    if ignored:
        intent, live = copy.deepcopy(intent), copy.deepcopy(live)
        for pointer in ignored:
            _without(intent, pointer)
            _without(live, pointer)
    _compare("", intent, live, out)
    for d in out:
        d.managers = owners(live, d.path)
    if is_secret(applied):
        for d in out:
            if d.path.startswith((".data", ".stringData")):
                d.expected, d.actual = MASK, (MASK if d.actual is not None else None)
    return out
