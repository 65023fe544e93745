"""The Kubernetes ``quantity`` CEL library (k8s.io/apiserver/pkg/cel/library/quantity.go), exactly.

A quantity is carried through the Rust evaluator as a tagged map (see :mod:`.values`) holding its exact
value as a fraction, so ``==`` between two quantities compares values (``quantity('1Gi') ==
quantity('1024Mi')``) as it does in Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from policies.formats.cel.values import CelRuntimeError, opaque, unwrap

_PATTERN = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_NANO = Fraction(1, 10**9)
_INT64 = (-(2**63), 2**63 - 1)
TYPE = "kubernetes.Quantity"


def parse(text: str) -> Fraction:
    if not isinstance(text, str):
        raise CelRuntimeError("quantity() takes a string")
    m = _PATTERN.match(text)
    if not m:
        raise CelRuntimeError(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        )
    number, suffix = Fraction(m.group(1)), m.group(2) or ""
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * Fraction(10) ** _DECIMAL[suffix]
    elif suffix:
        value = number * Fraction(10) ** int(suffix[1:])
    else:
        value = number
    # Kubernetes keeps nano precision and rounds anything finer away from zero.
    scaled = value / _NANO
    if scaled.denominator != 1:
        whole = -((-abs(scaled)) // 1)
        value = (whole if value > 0 else -whole) * _NANO
    return value


def _make(value: Fraction) -> dict[str, Any]:
    return opaque(TYPE, f"{value.numerator}/{value.denominator}")


def _value(q: Any, what: str = "quantity") -> Fraction:
    raw = unwrap(q, TYPE)
    if raw is None:
        raise CelRuntimeError(f"no such overload: {what} expects a quantity")
    return Fraction(raw)


def _operand(q: Any) -> Fraction:
    if isinstance(q, int) and not isinstance(q, bool):
        return Fraction(q)
    return _value(q)


def quantity(text: str) -> dict[str, Any]:
    return _make(parse(text))


def is_quantity(text: str) -> bool:
    try:
        parse(text)
    except CelRuntimeError:
        return False
    return True


def sign(q: Any) -> int:
    v = _value(q)
    return (v > 0) - (v < 0)


def is_integer(q: Any) -> bool:
    v = _value(q)
    return v.denominator == 1 and _INT64[0] <= v <= _INT64[1]


def as_integer(q: Any) -> int:
    v = _value(q)
    if v.denominator != 1 or not _INT64[0] <= v <= _INT64[1]:
        raise CelRuntimeError("cannot convert value to integer")
    return int(v)


def as_approximate_float(q: Any) -> float:
    return float(_value(q))


def add(q: Any, other: Any) -> dict[str, Any]:
    return _make(_value(q) + _operand(other))


def sub(q: Any, other: Any) -> dict[str, Any]:
    return _make(_value(q) - _operand(other))


def compare_to(q: Any, other: Any) -> int:
    a, b = _value(q), _value(other)
    return (a > b) - (a < b)


def is_greater_than(q: Any, other: Any) -> bool:
    return _value(q) > _value(other)


def is_less_than(q: Any, other: Any) -> bool:
    return _value(q) < _value(other)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quantity": quantity,
    "isQuantity": is_quantity,
    "sign": sign,
    "isInteger": is_integer,
    "asInteger": as_integer,
    "asApproximateFloat": as_approximate_float,
    "add": add,
    "sub": sub,
    "compareTo": compare_to,
    "isGreaterThan": is_greater_than,
    "isLessThan": is_less_than,
}
