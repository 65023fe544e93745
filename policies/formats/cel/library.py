"""The Kubernetes CEL libraries the Rust ``cel`` crate does not ship, as Python functions.

lists (k8s library/lists.go): ``isSorted``, ``sum``, ``min``, ``max``, ``indexOf``, ``lastIndexOf``;
regex (regex.go): ``find``, ``findAll`` on RE2 (:mod:`policies.formats.goregex`; ``matches`` is the
crate's own, Rust's linear-time ``regex``); cel-go's strings extension:
``charAt``, ``indexOf``, ``lastIndexOf``, ``lowerAscii``, ``upperAscii``, ``replace``, ``split``,
``substring``, ``trim``, ``join``, ``reverse``, ``strings.quote``, ``format``; plus the quantity, URL,
IP and CIDR libraries (quantity.py, net.py) and the helpers the source rewrite calls (optional selection
and indexing, ``string()`` of the opaque types). A function name several libraries share (``indexOf``
on strings and lists, ``ip`` as conversion and as ``cidr.ip()``, ``add``...) dispatches on its
receiver.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import cel

from policies.formats import goregex
from policies.formats.cel import net, quantity
from policies.formats.cel.values import TAG, CelRuntimeError, opaque_type, type_name

# ---------------------------------------------------------------- helpers


def _comparable(items: list[Any], what: str) -> None:
    kinds = {type_name(i) for i in items}
    if kinds - {"int", "double"} and len(kinds) > 1:
        raise CelRuntimeError(f"{what}: list elements must be of one comparable type")
    if kinds & {"map", "list", "null_type", "bool"} - ({"bool"} if kinds == {"bool"} else set()):
        raise CelRuntimeError(f"{what}: no such overload for {sorted(kinds)[0]}")


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise CelRuntimeError(f"no such overload: {what} expects a list, got {type_name(value)}")
    return list(value)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CelRuntimeError(f"no such overload: {what} expects a string, got {type_name(value)}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CelRuntimeError(f"no such overload: {what} expects an int, got {type_name(value)}")
    return value


# ---------------------------------------------------------------- lists


def is_sorted(items: Any) -> bool:
    values = _list(items, "isSorted")
    _comparable(values, "isSorted")
    return all(a <= b for a, b in pairwise(values))


def list_sum(items: Any) -> Any:
    values = _list(items, "sum")
    if not values:
        return 0
    kinds = {type_name(v) for v in values}
    if len(kinds) > 1 or (
        not kinds <= {"int", "double", "duration"} and not (all(isinstance(v, timedelta) for v in values))
    ):
        raise CelRuntimeError("sum: list elements must be all int, all uint, all double or all duration")
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def _extreme(items: Any, what: str, pick: Callable[..., Any]) -> Any:
    values = _list(items, what)
    if not values:
        raise CelRuntimeError(f"{what} called on empty list")
    _comparable(values, what)
    return pick(values)


def list_min(items: Any, *more: Any) -> Any:
    if more:  # cel-go core min(a, b, ...) is not a Kubernetes function; keep the list form only
        raise CelRuntimeError("min() takes a list: [a, b].min()")
    return _extreme(items, "min", min)


def list_max(items: Any, *more: Any) -> Any:
    if more:
        raise CelRuntimeError("max() takes a list: [a, b].max()")
    return _extreme(items, "max", max)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    )


def index_of(receiver: Any, item: Any, *start: Any) -> int:
    if isinstance(receiver, str):
        return _string_index_of(receiver, item, *start)
    values = _list(receiver, "indexOf")
    for i, v in enumerate(values):
        if _same(v, item) and v == item:
            return i
    return -1


def last_index_of(receiver: Any, item: Any, *start: Any) -> int:
    if isinstance(receiver, str):
        return _string_last_index_of(receiver, item, *start)
    values = _list(receiver, "lastIndexOf")
    for i in range(len(values) - 1, -1, -1):
        if _same(values[i], item) and values[i] == item:
            return i
    return -1


# ---------------------------------------------------------------- strings (cel-go ext.Strings)


def _string_index_of(text: str, sub: Any, *start: Any) -> int:
    sub = _str(sub, "indexOf")
    offset = _int(start[0], "indexOf") if start else 0
    if offset < 0 or offset > len(text):
        raise CelRuntimeError(f"index out of range: {offset}")
    return text.find(sub, offset)


def _string_last_index_of(text: str, sub: Any, *start: Any) -> int:
    sub = _str(sub, "lastIndexOf")
    if start:
        offset = _int(start[0], "lastIndexOf")
        if offset < 0 or offset >= max(len(text), 1):
            raise CelRuntimeError(f"index out of range: {offset}")
        return text.rfind(sub, 0, offset + len(sub))
    return text.rfind(sub)


def char_at(text: Any, index: Any) -> str:
    text, index = _str(text, "charAt"), _int(index, "charAt")
    if index < 0 or index > len(text):
        raise CelRuntimeError(f"index out of range: {index}")
    return text[index : index + 1]


def lower_ascii(text: Any) -> str:
    return "".join(c.lower() if c.isascii() else c for c in _str(text, "lowerAscii"))


def upper_ascii(text: Any) -> str:
    return "".join(c.upper() if c.isascii() else c for c in _str(text, "upperAscii"))


def replace(text: Any, old: Any, new: Any, *limit: Any) -> str:
    count = _int(limit[0], "replace") if limit else -1
    return _str(text, "replace").replace(_str(old, "replace"), _str(new, "replace"), count)


def split(text: Any, sep: Any, *limit: Any) -> list[str]:
    text, sep = _str(text, "split"), _str(sep, "split")
    n = _int(limit[0], "split") if limit else -1
    if n == 0:
        return []
    if sep == "":
        parts = list(text)
        if n > 0 and len(parts) > n:
            parts = [*parts[: n - 1], "".join(parts[n - 1 :])]
        return parts
    return text.split(sep, n - 1 if n > 0 else -1)


def substring(text: Any, start: Any, *end: Any) -> str:
    text, begin = _str(text, "substring"), _int(start, "substring")
    stop = _int(end[0], "substring") if end else len(text)
    if begin < 0 or begin > len(text) or stop < 0 or stop > len(text):
        raise CelRuntimeError(f"index out of range: {begin if begin < 0 or begin > len(text) else stop}")
    if begin > stop:
        raise CelRuntimeError(f"invalid substring range. start: {begin}, end: {stop}")
    return text[begin:stop]


def trim(text: Any) -> str:
    return _str(text, "trim").strip()


def join(items: Any, *sep: Any) -> str:
    values = _list(items, "join")
    if not all(isinstance(v, str) for v in values):
        raise CelRuntimeError("join: list elements must be strings")
    return (_str(sep[0], "join") if sep else "").join(values)


def reverse(value: Any) -> Any:
    """cel-go's lists ``reverse()`` (Kubernetes 1.37 has no string ``reverse()``, neither has the gate)."""
    return _list(value, "reverse")[::-1]


def quote(text: Any) -> str:
    escaped = _str(text, "strings.quote").encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'


# ---------------------------------------------------------------- string() and format (cel-go ext.Strings)
# The texts below are cel-go's as the kube-apiserver of the test suite prints them (checked by
# tests/policies/test_vap_differential.py): Go's %g for doubles, seconds for durations, RFC 3339 for
# timestamps; inside a list or map %s quotes strings and prints doubles with six decimals.

_VERB = re.compile(r"%(?:\.(\d+))?([sdfeEbxXo%])")
_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def _go_g(value: float) -> str:
    """Go's ``%g`` (shortest digits; exponent form below 1e-4 and from 1e6)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, digits, exp = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    assert isinstance(exp, int)  # noqa: S101 - finite above
    point = len(digits) + exp  # position of the decimal point in the digit string
    exponent = point - 1
    prefix = "-" if sign else ""
    if exponent < -4 or exponent >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return prefix + text + "0" * (point - len(text))
    return f"{prefix}{text[:point]}.{text[point:]}"


def _seconds(value: timedelta) -> str:
    total = Decimal(value.days * 86400 + value.seconds) + Decimal(value.microseconds) / Decimal(10**6)
    text = format(total.normalize(), "f")
    return f"{text}s"


def _timestamp(value: datetime) -> str:
    text = value.isoformat()
    return text.replace("+00:00", "Z")


def to_string(value: Any) -> str:
    """``string(x)`` and top-level ``%s``."""
    kind = opaque_type(value)
    if kind:
        if kind == quantity.TYPE:
            raise CelRuntimeError("no such overload: string(Quantity)")
        return str(value[TAG]).partition("|")[2]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float):
        return _go_g(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CelRuntimeError("invalid UTF-8 in bytes, cannot convert to string") from exc
    if isinstance(value, timedelta):
        return _seconds(value)
    if isinstance(value, datetime):
        return _timestamp(value)
    raise CelRuntimeError(f"no such overload: string({type_name(value)})")


def _inner(value: Any) -> str:
    """An element of a list or map under ``%s``."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return _fixed(value, 6)
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return "b" + json.dumps(value.decode("utf-8", errors="replace"), ensure_ascii=False)
    if isinstance(value, timedelta):
        return f'duration("{_seconds(value)}")'
    if isinstance(value, datetime):
        return f'timestamp("{_timestamp(value)}")'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inner(v) for v in value) + "]"
    if isinstance(value, dict) and not opaque_type(value):
        entries = sorted(f"{_inner(k)}:{_inner(v)}" for k, v in value.items())  # cel-go sorts them
        return "{" + ", ".join(entries) + "}"
    return to_string(value)


def _fixed(value: float, digits: int) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _format_value(value: Any, verb: str, precision: str | None) -> str:
    given = type_name(value)
    if verb == "s":
        if isinstance(value, list | tuple) or (isinstance(value, dict) and not opaque_type(value)):
            return _inner(value)
        if value is None:
            return "null"
        return to_string(value)
    if verb == "d":
        if not _is_int(value):
            raise CelRuntimeError(
                f"error during formatting: decimal clause can only be used on integers, was given {given}"
            )
        return str(value)
    if verb == "f":
        if not isinstance(value, float):
            raise CelRuntimeError(
                f"error during formatting: fixed-point clause can only be used on doubles, was given {given}"
            )
        return _fixed(value, int(precision) if precision is not None else 6)
    if verb in "eE":
        if not isinstance(value, float):
            raise CelRuntimeError(
                f"error during formatting: scientific clause can only be used on doubles, was given {given}"
            )
        if math.isnan(value) or math.isinf(value):
            return _fixed(value, 6)
        mantissa, _, exponent = f"{value:.6e}".partition("e")  # cel-go ignores the precision here
        power = int(exponent)
        return f"{mantissa}×10" + f"{'-' if power < 0 else ''}{abs(power):02d}".translate(_SUPERSCRIPT)
    # x X o b
    if isinstance(value, bool) and verb == "b":
        return "1" if value else "0"
    if isinstance(value, str | bytes) and verb in "xX":
        raw = value.encode() if isinstance(value, str) else value
        return raw.hex().upper() if verb == "X" else raw.hex()
    if not _is_int(value):
        raise CelRuntimeError(
            f"error during formatting: only integers, byte buffers, and strings can be formatted as {verb}, "
            f"was given {given}"
        )
    sign = "-" if value < 0 else ""
    return sign + format(abs(value), verb)


def format_string(text: Any, args: Any) -> str:
    template, values = _str(text, "format"), _list(args, "format")
    out: list[str] = []
    pos = used = 0
    for m in _VERB.finditer(template):
        out.append(template[pos : m.start()])
        pos = m.end()
        if m.group(2) == "%":
            out.append("%")
            continue
        if used >= len(values):
            raise CelRuntimeError(f"index {used} out of range")
        out.append(_format_value(values[used], m.group(2), m.group(1)))
        used += 1
    out.append(template[pos:])
    return "".join(out)


def string_arg(value: Any) -> Any:
    """Rewrite of ``string(x)`` is ``string(k8sStr(x))``: the text is made here, as cel-go makes it."""
    if isinstance(value, str):
        return value
    return to_string(value)


# ---------------------------------------------------------------- regex (k8s library/regex.go)


def _pattern(pattern: Any, what: str) -> str:
    """Go's regexp (RE2) on google-re2, as Kubernetes' regex library compiles it: linear-time matching, no
    backreferences or look-around; an invalid pattern is cel-go's ``Illegal regex`` error."""
    text = _str(pattern, what)
    try:
        goregex.compile(text)
    except goregex.GoRegexError as exc:
        raise CelRuntimeError(f"Illegal regex: {exc.reason}") from None
    return text


def find(text: Any, pattern: Any) -> str:
    found = goregex.search(_pattern(pattern, "find"), _str(text, "find"))
    return found if found is not None else ""


def find_all(text: Any, pattern: Any, *limit: Any) -> list[str]:
    n = _int(limit[0], "findAll") if limit else -1
    if n == 0:
        return []
    return goregex.find_all(_pattern(pattern, "findAll"), _str(text, "findAll"), n if n > 0 else -1)


# ---------------------------------------------------------------- optional syntax helpers


def opt_select(value: Any, field: str) -> cel.OptionalValue:
    if isinstance(value, cel.OptionalValue):
        if not value.has_value():
            return value
        value = value.value()
    if isinstance(value, dict):
        return cel.OptionalValue.of(value[field]) if field in value else cel.OptionalValue.none()
    raise CelRuntimeError(f"no such overload: optional field selection on {type_name(value)}")


def opt_index(value: Any, key: Any) -> cel.OptionalValue:
    if isinstance(value, cel.OptionalValue):
        if not value.has_value():
            return value
        value = value.value()
    if isinstance(value, dict):
        return cel.OptionalValue.of(value[key]) if key in value else cel.OptionalValue.none()
    if isinstance(value, list | tuple):
        if isinstance(key, bool) or not isinstance(key, int | float):
            raise CelRuntimeError(f"no such overload: optional index of a list with {type_name(key)}")
        i = int(key)
        return cel.OptionalValue.of(value[i]) if 0 <= i < len(value) else cel.OptionalValue.none()
    raise CelRuntimeError(f"no such overload: optional index on {type_name(value)}")


# ---------------------------------------------------------------- dispatch


def _by_receiver(
    name: str, options: dict[str, Callable[..., Any]], default: Callable[..., Any] | None
) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        kind = opaque_type(args[0]) if args else None
        fn = options.get(kind or "", default)
        if fn is None:
            raise CelRuntimeError(f"no such overload: {name}({', '.join(type_name(a) for a in args)})")
        return fn(*args)

    call.__name__ = name
    return call


def _ip_or_cidr_ip(*args: Any) -> Any:
    if len(args) == 1 and isinstance(args[0], str):
        return net.ip(args[0])
    if len(args) == 1 and opaque_type(args[0]) == net.CIDR:
        return net.CIDR_IP(args[0])
    raise CelRuntimeError(f"no such overload: ip({', '.join(type_name(a) for a in args)})")


FUNCTIONS: dict[str, Callable[..., Any]] = {
    **quantity.FUNCTIONS,
    **net.FUNCTIONS,
    "ip": _ip_or_cidr_ip,
    "isSorted": is_sorted,
    "sum": list_sum,
    "min": list_min,
    "max": list_max,
    "indexOf": index_of,
    "lastIndexOf": last_index_of,
    "charAt": char_at,
    "lowerAscii": lower_ascii,
    "upperAscii": upper_ascii,
    "replace": replace,
    "split": split,
    "substring": substring,
    "trim": trim,
    "join": join,
    "reverse": reverse,
    "strings.quote": quote,
    "format": format_string,
    "find": find,
    "findAll": find_all,
    "k8sOptSelect": opt_select,
    "k8sOptIndex": opt_index,
    "k8sStr": string_arg,
}
# compareTo / add / sub / sign / isGreaterThan / isLessThan belong to Quantity (semver is not provided)
for _name in (
    "compareTo",
    "add",
    "sub",
    "sign",
    "isGreaterThan",
    "isLessThan",
    "isInteger",
    "asInteger",
    "asApproximateFloat",
):
    _options: dict[str, Callable[..., Any]] = {quantity.TYPE: quantity.FUNCTIONS[_name]}
    FUNCTIONS[_name] = _by_receiver(_name, _options, None)

#: Functions and macros the Rust crate provides itself (last name component, as Program.references gives).
BUILTINS = frozenset(
    {
        "size",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "dyn",
        "type",
        "duration",
        "timestamp",
        "matches",
        "contains",
        "startsWith",
        "endsWith",
        "has",
        "getFullYear",
        "getMonth",
        "getDayOfYear",
        "getDayOfMonth",
        "getDate",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
        "of",
        "none",
        "ofNonZeroValue",
        "hasValue",
        "value",
        "or",
        "orValue",
        "optMap",
        "optFlatMap",
    }
)
#: Namespaces the function names live in (the crate reports ``optional.of`` as a variable ``optional``).
NAMESPACES = frozenset({"optional", "strings", "ip"})
