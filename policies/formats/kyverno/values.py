"""Scalar helpers with Kyverno's (Go's) semantics: wildcards, Kubernetes quantities, Go durations, and
how Go prints a value (``fmt.Sprint``) when Kyverno compares things as strings."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from policies.formats import goregex

# ------------------------------------------------------------------------------------------- wildcards


@lru_cache(maxsize=4096)
def _wildcard_regex(pattern: str) -> str:
    """The wildcard as an RE2 pattern (``*`` any run, ``?`` one character), matched in linear time."""
    parts = ["(?s)"]
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return "".join(parts)


def wildcard_match(pattern: str, value: str) -> bool:
    """Kyverno's ``wildcard.Match`` (go-wildcard v1): ``*`` any run, ``?`` exactly one character,
    the whole value must match."""
    if pattern == "":
        return value == ""
    if pattern == "*":
        return True
    if "*" not in pattern and "?" not in pattern:
        return pattern == value
    return goregex.fullmatch(_wildcard_regex(pattern), value)


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


# ------------------------------------------------------------------------------------------ quantities

_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([a-zA-Z]*|[eE][+-]?[0-9]+)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(text: Any) -> Decimal | None:
    """A Kubernetes ``resource.Quantity`` (``500m``, ``1Gi``, ``2e3``) as a Decimal, None if it is not one."""
    if not isinstance(text, str):
        return None
    m = _QUANTITY.match(text.strip())
    if not m:
        return None
    number, suffix = m.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    if suffix[:1] in ("e", "E"):
        return value * (Decimal(10) ** int(suffix[1:]))
    return None


# ------------------------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}


def parse_duration(text: Any) -> Decimal | None:
    """Go's ``time.ParseDuration`` (``1h30m``, ``-1.5s``, ``0``) in seconds, None if it is not one."""
    if not isinstance(text, str) or not text:
        return None
    s = text
    sign = Decimal(1)
    if s[0] in "+-":
        sign = Decimal(-1) if s[0] == "-" else Decimal(1)
        s = s[1:]
    if s == "0":
        return Decimal(0)
    if not s:
        return None
    total = Decimal(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            return None
        total += Decimal(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: Decimal) -> str:
    """Go's ``time.Duration.String()`` (``1h30m0s``, ``1.5s``, ``0s``)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        ns = int(seconds * Decimal("1e9"))
        for unit, scale in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= scale:
                return sign + _trim(Decimal(ns) / scale) + unit
    hours = int(seconds // 3600)
    minutes = int((seconds % 3600) // 60)
    secs = seconds % 60
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return sign + out + _trim(secs) + "s"


def _trim(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# ------------------------------------------------------------------------------------------ go printing


def go_sprint(value: Any) -> str:
    """``fmt.Sprint`` of a decoded JSON value, as Kyverno uses it for In/AnyIn comparisons."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e21:
            return str(int(value))
        return repr(value).replace("e+", "e+")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_sprint(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_sprint(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def to_json(value: Any) -> str:
    """Go's ``json.Marshal`` (compact, keys sorted as Go sorts map keys)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
