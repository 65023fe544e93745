"""Choosing a chart version like Helm does (Masterminds semver constraints), with ``semantic_version``.

* An exact version (``1.2.3``, ``v1.2.3``) matches that version as written, or the same semantic version.
* A constraint (``^1.2``, ``~1.2.3``, ``>= 1.0, < 2.0``, ``1.2.x``, ``*``, ``a || b``): the highest version
  that satisfies it; pre-releases only when the constraint names one (as Helm).
* Empty: the highest version that is not a pre-release.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import semantic_version

_OPERATOR_SPACE = re.compile(r"(>=|<=|!=|==|>|<|=|\^|~)\s+")
_CONSTRAINT_CHARS = set("<>=!^~*|, ") | {"x", "X"}


def _parse(version: str) -> semantic_version.Version | None:
    text = version.strip()
    if text[:1] in "vV":
        text = text[1:]
    try:
        return semantic_version.Version.coerce(text)
    except ValueError:
        return None


def is_exact(version: str) -> bool:
    text = version.strip()
    if not text:
        return False
    if text[:1] in "vV":
        text = text[1:]
    return not (set(text) & _CONSTRAINT_CHARS) and _parse(text) is not None


def select(wanted: str, available: Iterable[str]) -> str | None:
    """The version of ``available`` (as written there) that ``wanted`` picks, or None.

    Raises ValueError for a constraint that cannot be read."""
    versions = [v for v in available if isinstance(v, str)]
    wanted = wanted.strip()
    if wanted and wanted in versions:
        return wanted
    parsed = [(p, v) for v in versions if (p := _parse(v)) is not None]
    if is_exact(wanted):
        target = _parse(wanted)
        for p, v in parsed:
            if p == target:
                return v
        return None
    if not wanted or wanted == "*":
        stable = [(p, v) for p, v in parsed if not p.prerelease]
        return max(stable)[1] if stable else None
    text = _OPERATOR_SPACE.sub(r"\1", wanted).replace(",", " ")
    text = re.sub(r"(^|[\s|<>=^~])v(\d)", r"\1\2", text)
    text = re.sub(r"\s+", " ", text).strip()
    try:
        spec = semantic_version.NpmSpec(text)
    except ValueError:
        raise ValueError(f"version constraint {wanted!r} cannot be read") from None
    matching = [(p, v) for p, v in parsed if p in spec]
    return max(matching)[1] if matching else None
