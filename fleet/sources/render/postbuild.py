"""Flux's post-build variable substitution (``Kustomization.spec.postBuild.substitute``), as
kustomize-controller does it after the build, for mappings imported from Flux (``PathMapping.postbuild``).

Semantics read from fluxcd/pkg (``kustomize/kustomize_varsub.go`` and its ``envsubst`` fork of
drone/envsubst), reimplemented here:

* each rendered object is written out as YAML, substituted as text, and read back, so a value can become a
  number or a boolean (``replicas: ${replicas}`` with ``replicas: "2"`` gives ``2``), as in Flux;
* an object labelled or annotated ``kustomize.toolkit.fluxcd.io/substitute: disabled`` is left alone;
* nothing happens when no variable is given (Flux substitutes only when it has variables);
* ``${var}``: the value, or the empty string when the variable is not given (Flux's default, non-strict
  mode); ``${var:=default}``, ``${var:-default}``, ``${var=default}``, ``${var-default}``: the value when it
  is not empty, else the default (the default may itself hold ``${other}``);
* ``$$`` is an escape for ``$`` (``$${var}`` gives the literal ``${var}``); ``$var`` without braces is text;
* variable names must match ``^[_[:alpha:]][_[:alpha:][:digit:]]*$``; a newline in a value is dropped;
* bash's other operators (``${#var}``, ``${var^^}``, ``${var:1:2}``, ``${var/a/b}``...) are refused with a
  RenderError naming the expression rather than rendered differently from Flux.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from .errors import RenderError
from .objects import RawObject
from .yamlsafe import load_one

DISABLED_KEY = "kustomize.toolkit.fluxcd.io/substitute"
NAME_PATTERN = "^[_[:alpha:]][_[:alpha:][:digit:]]*$"
NAME_RE = re.compile(r"^[_A-Za-z][_A-Za-z0-9]*$")
_IDENT = re.compile(r"[A-Za-z0-9_]+")
_DEFAULT_OPS = (":=", ":-", "=", "-")


def validate_variables(variables: Any) -> dict[str, str]:
    """The substitution variables as ``{name: value}``; ValueError naming the first bad entry."""
    if not isinstance(variables, Mapping):
        raise ValueError("postBuild variables must be an object of names to string values")
    out: dict[str, str] = {}
    for name, value in variables.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(f"'{name}' var name is invalid, must match '{NAME_PATTERN}'")
        if not isinstance(value, str):
            raise ValueError(f"the value of variable '{name}' must be a string")
        out[name] = value.replace("\n", "")
    return out


def _expand(text: str, pos: int, variables: Mapping[str, str], *, inner: bool) -> tuple[str, int]:
    """Expand ``text`` from ``pos`` up to its end (or, ``inner``, up to the ``}`` closing a default);
    returns the expansion and the position after it."""
    out: list[str] = []
    n = len(text)
    while pos < n:
        c = text[pos]
        if inner and c == "}":
            return "".join(out), pos
        if c == "$" and pos + 1 < n and text[pos + 1] == "$":
            out.append("$")
            pos += 2
            continue
        if c == "\\" and inner and pos + 1 < n and text[pos + 1] in "/\\":
            out.append(text[pos + 1])
            pos += 2
            continue
        if c == "$" and pos + 1 < n and text[pos + 1] == "{":
            value, pos = _expression(text, pos + 2, variables)
            out.append(value)
            continue
        out.append(c)
        pos += 1
    if inner:
        raise RenderError("envsubst: missing closing brace")
    return "".join(out), pos


def _expression(text: str, pos: int, variables: Mapping[str, str]) -> tuple[str, int]:
    """``pos`` is just after ``${``."""
    m = _IDENT.match(text, pos)
    if not m:
        raise RenderError(f"envsubst: unable to parse variable name at {text[pos - 2:pos + 20]!r}")
    name = m.group(0)
    pos = m.end()
    if pos < len(text) and text[pos] == "}":
        return variables.get(name, ""), pos + 1
    for op in _DEFAULT_OPS:
        if text.startswith(op, pos):
            default, end = _expand(text, pos + len(op), variables, inner=True)
            value = variables.get(name, "")
            return (value if value else default), end + 1
    close = text.find("}", pos)
    expr = text[pos - len(name) - 2: close + 1 if close >= 0 else pos + 20]
    raise RenderError(f"envsubst: the expression {expr!r} is not supported by Fleetgate "
                      "(only ${var}, ${var:=default}, ${var:-default}, ${var=default}, ${var-default})")


def envsubst(text: str, variables: Mapping[str, str]) -> str:
    """Substitute ``text`` like Flux's envsubst in non-strict mode (see the module docstring)."""
    if "$" not in text:
        return text
    return _expand(text, 0, variables, inner=False)[0]


def _disabled(data: Mapping[str, Any]) -> bool:
    meta = data.get("metadata")
    if not isinstance(meta, Mapping):
        return False
    for key in ("labels", "annotations"):
        found = meta.get(key)
        if isinstance(found, Mapping) and found.get(DISABLED_KEY) == "disabled":
            return True
    return False


def substitute_objects(raws: list[RawObject], variables: Mapping[str, str] | None) -> list[RawObject]:
    """Every object of a render after Flux's post-build substitution with ``variables``."""
    if not variables:
        return raws
    variables = {k: str(v).replace("\n", "") for k, v in variables.items()}
    out: list[RawObject] = []
    for raw in raws:
        if not isinstance(raw.data, Mapping) or _disabled(raw.data):
            out.append(raw)
            continue
        text = yaml.safe_dump(raw.data, sort_keys=False, default_flow_style=False, allow_unicode=True,
                              width=1 << 30)
        try:
            data = load_one(envsubst(text, variables), file=raw.source)
        except RenderError as exc:
            raise RenderError(f"postBuild substitution: {exc.message}", file=raw.source,
                              document=raw.document, line=raw.line) from None
        if not isinstance(data, dict):
            raise RenderError("postBuild substitution turned the object into a non-mapping", file=raw.source,
                              document=raw.document, line=raw.line)
        out.append(RawObject(data, raw.source, raw.document, raw.line))
    return out
