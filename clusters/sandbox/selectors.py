"""Label and field selectors as the apiserver parses them from list and watch query strings."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\((.*)\)\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, text: str) -> str:
    if not _KEY_RE.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if not _VALUE_RE.match(value) or len(value) > 63:
        raise bad_request(f"unable to parse requirement: invalid label value {value!r} in {text!r}")
    return value


def _requirement(op: str, key: str, values: frozenset[str]) -> Callable[[dict[str, str]], bool]:
    if op in ("in", "="):
        return lambda labels: labels.get(key) in values
    if op in ("notin", "!="):
        return lambda labels: labels.get(key) not in values
    if op == "!":
        return lambda labels: key not in labels
    return lambda labels: key in labels


def parse_label_selector(text: str | None) -> Matcher | None:
    """A predicate on an object's labels; None when the selector is empty (matches all)."""
    if not text or not text.strip():
        return None
    reqs: list[Callable[[dict[str, str]], bool]] = []
    for raw in _split_top(text):
        part = raw.strip()
        if not part:
            raise bad_request(f"unable to parse requirement: found empty requirement in {text!r}")
        m = _SET_RE.match(part)
        if m:
            key = _check_key(m.group(1), text)
            values = frozenset(_check_value(v.strip(), text) for v in m.group(4).split(","))
            reqs.append(_requirement(m.group(3), key, values))
            continue
        if "!=" in part:
            key, value = (s.strip() for s in part.split("!=", 1))
            key, value = _check_key(key, text), _check_value(value, text)
            reqs.append(_requirement("!=", key, frozenset({value})))
        elif "==" in part or "=" in part:
            key, value = (s.strip() for s in part.split("==" if "==" in part else "=", 1))
            key, value = _check_key(key, text), _check_value(value, text)
            reqs.append(_requirement("=", key, frozenset({value})))
        elif part.startswith("!"):
            key = _check_key(part[1:].strip(), text)
            reqs.append(_requirement("!", key, frozenset()))
        else:
            key = _check_key(part, text)
            reqs.append(_requirement("exists", key, frozenset()))

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return match


# Field labels beyond metadata.name/namespace that kube-apiserver supports for some kinds.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "Event": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "Pod": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
    "Job": ("status.successful",),
    "ReplicaSet": ("status.replicas",),
}


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if path == "source" and isinstance(cur, dict):
        return str(cur.get("component", ""))
    return str(cur)


def parse_field_selector(text: str | None, kind: str = "") -> Matcher | None:
    """A predicate for field selectors (``=``, ``==``, ``!=``) on ``metadata.name``, ``metadata.namespace``
    and the extra field labels kube-apiserver knows for ``kind`` (events by involvedObject, ...)."""
    if not text or not text.strip():
        return None
    allowed = ("metadata.name", "metadata.namespace", *KIND_FIELDS.get(kind, ()))
    reqs: list[tuple[str, str, bool]] = []
    for raw in text.split(","):
        part = raw.strip()
        if "!=" in part:
            fld, value = part.split("!=", 1)
            equal = False
        elif "==" in part:
            fld, value = part.split("==", 1)
            equal = True
        elif "=" in part:
            fld, value = part.split("=", 1)
            equal = True
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        fld = fld.strip()
        if fld not in allowed:
            known = ", ".join(f'"{a}"' for a in allowed)
            raise bad_request(f'"{fld}" is not a known field selector: only {known}')
        reqs.append((fld, value.strip(), equal))

    def match(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, fld) == value) == equal for fld, value, equal in reqs)

    return match
