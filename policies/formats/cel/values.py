"""How values the Rust evaluator has no type for travel through it, and the runtime error of the library.

The ``cel`` extension converts results of Python functions to CEL values and refuses other Python
objects, so the Kubernetes opaque types (``Quantity``, ``URL``, ``net.IP``, ``net.CIDR``) are carried as
one-entry maps ``{TAG: "<type>|<canonical value>"}``. Two such maps are equal exactly when the values
are (the canonical value is the comparison key), which is what ``==`` means on them in Kubernetes.
"""

from __future__ import annotations

from typing import Any

TAG = "@kubernetes.cel.opaque"


class CelRuntimeError(Exception):
    """An error raised by a library function while an expression runs (turned into ``CelEvalError``)."""


def opaque(type_name: str, value: str) -> dict[str, Any]:
    return {TAG: f"{type_name}|{value}"}


def opaque_type(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(TAG), str):
        return str(value[TAG]).partition("|")[0]
    return None


def unwrap(value: Any, type_name: str) -> str | None:
    """The canonical value of an opaque of ``type_name``, else None."""
    if opaque_type(value) == type_name:
        return str(value[TAG]).partition("|")[2]
    return None


def type_name(value: Any) -> str:
    """The CEL type name of a Python value as the evaluator hands it over, for error messages."""
    tagged = opaque_type(value)
    if tagged:
        return tagged
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "map"
    if value is None:
        return "null_type"
    return type(value).__name__
