"""``{{ }}`` variable substitution and condition operators (preconditions, ``deny.conditions``), as
``pkg/engine/variables`` defines them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from policies.formats.kyverno.jmes import JMESPathError, NotFound, search
from policies.formats.kyverno.pattern import operator_of, validate_value
from policies.formats.kyverno.values import go_sprint, parse_duration, parse_quantity, wildcard_match

_VARIABLE = re.compile(r"(^|[^\\])(\{\{(?:\{[^{}]*\}|[^{}])*\}\})")

OPERATORS = (
    "Equal",
    "Equals",
    "NotEqual",
    "NotEquals",
    "In",
    "AnyIn",
    "AllIn",
    "NotIn",
    "AnyNotIn",
    "AllNotIn",
    "GreaterThan",
    "GreaterThanOrEquals",
    "LessThan",
    "LessThanOrEquals",
    "DurationGreaterThan",
    "DurationGreaterThanOrEquals",
    "DurationLessThan",
    "DurationLessThanOrEquals",
)
_OPERATORS_LOWER = {op.lower(): op for op in OPERATORS}


class SubstitutionError(ValueError):
    """A variable could not be resolved (``Unknown key``) or its JMESPath failed."""


def query(context: Mapping[str, Any], expression: str) -> Any:
    try:
        return search(expression, context)
    except NotFound as exc:
        raise SubstitutionError(f"failed to resolve {expression}: JMESPath query failed: {exc}") from exc
    except JMESPathError as exc:
        raise SubstitutionError(f"failed to resolve {expression}: {exc}") from exc


def has_variables(document: Any) -> bool:
    if isinstance(document, str):
        return bool(_VARIABLE.search(document))
    if isinstance(document, Mapping):
        return any(has_variables(k) or has_variables(v) for k, v in document.items())
    if isinstance(document, list):
        return any(has_variables(v) for v in document)
    return False


def substitute(document: Any, context: Mapping[str, Any]) -> Any:
    """Replace every ``{{ expr }}`` in the strings (and keys) of ``document``. A string that is exactly
    one variable becomes the variable's value (any type); otherwise the value is printed into the string
    (JSON for non-strings). ``\\{{`` escapes."""
    if isinstance(document, str):
        return _substitute_string(document, context)
    if isinstance(document, Mapping):
        return {
            (_substitute_string(k, context) if isinstance(k, str) and "{{" in k else k): substitute(
                v, context
            )
            for k, v in document.items()
        }
    if isinstance(document, list):
        return [substitute(v, context) for v in document]
    return document


def _substitute_string(value: str, context: Mapping[str, Any]) -> Any:
    if "{{" not in value:
        return value
    delete = str((context.get("request") or {}).get("operation") or "") == "DELETE"
    found = [m.group(2) for m in _VARIABLE.finditer(value)]
    rounds = 0
    while found:
        rounds += 1
        if rounds > 100:
            raise SubstitutionError(f"variable substitution did not converge in {value!r}")
        shallow = False
        for var in found:
            inner = var[2:-2].strip()
            if inner.startswith("-"):
                inner, shallow = inner[1:].strip(), True
            if delete:
                inner = inner.replace("request.object", "request.oldObject")
            if inner == "@":
                raise SubstitutionError("{{@}} is only supported inside patterns")
            resolved = query(context, inner)
            if value == var:
                return resolved
            text = resolved if isinstance(resolved, str) else json.dumps(resolved, separators=(",", ":"))
            if shallow and isinstance(resolved, str):
                text = text.replace("{{", "\\{{")
            value = value.replace(var, text, 1)
        found = [] if shallow else [m.group(2) for m in _VARIABLE.finditer(value)]
    return value.replace("\\{{", "{{")


# ------------------------------------------------------------------------------------------ operators


def normalize_operator(op: Any, where: str) -> str:
    canonical = _OPERATORS_LOWER.get(str(op).lower())
    if canonical is None:
        from policies.formats import FormatError

        raise FormatError(f"{where}.operator {op!r} is not one of {', '.join(OPERATORS)}")
    return canonical


def evaluate_operator(op: str, key: Any, value: Any) -> bool:
    if op in ("Equal", "Equals"):
        return _equal(key, value)
    if op in ("NotEqual", "NotEquals"):
        return not _equal(key, value)
    if op == "In":
        return _in(key, value)
    if op == "NotIn":
        return not _in(key, value)
    if op in ("AnyIn", "AllIn", "AnyNotIn", "AllNotIn"):
        return _set_op(op, key, value)
    if op.startswith("Duration"):
        return _duration_op(op, key, value)
    return _numeric(op, key, value)


def _duration(value: Any, *, zero_ok: bool = True) -> Any:
    if isinstance(value, str):
        if value == "0" and not zero_ok:
            return None
        return parse_duration(value)
    return None


def _both_durations(key: Any, value: Any) -> tuple[Any, Any] | None:
    kd = _duration(key, zero_ok=False)
    vd = _duration(value, zero_ok=False)
    if kd is None and vd is None:
        return None
    from decimal import Decimal

    if kd is None:
        if isinstance(key, (int, float)) and not isinstance(key, bool):
            kd = Decimal(str(int(key)))
        else:
            return None
    if vd is None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            vd = Decimal(str(int(value)))
        else:
            return None
    return kd, vd


def _equal(key: Any, value: Any) -> bool:
    if isinstance(key, bool):
        return isinstance(value, bool) and key == value
    if isinstance(key, (int, float)):
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return float(key) == float(value)
        if isinstance(value, str):
            # Kyverno's context numbers are float64: "3" and "3.0" both equal 3
            try:
                return float(value) == float(key)
            except ValueError:
                return False
        return False
    if isinstance(key, str):
        durations = _both_durations(key, value)
        if durations is not None:
            return durations[0] == durations[1]
        kq = parse_quantity(key)
        if kq is not None and isinstance(value, str):
            vq = parse_quantity(value)
            return vq is not None and kq == vq
        if isinstance(value, str):
            return wildcard_match(value, key)
        return False
    if isinstance(key, Mapping):
        return isinstance(value, Mapping) and _deep_equal(key, value)
    if isinstance(key, list):
        return isinstance(value, list) and _deep_equal(key, value)
    return False


def _deep_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _in(key: Any, value: Any) -> bool:
    """The deprecated In: a scalar key in a list (or JSON list string), or every element of a list key."""
    if isinstance(key, list):
        values = _as_list(value)
        if values is None:
            return False
        return all(any(_deep_equal(k, v) for v in values) for k in key)
    if isinstance(key, (str, int, float, bool)):
        values = _as_list(value)
        if values is None:
            return isinstance(value, str) and value == go_sprint(key)
        return any(go_sprint(v) == go_sprint(key) for v in values)
    return False


def _as_list(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            loaded = json.loads(value)
        except ValueError:
            return [value]
        return loaded if isinstance(loaded, list) else None
    return None


def _string_values(value: Any) -> list[str] | None:
    if isinstance(value, list):
        return [go_sprint(v) for v in value]
    if isinstance(value, (int, float, bool)):
        return [go_sprint(value)]
    if isinstance(value, str):
        try:
            loaded = json.loads(value)
        except ValueError:
            return [value]
        if isinstance(loaded, list) and all(isinstance(x, str) for x in loaded):
            return loaded
        if isinstance(loaded, list):
            return None
        return [value]
    return None


def _wmatch(a: str, b: str) -> bool:
    return wildcard_match(a, b) or wildcard_match(b, a)


def _set_op(op: str, key: Any, value: Any) -> bool:
    negate_any = op == "AnyNotIn"
    negate_all = op == "AllNotIn"
    if isinstance(key, list):
        keys = [go_sprint(k) for k in key]
    elif isinstance(key, (str, int, float, bool)):
        keys = [go_sprint(key)]
    else:
        return False
    scalar_key = not isinstance(key, list)
    # a range value ("1-10") checks each key against it
    if isinstance(value, str) and operator_of(value) == "-":
        inside = [validate_value(k, value) for k in keys]
        if op == "AnyIn":
            return any(inside)
        if op == "AllIn":
            return all(inside)
        if op == "AnyNotIn":
            return not all(inside) if not scalar_key else not inside[0]
        return not any(inside)
    if isinstance(value, str) and scalar_key and wildcard_match(value, keys[0]):
        return op in ("AnyIn", "AllIn")
    values = _string_values(value)
    if values is None:
        return False
    if scalar_key and isinstance(value, str):
        found = any(keys[0] == v for v in values)
    elif scalar_key:
        found = any(_wmatch(v, keys[0]) for v in values)
    else:
        found = False
    if scalar_key:
        return not found if (negate_any or negate_all) else found
    matches = [any(_wmatch(k, v) for v in values) for k in keys]
    if op == "AnyIn":
        return any(matches)
    if op == "AllIn":
        return all(matches)
    if negate_any:
        return not all(matches)
    return not any(matches)


def _numeric(op: str, key: Any, value: Any) -> bool:
    cmp = _numeric_cmp(key, value)
    if cmp is None:
        return False
    return {
        "GreaterThan": cmp > 0,
        "GreaterThanOrEquals": cmp >= 0,
        "LessThan": cmp < 0,
        "LessThanOrEquals": cmp <= 0,
    }[op]


def _sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def _numeric_cmp(key: Any, value: Any) -> int | None:
    if isinstance(key, bool) or isinstance(value, bool):
        return None
    durations = _both_durations(key, value)
    if durations is not None:
        return _sign(*durations)
    if isinstance(key, (int, float)):
        if isinstance(value, (int, float)):
            return _sign(key, value)
        if isinstance(value, str):
            try:
                return _sign(key, float(value))
            except ValueError:
                return None
        return None
    if isinstance(key, str):
        kq = parse_quantity(key)
        vq = parse_quantity(value) if isinstance(value, str) else None
        if kq is not None and vq is not None:
            return _sign(kq, vq)
        try:
            return _numeric_cmp(float(key), value)
        except ValueError:
            pass
        from policies.formats.kyverno.jmes import _semver_key

        kv = _semver_key(key) if re.match(r"^\d+\.\d+\.\d+", key) else None
        vv = _semver_key(value) if isinstance(value, str) and re.match(r"^\d+\.\d+\.\d+", value) else None
        if kv is not None and vv is not None:
            return _sign(kv, vv)
    return None


def _duration_op(op: str, key: Any, value: Any) -> bool:
    from decimal import Decimal

    def seconds(v: Any) -> Any:
        if isinstance(v, bool):
            return None
        if isinstance(v, (int, float)):
            return Decimal(int(v))
        if isinstance(v, str):
            return parse_duration(v)
        return None

    k, v = seconds(key), seconds(value)
    if k is None or v is None:
        return False
    return {
        "DurationGreaterThan": k > v,
        "DurationGreaterThanOrEquals": k >= v,
        "DurationLessThan": k < v,
        "DurationLessThanOrEquals": k <= v,
    }[op]


# ----------------------------------------------------------------------------------------- conditions


def evaluate_condition(condition: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[bool, str]:
    key = substitute(condition.get("key"), context)
    value = substitute(condition.get("value"), context)
    return evaluate_operator(condition["operator"], key, value), str(condition.get("message") or "")


def evaluate_conditions(conditions: Any, context: Mapping[str, Any]) -> tuple[bool, str]:
    """``{any: [...], all: [...]}`` (both must hold; an absent block holds), or the legacy list (all)."""
    if conditions is None:
        return True, ""
    if isinstance(conditions, list):
        messages = []
        for cond in conditions:
            ok, msg = evaluate_condition(cond, context)
            if not ok:
                return False, msg
            messages.append(msg)
        return True, ";".join(m for m in messages if m)
    any_ok, all_ok = True, True
    false_msgs: list[str] = []
    true_msgs: list[str] = []
    if conditions.get("any") is not None:
        any_ok = False
        for cond in conditions["any"]:
            ok, msg = evaluate_condition(cond, context)
            if ok:
                any_ok = True
                true_msgs.append(msg)
                break
            false_msgs.append(msg)
    for cond in conditions.get("all") or []:
        ok, msg = evaluate_condition(cond, context)
        if not ok:
            all_ok = False
            false_msgs.append(msg)
            break
        true_msgs.append(msg)
    result = any_ok and all_ok
    return result, "; ".join(m for m in (true_msgs if result else false_msgs) if m)
