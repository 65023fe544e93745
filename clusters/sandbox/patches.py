"""JSON merge patch (RFC 7386), strategic merge patch and JSON patch (RFC 6902)."""

from __future__ import annotations

from typing import Any

from .errors import ApiError, bad_request
from .fieldmanager import SET, item_element, list_spec


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, "Invalid", message, {})


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target: Any, patch: Any, name: str = "", path: tuple[str, ...] = ()) -> Any:
    """Strategic merge: maps merge, lists with a patch merge key merge by key (``$patch: delete``
    removes an item, ``$patch: replace`` replaces), ``$deleteFromPrimitiveList/<f>`` removes
    values, ``$setElementOrder`` and ``$retainKeys`` directives are accepted."""
    if not isinstance(patch, dict):
        return patch
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            fld = k.split("/", 1)[1]
            if isinstance(out.get(fld), list) and isinstance(v, list):
                out[fld] = [x for x in out[fld] if x not in v]
            continue
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
            continue
        cur = out.get(k)
        sub = (*path, "f:" + k)
        if isinstance(v, list):
            out[k] = _merge_list(cur if isinstance(cur, list) else [], v, k, sub)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(cur, v, k, sub)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = v
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(cur: list[Any], patch: list[Any], name: str, path: tuple[str, ...]) -> list[Any]:
    spec = list_spec(name, patch or cur, path, True)
    if spec is None:
        if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
            return [i for i in patch if not (isinstance(i, dict) and "$patch" in i)]
        return patch
    if spec == SET:
        return cur + [x for x in patch if x not in cur]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [i for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    result = list(cur)
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"strategic merge patch: list {name} expects maps")
        directive = item.get("$patch")
        body = {k: v for k, v in item.items() if k != "$patch"}
        el = item_element({**body, **{k: item[k] for k in spec if k in item}}, spec, path)
        idx = next((i for i, c in enumerate(result) if _element(c, spec, path) == el), -1)
        if directive == "delete":
            if idx >= 0:
                del result[idx]
        elif idx >= 0:
            result[idx] = strategic_merge_patch(result[idx], body, name, path)
        else:
            result.append(strategic_merge_patch({}, body, name, path))
    return result


def _element(item: Any, spec: Any, path: tuple[str, ...]) -> str | None:
    try:
        return item_element(item, spec, path)
    except ApiError:
        return None


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _unprocessable(f"json patch: invalid path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise _unprocessable(f"json patch: path /{'/'.join(parts)} not found")
    return cur


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _unprocessable(f"json patch: index {last} out of range")
    else:
        raise _unprocessable("json patch: cannot add to a scalar")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise _unprocessable("json patch: cannot remove the whole document")
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _unprocessable(f"json patch: path /{'/'.join(parts)} not found")


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply RFC 6902 operations to ``doc`` (a private copy that is changed in place)."""
    import copy

    if not isinstance(ops, list):
        raise bad_request("json patch: the body must be a list of operations")
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request("json patch: every operation needs op and path")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _resolve(doc, parts)
            if parts:
                _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = _remove(doc, src) if kind == "move" else copy.deepcopy(_resolve(doc, src))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _resolve(doc, parts) != op.get("value"):
                raise _unprocessable(f"json patch: test operation failed at {op['path']}")
        else:
            raise bad_request(f"json patch: unknown operation {kind!r}")
    return doc
