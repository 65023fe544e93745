"""JMESPath the way Kyverno runs it: the ``jmespath`` library with Kyverno's rules for missing keys
(``kyverno/go-jmespath``: a missing key in a plain path is an error, "Unknown key", while ``||``,
functions, comparisons, pipes and projections treat it as null) and Kyverno's custom functions.

Available custom functions: compare, equal_fold, replace, replace_all, to_upper, to_lower, trim,
trim_prefix, split, regex_replace_all, regex_replace_all_literal, regex_match, pattern_match,
label_match, to_boolean, add, sum, subtract, multiply, divide, modulo, round (numbers, quantities and
durations), base64_decode, base64_encode, path_canonicalize, truncate, semver_compare, parse_json,
parse_yaml, lookup, items, object_from_lists, time_now, time_now_utc, time_since, time_add, time_parse,
time_utc, time_diff, time_before, time_after, time_between, time_truncate, image_normalize, is_external_url,
sha256, sha1, md5, x509_decode (certificates: subject, issuer, serial, validity, public key size).
Not available: random (non-deterministic, refused), time_to_cron.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import posixpath
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.visitor
import yaml

from policies.formats import goregex, limits
from policies.formats.kyverno.values import (
    format_duration,
    parse_duration,
    parse_quantity,
    wildcard_match,
)


class NotFound(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f'Unknown key "{key}" in path')
        self.key = key


class JMESPathError(ValueError):
    pass


class _Interpreter(jmespath.visitor.TreeInterpreter):
    """jmespath's interpreter with Kyverno's behaviour; each projection (a loop) checks the gate's time
    budget when it starts (policies.formats.limits), so nested projections stop between outer iterations."""

    def visit_field(self, node: Any, value: Any) -> Any:
        if isinstance(value, Mapping):
            key = node["value"]
            if key not in value:
                raise NotFound(key)
            return value[key]
        return None

    def _soft(self, node: Any, value: Any) -> Any:
        try:
            return self.visit(node, value)
        except NotFound:
            return None

    def visit_comparator(self, node: Any, value: Any) -> Any:
        comparator_func = self.COMPARATOR_FUNC[node["value"]]
        left = self._soft(node["children"][0], value)
        right = self._soft(node["children"][1], value)
        if node["value"] in self._EQUALITY_OPS:
            return comparator_func(left, right)
        num = (int, float)
        if (
            not isinstance(left, num)
            or not isinstance(right, num)
            or isinstance(left, bool)
            or isinstance(right, bool)
        ):
            return None
        return comparator_func(left, right)

    def visit_function_expression(self, node: Any, value: Any) -> Any:
        resolved = [self._soft(child, value) for child in node["children"]]
        return self._functions.call_function(node["value"], resolved)

    def visit_or_expression(self, node: Any, value: Any) -> Any:
        matched = self._soft(node["children"][0], value)
        if self._is_false(matched):
            matched = self._soft(node["children"][1], value)
        return matched

    def visit_and_expression(self, node: Any, value: Any) -> Any:
        matched = self._soft(node["children"][0], value)
        if self._is_false(matched):
            return matched
        return self.visit(node["children"][1], value)

    def visit_not_expression(self, node: Any, value: Any) -> Any:
        return self._is_false(self._soft(node["children"][0], value))

    def visit_pipe(self, node: Any, value: Any) -> Any:
        result = value
        for child in node["children"]:
            result = self._soft(child, result)
        return result

    def visit_projection(self, node: Any, value: Any) -> Any:
        limits.check_time()
        base = self._soft(node["children"][0], value)
        if not isinstance(base, list):
            return None
        collected = []
        for element in base:
            current = self._soft(node["children"][1], element)
            if current is not None:
                collected.append(current)
        return collected

    def visit_multi_select_list(self, node: Any, value: Any) -> Any:
        if value is None:
            return None
        return [self._soft(child, value) for child in node["children"]]

    def visit_multi_select_dict(self, node: Any, value: Any) -> Any:
        if value is None:
            return None
        return {child["value"]: self._soft(child["children"][0], value) for child in node["children"]}

    def visit_flatten(self, node: Any, value: Any) -> Any:
        try:
            base = self.visit(node["children"][0], value)
        except NotFound:
            return None
        if not isinstance(base, list):
            return None
        merged: list[Any] = []
        for element in base:
            if isinstance(element, list):
                merged.extend(element)
            else:
                merged.append(element)
        return merged

    def visit_filter_projection(self, node: Any, value: Any) -> Any:
        limits.check_time()
        try:
            base = self.visit(node["children"][0], value)
        except NotFound:
            return None
        if not isinstance(base, list):
            return None
        comparator_node = node["children"][2]
        collected = []
        for element in base:
            if self._is_true(self._soft(comparator_node, element)):
                current = self._soft(node["children"][1], element)
                if current is not None:
                    collected.append(current)
        return collected

    def visit_value_projection(self, node: Any, value: Any) -> Any:
        limits.check_time()
        try:
            base = self.visit(node["children"][0], value)
        except NotFound:
            return None
        if not isinstance(base, Mapping):
            return None
        collected = []
        for element in base.values():
            current = self._soft(node["children"][1], element)
            if current is not None:
                collected.append(current)
        return collected


# ------------------------------------------------------------------------------------------ functions


def _type_name(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "null"


def _arg(name: str, args: list[Any], i: int, kind: str) -> Any:
    value = args[i]
    ok = (
        isinstance(value, str)
        if kind == "string"
        else isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    if not ok:
        raise JMESPathError(
            f"JMESPath function '{name}': argument #{i + 1} is not of type {kind.capitalize()}"
        )
    return value


def _to_string(name: str, value: Any, i: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _trim_float(value)
    raise JMESPathError(f"JMESPath function '{name}': argument #{i + 1} is not of type String or Real")


def _trim_float(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return repr(value)


def _go_regex(expr: str) -> str:
    """The pattern, checked as Go's regexp (RE2) compiles it: Kyverno's functions run Go regular expressions
    (:mod:`policies.formats.goregex`: linear time, no backreferences or look-around)."""
    try:
        goregex.compile(expr)
    except goregex.GoRegexError as exc:
        raise JMESPathError(f"invalid regular expression {expr!r}: {exc.reason}") from None
    return expr


class _Operand:
    def __init__(self, kind: str, value: Any, raw: str = "") -> None:
        self.kind, self.value, self.raw = kind, value, raw


def _operand(name: str, value: Any) -> _Operand:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _Operand("scalar", value)
    if isinstance(value, str):
        q = parse_quantity(value)
        if q is not None:
            return _Operand("quantity", q, value)
        d = parse_duration(value)
        if d is not None:
            return _Operand("duration", d, value)
    raise JMESPathError(f"JMESPath function '{name}': invalid operand")


def format_quantity(value: Decimal, like: str) -> str:
    """A quantity in the format of ``like`` (binary suffixes stay binary), canonical like Kubernetes."""
    binary = any(like.endswith(s) for s in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))
    if value == 0:
        return "0"
    if binary and value == value.to_integral_value():
        for suffix, scale in (
            ("Ei", 2**60),
            ("Pi", 2**50),
            ("Ti", 2**40),
            ("Gi", 2**30),
            ("Mi", 2**20),
            ("Ki", 2**10),
        ):
            if value % scale == 0:
                return f"{int(value / scale)}{suffix}"
        return str(int(value))
    for suffix, exp in (
        ("E", 18),
        ("P", 15),
        ("T", 12),
        ("G", 9),
        ("M", 6),
        ("k", 3),
        ("", 0),
        ("m", -3),
        ("u", -6),
        ("n", -9),
    ):
        scaled = value / (Decimal(10) ** exp)
        if scaled == scaled.to_integral_value() and abs(scaled) >= 1:
            return f"{int(scaled)}{suffix}"
    return format(value.normalize(), "f")


def _arith(name: str, args: list[Any]) -> Any:
    a, b = _operand(name, args[0]), _operand(name, args[1])
    if name in ("add", "sum", "subtract"):
        if a.kind != b.kind:
            raise JMESPathError(f"JMESPath function '{name}': types mismatch")
        if a.kind == "scalar":
            return a.value + b.value if name != "subtract" else a.value - b.value
        total = a.value + b.value if name != "subtract" else a.value - b.value
        if a.kind == "quantity":
            return format_quantity(total, a.raw)
        return format_duration(total)
    if name == "multiply":
        if a.kind == "scalar" and b.kind != "scalar":
            a, b = b, a
        if b.kind != "scalar":
            raise JMESPathError(f"JMESPath function '{name}': types mismatch")
        if a.kind == "scalar":
            return a.value * b.value
        if a.kind == "quantity":
            return format_quantity(a.value * Decimal(str(b.value)), a.raw)
        return format_duration(a.value * Decimal(str(b.value)))
    if name in ("divide", "modulo"):
        if (b.kind == "scalar" and b.value == 0) or (b.kind != "scalar" and b.value == 0):
            raise JMESPathError(f"JMESPath function '{name}': Zero divisor passed")
        if a.kind == "scalar" and b.kind == "scalar":
            if name == "divide":
                return a.value / b.value
            if a.value != int(a.value) or b.value != int(b.value):
                raise JMESPathError(f"JMESPath function '{name}': Non-integer argument(s) passed for modulo")
            return float(math.fmod(int(a.value), int(b.value)))
        if a.kind == b.kind:
            if name == "divide":
                return float(a.value / b.value)
            rem = a.value % b.value
            return format_quantity(rem, a.raw) if a.kind == "quantity" else format_duration(rem)
        if b.kind == "scalar" and name == "divide":
            res = a.value / Decimal(str(b.value))
            return format_quantity(res, a.raw) if a.kind == "quantity" else format_duration(res)
        raise JMESPathError(f"JMESPath function '{name}': types mismatch")
    raise JMESPathError(f"unknown function {name}")


_GO_TIME = "%Y-%m-%dT%H:%M:%SZ"


def _parse_rfc3339(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise JMESPathError(f"cannot parse time {text!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _fmt_time(value: datetime) -> str:
    if value.utcoffset() == timedelta(0):
        return (
            value.strftime("%Y-%m-%dT%H:%M:%S")
            + ("." + f"{value.microsecond:06d}".rstrip("0") if value.microsecond else "")
            + "Z"
        )
    return value.isoformat()


def _go_layout_to_strftime(layout: str) -> str:
    table = [
        ("2006", "%Y"),
        ("01", "%m"),
        ("02", "%d"),
        ("15", "%H"),
        ("04", "%M"),
        ("05", "%S"),
        ("Jan", "%b"),
        ("Mon", "%a"),
        ("MST", "%Z"),
        ("-0700", "%z"),
        ("Z07:00", "%z"),
    ]
    out = layout
    for go, py in table:
        out = out.replace(go, py)
    return out


class KyvernoFunctions(jmespath.functions.Functions):
    """Kyverno's JMESPath functions (pkg/engine/jmespath), on top of the standard ones."""

    def call_function(self, function_name: str, resolved_args: list[Any]) -> Any:
        impl = _CUSTOM.get(function_name)
        if impl is None:
            if function_name == "random":
                raise JMESPathError(
                    "JMESPath function 'random' is not available in Fleetgate (not deterministic)"
                )
            return super().call_function(function_name, resolved_args)
        arity = _ARITY[function_name]
        if len(resolved_args) != arity and arity >= 0:
            raise JMESPathError(
                f"JMESPath function '{function_name}' expects {arity} arguments, got {len(resolved_args)}"
            )
        return impl(resolved_args)


def _semver_compare(args: list[Any]) -> bool:
    version = _arg("semver_compare", args, 0, "string")
    rng = _arg("semver_compare", args, 1, "string")
    return _semver_in_range(version, rng)


_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def _semver_key(text: str) -> tuple[Any, ...] | None:
    m = _SEMVER.match(text.strip())
    if not m:
        return None
    pre = m.group(4)
    pre_key: tuple[Any, ...] = (
        (1,) if not pre else (0, *[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")])
    )
    return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0), pre_key)


def _semver_in_range(version: str, rng: str) -> bool:
    v = _semver_key(version) or (0, 0, 0, (1,))
    for alternative in rng.split("||"):
        ok = True
        for part in alternative.split():
            m = re.match(r"^(>=|<=|!=|==|=|>|<)?(.+)$", part)
            if not m:
                raise JMESPathError(f"invalid semver range {rng!r}")
            op, target = m.group(1) or "=", _semver_key(m.group(2))
            if target is None:
                raise JMESPathError(f"invalid semver range {rng!r}")
            cmp = (v > target) - (v < target)
            if not {
                "=": cmp == 0,
                "==": cmp == 0,
                "!=": cmp != 0,
                ">": cmp > 0,
                "<": cmp < 0,
                ">=": cmp >= 0,
                "<=": cmp <= 0,
            }[op]:
                ok = False
                break
        if ok:
            return True
    return False


def _truncate(args: list[Any]) -> str:
    text = _arg("truncate", args, 0, "string")
    length = max(0, int(_arg("truncate", args, 1, "number")))
    return text[:length]


def _lookup(args: list[Any]) -> Any:
    obj, key = args
    if isinstance(obj, Mapping):
        if not isinstance(key, str):
            raise JMESPathError("JMESPath function 'lookup': argument #2 is not of type String")
        return obj.get(key)
    if isinstance(obj, list):
        if not isinstance(key, (int, float)) or isinstance(key, bool) or key != int(key):
            raise JMESPathError("JMESPath function 'lookup': argument #2 is not of type Number")
        i = int(key)
        return obj[i] if 0 <= i < len(obj) else None
    raise JMESPathError("JMESPath function 'lookup': argument #1 is not of type Object or Array")


def _items(args: list[Any]) -> list[dict[str, Any]]:
    obj, kname, vname = args
    if not isinstance(kname, str) or not isinstance(vname, str):
        raise JMESPathError("JMESPath function 'items': key and value names must be strings")
    if isinstance(obj, Mapping):
        return [{kname: k, vname: obj[k]} for k in sorted(obj)]
    if isinstance(obj, list):
        return [{kname: float(i), vname: v} for i, v in enumerate(obj)]
    raise JMESPathError("JMESPath function 'items': argument #1 is not of type Object or Array")


def _object_from_lists(args: list[Any]) -> dict[str, Any]:
    keys, values = args
    if not isinstance(keys, list) or not isinstance(values, list):
        raise JMESPathError("JMESPath function 'object_from_lists': arguments must be arrays")
    return {
        _to_string("object_from_lists", k, 0): (values[i] if i < len(values) else None)
        for i, k in enumerate(keys)
    }


def _label_match(args: list[Any]) -> bool:
    labels, match = args
    if not isinstance(labels, Mapping) or not isinstance(match, Mapping):
        raise JMESPathError("JMESPath function 'label_match': arguments must be objects")
    return all(k in match and match[k] == v for k, v in labels.items())


def _to_boolean(args: list[Any]) -> bool:
    text = _arg("to_boolean", args, 0, "string").lower()
    if text not in ("true", "false"):
        raise JMESPathError(
            "JMESPath function 'to_boolean': lowercase argument must be 'true' or 'false' "
            f"(provided: '{args[0]}')"
        )
    return text == "true"


def _sum(args: list[Any]) -> Any:
    items = args[0]
    if not isinstance(items, list) or not items:
        raise JMESPathError("JMESPath function 'sum': at least one element in the array is required")
    result = items[0]
    for item in items[1:]:
        result = _arith("sum", [result, item])
    return result


def _round(args: list[Any]) -> float:
    value = _arg("round", args, 0, "number")
    digits = _arg("round", args, 1, "number")
    if digits != int(digits) or digits < 0:
        raise JMESPathError("JMESPath function 'round': the length must be a non-negative integer")
    shift = 10 ** int(digits)
    return (
        math.floor(value * shift + 0.5) / shift if value >= 0 else -math.floor(-value * shift + 0.5) / shift
    )


def _parse_json(args: list[Any]) -> Any:
    try:
        return json.loads(_arg("parse_json", args, 0, "string"))
    except json.JSONDecodeError as exc:
        raise JMESPathError(f"JMESPath function 'parse_json': {exc}") from exc


def _parse_yaml(args: list[Any]) -> Any:
    try:
        return yaml.safe_load(_arg("parse_yaml", args, 0, "string"))
    except yaml.YAMLError as exc:
        raise JMESPathError(f"JMESPath function 'parse_yaml': {exc}") from exc


def _b64decode(args: list[Any]) -> str:
    try:
        return base64.b64decode(_arg("base64_decode", args, 0, "string"), validate=True).decode(
            "utf-8", "replace"
        )
    except (ValueError, TypeError) as exc:
        raise JMESPathError(f"JMESPath function 'base64_decode': {exc}") from exc


def _time_since(args: list[Any]) -> str:
    layout, t1, t2 = args
    start = _parse_time(layout, t1)
    end = _parse_time(layout, t2) if t2 else datetime.now(UTC)
    return format_duration(Decimal(str((end - start).total_seconds())))


def _parse_time(layout: Any, text: Any) -> datetime:
    if not isinstance(text, str):
        raise JMESPathError("time functions take strings")
    if not layout:
        return _parse_rfc3339(text)
    try:
        value = datetime.strptime(text, _go_layout_to_strftime(layout))
    except ValueError as exc:
        raise JMESPathError(f"cannot parse time {text!r} with layout {layout!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _time_add(args: list[Any]) -> str:
    start = _parse_rfc3339(_arg("time_add", args, 0, "string"))
    dur = parse_duration(_arg("time_add", args, 1, "string"))
    if dur is None:
        raise JMESPathError("JMESPath function 'time_add': invalid duration")
    return _fmt_time(start + timedelta(seconds=float(dur)))


def _time_diff(args: list[Any]) -> str:
    a = _parse_rfc3339(_arg("time_diff", args, 0, "string"))
    b = _parse_rfc3339(_arg("time_diff", args, 1, "string"))
    return format_duration(Decimal(str((b - a).total_seconds())))


def _time_truncate(args: list[Any]) -> str:
    t = _parse_rfc3339(_arg("time_truncate", args, 0, "string"))
    dur = parse_duration(_arg("time_truncate", args, 1, "string"))
    if not dur:
        return _fmt_time(t)
    epoch = Decimal(str(t.timestamp()))
    return _fmt_time(datetime.fromtimestamp(float(epoch - epoch % dur), UTC))


def _image_normalize(args: list[Any]) -> str:
    image = _arg("image_normalize", args, 0, "string")
    name, _, digest = image.partition("@")
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first = name.split("/", 1)[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + (name if "/" in name else "library/" + name)
    if not tag and not digest:
        tag = "latest"
    return name + (":" + tag if tag else "") + ("@" + digest if digest else "")


def _is_external_url(args: list[Any]) -> bool:
    parsed = urlparse(_arg("is_external_url", args, 0, "string"))
    host = parsed.hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host not in ("localhost", "")
    return not (ip.is_loopback or ip.is_private)


def _hash(algo: str) -> Any:
    return lambda args: hashlib.new(algo, _arg(algo, args, 0, "string").encode()).hexdigest()


def _x509_decode(args: list[Any]) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    text = _arg("x509_decode", args, 0, "string")
    try:
        cert = x509.load_pem_x509_certificate(text.encode())
    except ValueError as exc:
        raise JMESPathError(f"JMESPath function 'x509_decode': {exc}") from exc
    key = cert.public_key()
    out: dict[str, Any] = {
        "Subject": {"CommonName": _cn(cert.subject)},
        "Issuer": {"CommonName": _cn(cert.issuer)},
        "SerialNumber": cert.serial_number,
        "NotBefore": _fmt_time(cert.not_valid_before_utc),
        "NotAfter": _fmt_time(cert.not_valid_after_utc),
        "Version": cert.version.value + 1,
    }
    if isinstance(key, rsa.RSAPublicKey):
        out["PublicKey"] = {"N": format(key.public_numbers().n, "x"), "E": key.public_numbers().e}
        out["PublicKeyAlgorithm"] = 1
    return out


def _cn(name: Any) -> str:
    from cryptography.x509.oid import NameOID

    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _split(args: list[Any]) -> list[str]:
    text = _arg("split", args, 0, "string")
    sep = _arg("split", args, 1, "string")
    if sep == "":
        return list(text)
    return text.split(sep)


def _trim(args: list[Any]) -> str:
    return _arg("trim", args, 0, "string").strip(_arg("trim", args, 1, "string"))


def _replace(args: list[Any]) -> str:
    text, old, new = (_arg("replace", args, i, "string") for i in range(3))
    n = int(_arg("replace", args, 3, "number"))
    return text.replace(old, new, n if n >= 0 else -1)


def _regex_replace_all(literal: bool) -> Any:
    name = "regex_replace_all_literal" if literal else "regex_replace_all"

    def impl(args: list[Any]) -> str:
        regex = _go_regex(_arg(name, args, 0, "string"))
        src = _to_string(name, args[1], 1)
        repl = _to_string(name, args[2], 2)
        return goregex.replace_all(regex, src, repl, literal=literal)

    return impl


_CUSTOM: dict[str, Any] = {
    "compare": lambda a: (lambda x, y: (x > y) - (x < y))(
        _arg("compare", a, 0, "string"), _arg("compare", a, 1, "string")
    ),
    "equal_fold": lambda a: (
        _arg("equal_fold", a, 0, "string").casefold() == _arg("equal_fold", a, 1, "string").casefold()
    ),
    "replace": _replace,
    "replace_all": lambda a: _arg("replace_all", a, 0, "string").replace(
        _arg("replace_all", a, 1, "string"), _arg("replace_all", a, 2, "string")
    ),
    "to_upper": lambda a: _arg("to_upper", a, 0, "string").upper(),
    "to_lower": lambda a: _arg("to_lower", a, 0, "string").lower(),
    "trim": _trim,
    "trim_prefix": lambda a: _arg("trim_prefix", a, 0, "string").removeprefix(
        _arg("trim_prefix", a, 1, "string")
    ),
    "split": _split,
    "regex_replace_all": _regex_replace_all(False),
    "regex_replace_all_literal": _regex_replace_all(True),
    "regex_match": lambda a: (
        goregex.search(_go_regex(_arg("regex_match", a, 0, "string")), _to_string("regex_match", a[1], 1))
        is not None
    ),
    "pattern_match": lambda a: wildcard_match(
        _arg("pattern_match", a, 0, "string"), _to_string("pattern_match", a[1], 1)
    ),
    "label_match": _label_match,
    "to_boolean": _to_boolean,
    "add": lambda a: _arith("add", a),
    "sum": _sum,
    "subtract": lambda a: _arith("subtract", a),
    "multiply": lambda a: _arith("multiply", a),
    "divide": lambda a: _arith("divide", a),
    "modulo": lambda a: _arith("modulo", a),
    "round": _round,
    "base64_decode": _b64decode,
    "base64_encode": lambda a: base64.b64encode(_arg("base64_encode", a, 0, "string").encode()).decode(),
    "path_canonicalize": lambda a: posixpath.normpath(_arg("path_canonicalize", a, 0, "string")),
    "truncate": _truncate,
    "semver_compare": _semver_compare,
    "parse_json": _parse_json,
    "parse_yaml": _parse_yaml,
    "lookup": _lookup,
    "items": _items,
    "object_from_lists": _object_from_lists,
    "time_now": lambda a: _fmt_time(datetime.now().astimezone()),
    "time_now_utc": lambda a: _fmt_time(datetime.now(UTC)),
    "time_since": _time_since,
    "time_add": _time_add,
    "time_parse": lambda a: _fmt_time(_parse_time(a[0], a[1])),
    "time_utc": lambda a: _fmt_time(_parse_rfc3339(_arg("time_utc", a, 0, "string")).astimezone(UTC)),
    "time_diff": _time_diff,
    "time_before": lambda a: _parse_rfc3339(a[0]) < _parse_rfc3339(a[1]),
    "time_after": lambda a: _parse_rfc3339(a[0]) > _parse_rfc3339(a[1]),
    "time_between": lambda a: _parse_rfc3339(a[1]) < _parse_rfc3339(a[0]) < _parse_rfc3339(a[2]),
    "time_truncate": _time_truncate,
    "image_normalize": _image_normalize,
    "is_external_url": _is_external_url,
    "sha256": _hash("sha256"),
    "sha1": _hash("sha1"),
    "md5": _hash("md5"),
    "x509_decode": _x509_decode,
}
_ARITY = {
    "compare": 2,
    "equal_fold": 2,
    "replace": 4,
    "replace_all": 3,
    "to_upper": 1,
    "to_lower": 1,
    "trim": 2,
    "trim_prefix": 2,
    "split": 2,
    "regex_replace_all": 3,
    "regex_replace_all_literal": 3,
    "regex_match": 2,
    "pattern_match": 2,
    "label_match": 2,
    "to_boolean": 1,
    "add": 2,
    "sum": 1,
    "subtract": 2,
    "multiply": 2,
    "divide": 2,
    "modulo": 2,
    "round": 2,
    "base64_decode": 1,
    "base64_encode": 1,
    "path_canonicalize": 1,
    "truncate": 2,
    "semver_compare": 2,
    "parse_json": 1,
    "parse_yaml": 1,
    "lookup": 2,
    "items": 3,
    "object_from_lists": 2,
    "time_now": 0,
    "time_now_utc": 0,
    "time_since": 3,
    "time_add": 2,
    "time_parse": 2,
    "time_utc": 1,
    "time_diff": 2,
    "time_before": 2,
    "time_after": 2,
    "time_between": 3,
    "time_truncate": 2,
    "image_normalize": 1,
    "is_external_url": 1,
    "sha256": 1,
    "sha1": 1,
    "md5": 1,
    "x509_decode": 1,
}

_OPTIONS = jmespath.Options(custom_functions=KyvernoFunctions())


@lru_cache(maxsize=8192)
def _compile(expression: str) -> Any:
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise JMESPathError(f"invalid JMESPath expression {expression!r}: {exc}") from exc


def search(expression: str, data: Any) -> Any:
    """Evaluate ``expression`` on ``data``; raises :class:`NotFound` for a missing key in a plain path and
    :class:`JMESPathError` for a bad expression or a failing function."""
    limits.check_time()
    parsed = _compile(expression)
    interpreter = _Interpreter(_OPTIONS)
    try:
        return interpreter.visit(parsed.parsed, data)
    except NotFound:
        raise
    except jmespath.exceptions.JMESPathError as exc:
        raise JMESPathError(f"JMESPath query failed: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, KeyError, IndexError) as exc:
        if isinstance(exc, JMESPathError):
            raise
        raise JMESPathError(f"JMESPath query {expression!r} failed: {exc}") from exc
