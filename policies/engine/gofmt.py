"""OPA's ``sprintf`` (Go's ``fmt.Sprintf`` over OPA's argument conversion), for regorus.

Standard library only: the regorus worker (:mod:`policies.engine.regorus_worker`, which imports nothing of
Fleetgate) loads this file by path and registers :func:`rego_sprintf` in place of regorus' own ``sprintf``,
which raises on verbs with flags or precision (``%-5s``, ``%8.3f``, ``%T``), on surplus arguments, and prints
other text than Go for ``%f``/``%e``/``%g``/``%o`` and for a verb given a value of another type.

OPA converts each argument before calling ``fmt.Sprintf``: an integer number becomes ``int64`` (``*big.Int``
when larger), another number ``float64``, a string ``string``, and anything else (boolean, null, array,
object, set) the ``string`` of its Rego text (``[1, "a"]``, ``{"a": 1}``, ``{1, 2}``, ``true``).
"""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Mapping
from typing import Any

_INT64 = (-(2**63), 2**63 - 1)
_SPEC = re.compile(r"%([+\-# 0]*)(\d+)?(?:\.(\d*))?")


class Arg:
    __slots__ = ("go_type", "value")

    go_type: str
    value: Any

    def __init__(self, value: Any) -> None:
        if isinstance(value, bool) or value is None:
            self.go_type, self.value = "string", rego_text(value)
        elif isinstance(value, int):
            self.go_type = "int64" if _INT64[0] <= value <= _INT64[1] else "*big.Int"
            self.value = value
        elif isinstance(value, float):
            self.go_type, self.value = "float64", value
        elif isinstance(value, str):
            self.go_type, self.value = "string", value
        else:
            self.go_type, self.value = "string", rego_text(value)


def rego_text(value: Any) -> str:
    """A value as OPA prints a term: JSON-like, objects and sets sorted, sets in braces."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number_text(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: _sort_key(kv[0]))
        return "{" + ", ".join(f"{rego_text(k)}: {rego_text(v)}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        if not value:
            return "set()"
        return "{" + ", ".join(rego_text(v) for v in sorted(value, key=_sort_key)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(rego_text(v) for v in value) + "]"
    return str(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    # OPA orders values by type (null < boolean < number < string < array < object < set), then by value.
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    return (4, rego_text(value))


def _number_text(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e21):
        return str(int(value))
    return repr(value)


# --------------------------------------------------------------------------------------------- Go's fmt


def _pad(text: str, width: int | None, flags: str, zero_ok: bool = False) -> str:
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text + " " * (width - len(text))
    if "0" in flags and zero_ok:
        sign = text[0] if text[:1] in "+- " and text[:1] != "" else ""
        body = text[len(sign) :]
        return sign + "0" * (width - len(text)) + body
    return " " * (width - len(text)) + text


def _sign(text: str, negative: bool, flags: str) -> str:
    if negative:
        return "-" + text
    if "+" in flags:
        return "+" + text
    if " " in flags:
        return " " + text
    return text


def _shortest_g(value: float, upper: bool) -> str:
    """Go's ``%v``/``%g`` of a non-negative float64: the shortest digits that read back as the value, in %e
    form when the decimal exponent is below -4 or at least 6 (Go's rule for the shortest precision)."""
    if math.isinf(value):
        return "+Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    d = decimal.Decimal(repr(value)).normalize()
    _, digits, exponent = d.as_tuple()
    text_digits = "".join(map(str, digits))
    exp10 = len(text_digits) + int(exponent) - 1
    if exp10 < -4 or exp10 >= 6:
        mant = text_digits[0] + ("." + text_digits[1:] if len(text_digits) > 1 else "")
        return f"{mant}{'E' if upper else 'e'}{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    return format(d, "f")


def _format_float(value: float, verb: str, prec: int | None, flags: str) -> str:
    negative = value < 0 or (value == 0 and math.copysign(1, value) < 0)
    mag = abs(value)
    if verb in "vgG" and prec is None:
        body = _shortest_g(mag, verb == "G")
    elif verb in "gG":
        body = format(mag, f".{prec or 1}{verb.lower()}")
        body = body.upper() if verb == "G" else body
        if "e" in body.lower():
            mant, _, e = body.lower().partition("e")
            body = f"{mant}{'E' if verb == 'G' else 'e'}{e[0]}{int(e[1:]):02d}"
    elif verb in "eE":
        body = format(mag, f".{6 if prec is None else prec}{verb}")
    else:  # f, F
        body = format(mag, f".{6 if prec is None else prec}f")
    if math.isinf(value):
        body = "Inf"
    return _sign(body, negative and not math.isnan(value), flags)


def _format_int(value: int, verb: str, prec: int | None, flags: str) -> str | None:
    negative = value < 0
    mag = abs(value)
    prefix = ""
    if verb in "vd":
        body = str(mag)
    elif verb == "b":
        body = format(mag, "b")
    elif verb == "o":
        body = format(mag, "o")
        prefix = "0" if "#" in flags else ""
    elif verb == "O":
        body, prefix = format(mag, "o"), "0o"
    elif verb == "x":
        body, prefix = format(mag, "x"), "0x" if "#" in flags else ""
    elif verb == "X":
        body, prefix = format(mag, "X"), "0X" if "#" in flags else ""
    elif verb == "c":
        return chr(value) if 0 <= value <= 0x10FFFF else "\ufffd"
    elif verb == "q":
        return "'" + (json.dumps(chr(value))[1:-1] if 0 <= value <= 0x10FFFF else "\ufffd") + "'"
    elif verb == "U":
        return f"U+{value:04X}"
    else:
        return None
    if prec is not None:
        body = body.rjust(prec, "0")
    return _sign(prefix + body, negative, flags)


def _go_quote(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _format_string(value: str, verb: str, prec: int | None, flags: str) -> str | None:
    if prec is not None and verb in "vsq":
        value = value[:prec]
    if verb == "v" and "#" in flags:  # Go syntax: a quoted string
        return _go_quote(value)
    if verb in "vs":
        return value
    if verb == "q":
        return _go_quote(value)
    if verb in "xX":
        data = value.encode("utf-8")
        if prec is not None:
            data = data[:prec]
        text = data.hex()
        return text.upper() if verb == "X" else text
    return None


def _value_text(arg: Arg) -> str:
    """``%v`` of an argument (for bad verbs and EXTRA)."""
    if arg.go_type == "float64":
        return _format_float(arg.value, "v", None, "")
    return str(arg.value)


def _one(arg: Arg, verb: str, width: int | None, prec: int | None, flags: str) -> str:
    if verb == "T":
        return _pad(arg.go_type, width, flags)
    text: str | None
    numeric = False
    if arg.go_type in ("int64", "*big.Int"):
        text = _format_int(arg.value, verb, prec, flags)
        numeric = True
    elif arg.go_type == "float64":
        text = _format_float(arg.value, verb, prec, flags) if verb in "vfFeEgG" else None
        numeric = True
    else:
        text = _format_string(arg.value, verb, prec, flags)
    if text is None:
        return f"%!{verb}({arg.go_type}={_value_text(arg)})"
    return _pad(text, width, flags, zero_ok=numeric)


def go_sprintf(fmt: str, args: list[Any]) -> str:
    """``fmt.Sprintf(fmt, args...)`` for OPA-converted ``args`` (see the module docstring)."""
    converted = [Arg(a) for a in args]
    out: list[str] = []
    used = 0
    i, n = 0, len(fmt)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        m = _SPEC.match(fmt, j)
        k = m.end() if m is not None else j + 1  # the pattern matches at least "%"
        if k >= n:
            out.append("%!(NOVERB)")
            i = k
            break
        verb = fmt[k]
        if verb in "*[":
            raise ValueError("sprintf: argument indexes and '*' widths are not supported")
        i = k + 1
        if verb == "%":
            out.append("%")
            continue
        flags = m.group(1) if m is not None else ""
        width = int(m.group(2)) if m is not None and m.group(2) else None
        prec = None if m is None or m.group(3) is None else int(m.group(3) or 0)
        if used >= len(converted):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_one(converted[used], verb, width, prec, flags))
        used += 1
    if used < len(converted):
        extra = ", ".join(f"{a.go_type}={_value_text(a)}" for a in converted[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def rego_sprintf(fmt: Any, args: Any) -> str:
    """The regorus extension: ``sprintf(format, values)``."""
    if not isinstance(fmt, str):
        raise TypeError("sprintf: operand 1 must be string")
    if not isinstance(args, list):
        raise TypeError("sprintf: operand 2 must be array")
    return go_sprintf(fmt, args)
