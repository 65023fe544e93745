"""Kyverno's pattern language (``validate.pattern`` / ``anyPattern``), as ``pkg/engine/validate`` and
``pkg/engine/pattern`` define it.

Values: wildcards ``*`` ``?``; ``|`` (or) and ``&`` (and) alternatives; operators ``>``, ``<``, ``>=``,
``<=``, ``!``; ranges ``1-10`` and ``1!-10``; numbers, Kubernetes quantities (``500m``, ``1Gi``) and Go
durations (``1h``) compared as such; ``null`` (``~`` / empty) matching an absent, zero or empty value.

Keys (anchors): ``(key)`` conditional (skip the rule when it does not hold), ``<(key)`` global (skip the
whole rule), ``=(key)`` equality (check only if present; ``?(key)`` is accepted as the same), ``X(key)``
negation (the key must be absent), ``^(key)`` existence (at least one list element matches). A list
pattern of maps checks every element. ``+(key)`` (add if not present) is a mutate anchor: refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from policies.formats import FormatError, limits
from policies.formats.kyverno.values import has_wildcard, parse_duration, parse_quantity, wildcard_match

_ANCHOR = re.compile(r"^([<=X^?+])?\((.+)\)$", re.DOTALL)

CONDITION, GLOBAL, NEGATION, EQUALITY, EXISTENCE, ADD = "", "<", "X", "=", "^", "+"

_IN_RANGE = re.compile(r"^([-|+]?\d+(?:\.\d+)?[A-Za-z]*)-([-|+]?\d+(?:\.\d+)?[A-Za-z]*)$")
_NOT_IN_RANGE = re.compile(r"^([-|+]?\d+(?:\.\d+)?[A-Za-z]*)!-([-|+]?\d+(?:\.\d+)?[A-Za-z]*)$")

_KIND_MESSAGES = {
    "conditional": "conditional anchor mismatch",
    "global": "global anchor mismatch",
    "negation": "negation anchor matched in resource",
}


def parse_anchor(key: str) -> tuple[str, str] | None:
    """``(modifier, key)`` of an anchored key, None for a plain key."""
    m = _ANCHOR.match(key.strip())
    if not m:
        return None
    modifier = m.group(1) or ""
    if modifier == "?":
        modifier = EQUALITY
    return modifier, m.group(2)


def refuse_mutate_anchors(pattern: Any, where: str) -> None:
    """Refuse ``+(key)``, the add-if-not-present anchor: it belongs to mutate rules (Kyverno's validate
    patterns take the conditional, global, equality, negation and existence anchors only)."""
    if isinstance(pattern, Mapping):
        for key, value in pattern.items():
            a = parse_anchor(str(key))
            if a and a[0] == ADD:
                raise FormatError(
                    f"{where}: the anchor {str(key).strip()!r} (+(key), add if not present) is a mutate "
                    "anchor; a validate pattern cannot use it (use =(key) to check a key only when present)"
                )
            refuse_mutate_anchors(value, f"{where}.{a[1] if a else key}")
    elif isinstance(pattern, list):
        for i, item in enumerate(pattern):
            refuse_mutate_anchors(item, f"{where}[{i}]")


@dataclass
class Err:
    message: str
    kind: str = ""  # "conditional" | "global" | "negation" | "pattern" (a combined skip) | ""

    def is_kind(self, kind: str) -> bool:
        if self.kind in _KIND_MESSAGES:
            return self.kind == kind
        return _KIND_MESSAGES[kind] in self.message


def _skip(err: Err) -> bool:
    return err.is_kind("conditional") or err.is_kind("global")


@dataclass
class PatternResult:
    """None error = the resource matches. ``skip``: a conditional/global anchor did not hold.
    ``path`` "" on a failure means Kyverno reports an error (anchor keys missing) instead of a fail."""

    ok: bool
    skip: bool = False
    path: str = ""
    message: str = ""


class _AnchorMap:
    def __init__(self) -> None:
        self.seen: dict[str, bool] = {}
        self.error: Err | None = None

    def check(self, pattern: Mapping[str, Any], resource: Any) -> None:
        for key in pattern:
            a = parse_anchor(key)
            if a and a[0] in (CONDITION, EXISTENCE, NEGATION):
                if self.seen.get(key):
                    continue
                self.seen.setdefault(key, False)
                if _has_key(resource, a[1]):
                    self.seen[key] = True

    def keys_missing(self) -> bool:
        for key, present in self.seen.items():
            if not present:
                a = parse_anchor(key)
                if a and a[0] == NEGATION:
                    continue
                return True
        return False


def _has_key(resource: Any, key: str) -> bool:
    if isinstance(resource, Mapping):
        return key in resource
    if isinstance(resource, list):
        return any(_has_key(v, key) for v in resource)
    return False


def match_pattern(resource: Any, pattern: Any) -> PatternResult:
    limits.check_time()  # the gate's time budget (policies.formats.limits)
    ac = _AnchorMap()
    path, err = _element(resource, pattern, "/", ac)
    if err is None:
        return PatternResult(True)
    if _skip(err):
        return PatternResult(False, skip=True, message=ac.error.message if ac.error else err.message)
    if err.is_kind("negation"):
        return PatternResult(False, path=path, message=err.message)
    if ac.keys_missing():
        return PatternResult(False, path="", message=err.message)
    return PatternResult(False, path=path, message=err.message)


def _element(resource: Any, pattern: Any, path: str, ac: _AnchorMap) -> tuple[str, Err | None]:
    if isinstance(pattern, Mapping):
        if not isinstance(resource, Mapping):
            return path, Err(
                f"pattern and resource have different structures. Path: {path}. "
                f"Expected map, found {_go_type(resource)}"
            )
        ac.check(pattern, resource)
        return _map(resource, pattern, path, ac)
    if isinstance(pattern, list):
        if not isinstance(resource, list):
            return path, Err(
                f"validation rule failed at path {path}, "
                "resource does not satisfy the expected overlay pattern"
            )
        return _array(resource, pattern, path, ac)
    if isinstance(resource, list):
        for item in resource:
            if not validate_value(item, pattern):
                return path, Err(
                    f"resource value '{_show(resource)}' does not match '{_show(pattern)}' at path {path}"
                )
        return "", None
    if not validate_value(resource, pattern):
        return path, Err(
            f"resource value '{_show(resource)}' does not match '{_show(pattern)}' at path {path}"
        )
    return "", None


def _show(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _go_type(value: Any) -> str:
    if isinstance(value, list):
        return "[]interface {}"
    if value is None:
        return "<nil>"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "float64"
    return type(value).__name__


def _has_nested_anchors(pattern: Any) -> bool:
    if isinstance(pattern, Mapping):
        if any(
            parse_anchor(k) and parse_anchor(k)[0] in (CONDITION, EXISTENCE, EQUALITY, NEGATION, GLOBAL)  # type: ignore[index]
            for k in pattern
        ):
            return True
        return any(_has_nested_anchors(v) for v in pattern.values())
    if isinstance(pattern, list):
        return any(_has_nested_anchors(v) for v in pattern)
    return False


def _expand_metadata(pattern: Mapping[str, Any], resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """``wildcards.ExpandInMetadata``: a wildcard label/annotation key in the pattern is replaced by the
    resource's key that it matches (``app.kubernetes.io/*: "?*"``)."""
    meta_key = next(
        (k for k in pattern if k == "metadata" or (parse_anchor(k) or ("", ""))[1] == "metadata"), None
    )
    if meta_key is None or not isinstance(pattern[meta_key], Mapping):
        return pattern
    res_meta = resource.get("metadata")
    if not isinstance(res_meta, Mapping):
        return pattern
    pmeta = dict(pattern[meta_key])
    changed = False
    for tag in ("labels", "annotations"):
        tag_key = next((k for k in pmeta if k == tag or (parse_anchor(k) or ("", ""))[1] == tag), None)
        if tag_key is None or not isinstance(pmeta[tag_key], Mapping):
            continue
        res_tag = next((v for k, v in res_meta.items() if k == tag), None)
        if not isinstance(res_tag, Mapping):
            continue
        res_data = {str(k): v for k, v in res_tag.items() if isinstance(v, str)}
        new: dict[str, Any] = {}
        for k, v in pmeta[tag_key].items():
            if not has_wildcard(k):
                new[k] = v
                continue
            a = parse_anchor(k)
            inner = a[1] if a else k
            match = next((rk for rk in res_data if wildcard_match(inner, rk)), None)
            if match is None:
                new[k] = v
            else:
                new[f"{a[0]}({match})" if a else match] = v
        pmeta[tag_key] = new
        changed = True
    if not changed:
        return pattern
    out = dict(pattern)
    out[meta_key] = pmeta
    return out


def _map(
    resource: Mapping[str, Any], pattern: Mapping[str, Any], path: str, ac: _AnchorMap
) -> tuple[str, Err | None]:
    pattern = _expand_metadata(pattern, resource)
    anchors: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for key, value in pattern.items():
        a = parse_anchor(key)
        if a and a[0] in (CONDITION, EXISTENCE, EQUALITY, NEGATION):
            anchors[key] = value
        else:
            plain[key] = value

    skip_errors: list[Err] = []
    applied = 0
    for key in sorted(anchors):
        hpath, err = _handle(key, anchors[key], resource, path, ac)
        if err is not None:
            if _skip(err):
                skip_errors.append(err)
                continue
            if not any(e.kind != "pattern" for e in skip_errors):
                return hpath, err
            continue
        applied += 1
    if skip_errors:
        combined = Err("; ".join(e.message for e in skip_errors), "pattern")
        if applied == 0 or any(e.kind != "pattern" for e in skip_errors):
            return path, combined

    front: list[str] = []
    back: list[str] = []
    for key in sorted(plain):
        a = parse_anchor(key)
        if (a and a[0] == GLOBAL) or _has_nested_anchors(plain[key]):
            front.insert(0, key)
        else:
            back.append(key)
    for key in front + back:
        hpath, err = _handle(key, plain[key], resource, path, ac)
        if err is not None:
            return hpath, err
    return "", None


def _array(resource: list[Any], pattern: list[Any], path: str, ac: _AnchorMap) -> tuple[str, Err | None]:
    if not pattern:
        return path, Err("pattern Array empty")
    first = pattern[0]
    if isinstance(first, Mapping):
        applied = 0
        skips: list[Err] = []
        for i, item in enumerate(resource):
            rpath, err = _element(item, first, f"{path}{i}/", ac)
            if err is not None:
                if _skip(err):
                    skips.append(err)
                    continue
                return rpath, err
            applied += 1
        if applied == 0 and skips:
            return path, Err("; ".join(e.message for e in skips), "pattern")
        return "", None
    if not isinstance(first, list):
        return _element(resource, first, path, ac)
    if len(resource) < len(pattern):
        return "", Err(
            f"validate Array failed, array length mismatch, resource Array len is {len(resource)} "
            f"and pattern Array len is {len(pattern)}"
        )
    applied = 0
    skips = []
    for i, sub in enumerate(pattern):
        rpath, err = _element(resource[i], sub, f"{path}{i}/", ac)
        if err is not None:
            if _skip(err):
                skips.append(err)
                continue
            return rpath, err
        applied += 1
    if applied == 0 and skips:
        return path, Err("; ".join(e.message for e in skips), "pattern")
    return "", None


def _handle(
    key: str, pattern: Any, resource: Mapping[str, Any], path: str, ac: _AnchorMap
) -> tuple[str, Err | None]:
    a = parse_anchor(key)
    if a is None or a[0] == ADD:
        cur = f"{path}{key}/"
        value = resource.get(key)
        if pattern == "*":
            if value is not None:
                return "", None
            return path, Err(f"{path}/{key} not found")
        return _element(value, pattern, cur, ac)
    modifier, name = a
    cur = f"{path}{name}/"
    present = name in resource
    if modifier == NEGATION:
        if present:
            ac.error = Err(f"negation anchor matched in resource: {cur} is not allowed", "negation")
            return cur, ac.error
        return "", None
    if modifier == EQUALITY:
        if present:
            rpath, err = _element(resource[name], pattern, cur, ac)
            if err is not None:
                return rpath, err
        return "", None
    if modifier == CONDITION:
        if not present:
            return cur, Err(
                "conditional anchor mismatch: conditional anchor key doesn't exist in the resource",
                "conditional",
            )
        rpath, err = _element(resource[name], pattern, cur, ac)
        if err is not None:
            ac.error = Err(f"conditional anchor mismatch: {err.message}", "conditional")
            return rpath, ac.error
        return "", None
    if modifier == GLOBAL:
        if present:
            rpath, err = _element(resource[name], pattern, cur, ac)
            if err is not None:
                ac.error = Err(f"global anchor mismatch: {err.message}", "global")
                return rpath, ac.error
        return "", None
    if modifier == EXISTENCE:
        if not present:
            return "", None
        value = resource[name]
        if not isinstance(value, list):
            return cur, Err(
                f"invalid resource type {_go_type(value)}: "
                "Existence ^ () anchor can be used only on list/array type resource"
            )
        if not isinstance(pattern, list):
            return cur, Err("invalid pattern type: Pattern has to be of list to compare against resource")
        for sub in pattern:
            if not isinstance(sub, Mapping):
                return cur, Err(
                    "invalid pattern type: Pattern has to be of type map to compare against items in resource"
                )
            if not any(_element(item, sub, f"{cur}{i}/", ac)[1] is None for i, item in enumerate(value)):
                return cur, Err(f"existence anchor validation failed at path {cur}")
        return "", None
    return _element(resource.get(key), pattern, f"{path}{key}/", ac)


# ------------------------------------------------------------------------------------------- values


def validate_value(value: Any, pattern: Any) -> bool:
    """``pattern.Validate``: one resource value against one pattern value."""
    if isinstance(pattern, bool):
        return isinstance(value, bool) and value == pattern
    if isinstance(pattern, int):
        return _int_pattern(value, pattern)
    if isinstance(pattern, float):
        return _float_pattern(value, pattern)
    if pattern is None:
        if isinstance(value, bool):
            return not value
        if isinstance(value, (int, float)):
            return value == 0
        if isinstance(value, str):
            return value == ""
        return value is None
    if isinstance(pattern, Mapping):
        return isinstance(value, Mapping)
    if isinstance(pattern, str):
        return _string_patterns(value, pattern)
    return False


def _int_pattern(value: Any, pattern: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value == pattern
    if isinstance(value, float):
        return value == math.trunc(value) and int(value) == pattern
    if isinstance(value, str):
        try:
            return int(value, 10) == pattern
        except ValueError:
            return False
    return False


def _float_pattern(value: Any, pattern: float) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return pattern == math.trunc(pattern) and int(pattern) == value
    if isinstance(value, float):
        return value == pattern
    if isinstance(value, str):
        try:
            return float(value) == pattern
        except ValueError:
            return False
    return False


def _string_patterns(value: Any, pattern: str) -> bool:
    if isinstance(value, str) and value == pattern:
        return True
    for alternative in pattern.split("|"):
        alternative = alternative.strip(" ")
        if all(_string_pattern(value, cond.strip(" ")) for cond in alternative.split("&")):
            return True
    return False


def operator_of(pattern: str) -> str:
    if len(pattern) < 2:
        return ""
    for op in (">=", "<=", ">", "<", "!"):
        if pattern.startswith(op):
            if op == "!" and _NOT_IN_RANGE.match(pattern):
                return "!-"
            return op
    if _NOT_IN_RANGE.match(pattern):
        return "!-"
    if _IN_RANGE.match(pattern):
        return "-"
    return ""


def _string_pattern(value: Any, pattern: str) -> bool:
    op = operator_of(pattern)
    if op == "-":
        m = _IN_RANGE.match(pattern)
        if m is None:
            return False
        return _string_pattern(value, f">= {m.group(1)}") and _string_pattern(value, f"<= {m.group(2)}")
    if op == "!-":
        m = _NOT_IN_RANGE.match(pattern)
        if m is None:
            return False
        return _string_pattern(value, f"< {m.group(1)}") or _string_pattern(value, f"> {m.group(2)}")
    return _compare(value, pattern[len(op) :].strip(), op)


def _number_string(value: Any) -> str | None:
    if value is None:
        return "0"
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:f}"
    if isinstance(value, int):
        return str(value)
    return None


def _ordered(result: int, op: str) -> bool | None:
    return {
        "": result == 0,
        "!": result != 0,
        ">": result > 0,
        "<": result < 0,
        ">=": result >= 0,
        "<=": result <= 0,
    }.get(op)


def _cmp(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def _compare(value: Any, pattern: str, op: str) -> bool:
    pdur = parse_duration(pattern)
    if pdur is not None:
        sval = _number_string(value)
        vdur = parse_duration(sval) if sval is not None else None
        if vdur is not None:
            res = _ordered(_cmp(vdur, pdur), op)
            if res is not None:
                return res
    pq = parse_quantity(pattern)
    if pq is not None:
        sval = _number_string(value)
        vq = parse_quantity(sval) if sval is not None else None
        if vq is not None:
            res = _ordered(_cmp(vq, pq), op)
            if res is not None:
                return res
    if op in ("", "!"):
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            text = _go_float_e(value)
        elif isinstance(value, str):
            text = value
        else:
            return False
        matched = wildcard_match(pattern, text)
        return not matched if op == "!" else matched
    return False


def _go_float_e(value: float) -> str:
    """``strconv.FormatFloat(v, 'E', -1, 64)``: shortest mantissa, two-digit exponent (``1.5E+00``)."""
    if value == 0:
        return "0E+00"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(str(d) for d in digits)
    exp = int(exponent) + len(text) - 1
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}E{'+' if exp >= 0 else '-'}{abs(exp):02d}"
