"""Per-cluster context, variable substitution and values merging.

Substitution syntax (in values and in the string values of plain YAML and Kustomize output):

* ``${cluster.name}``, ``${cluster.labels.<key>}`` (the key is everything up to ``}``, so
  ``${cluster.labels.topology.kubernetes.io/region}`` works), ``${cluster.group}`` and ``${group.name}``
  (the same), ``${repository.url}``, ``${commit.sha}``, ``${commit.short}``, ``${mapping.path}``,
  ``${values.<dotted.path>}`` (the merged values; plain YAML and Kustomize output only).
* ``${name:-default}`` gives ``default`` when the variable is not defined (e.g. a missing label).
* ``$${`` is an escape: it produces a literal ``${`` and nothing inside is substituted.
* Only the roots above are variables: any other ``${...}`` (``${HOME}``, ``${VAR}`` in a shell script
  inside a ConfigMap) is left as it is.  A known root with an unknown name (``${cluster.labels.zone}``
  with no such label and no default) is a RenderError.
* Only string values are substituted, never keys, and the result stays a string (no YAML re-parsing,
  so a value cannot inject structure).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import RenderError

VARIABLE_ROOTS = ("cluster", "group", "repository", "commit", "mapping", "values")

# $${...} (escape) or ${...}; group 1 is the escaping '$'
_VAR_RE = re.compile(r"\$(\$)?\{([^{}]*)\}")


@dataclass(frozen=True)
class ClusterContext:
    """Who a render is for.  Plain values: the Django side fills it from Cluster/ClusterGroup rows."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    group: str = ""
    repository: str = ""  # repository URL (redacted, no credentials)
    commit: str = ""  # commit sha being rendered
    group_labels: Mapping[str, str] = field(default_factory=dict)  # fleet.yaml clusterGroupSelector
    values: Mapping[str, Any] = field(default_factory=dict)  # the cluster's own values (.ClusterValues)

    def as_dict(self, mapping_path: str = "") -> dict[str, Any]:
        return {
            "cluster": {"name": self.name, "labels": dict(sorted(self.labels.items())), "group": self.group},
            "group": {"name": self.group},
            "repository": {"url": self.repository},
            "commit": {"sha": self.commit, "short": self.commit[:12]},
            "mapping": {"path": mapping_path},
        }

    def hash_dict(self, *, include_commit: bool) -> dict[str, Any]:
        d = self.as_dict()
        if not include_commit:
            d.pop("commit")
        return d


class _Missing(Exception):
    pass


class Substituter:
    """Substitutes variables for one (cluster, mapping) render."""

    def __init__(self, context: ClusterContext, mapping_path: str = "",
                 values: Mapping[str, Any] | None = None) -> None:
        self.context = context
        self.mapping_path = mapping_path
        self.values = values or {}

    def lookup(self, name: str) -> str:
        root, _, rest = name.partition(".")
        ctx = self.context
        if root == "cluster":
            if rest == "name":
                return ctx.name
            if rest == "group":
                return ctx.group
            if rest.startswith("labels.") and rest[7:] in ctx.labels:
                return str(ctx.labels[rest[7:]])
        elif root == "group" and rest == "name":
            return ctx.group
        elif root == "repository" and rest == "url":
            return ctx.repository
        elif root == "commit" and rest in ("sha", "short"):
            return ctx.commit if rest == "sha" else ctx.commit[:12]
        elif root == "mapping" and rest == "path":
            return self.mapping_path
        elif root == "values" and rest:
            node: Any = self.values
            for part in rest.split("."):
                if not isinstance(node, Mapping) or part not in node:
                    raise _Missing(name)
                node = node[part]
            if isinstance(node, (Mapping, list)):
                raise _Missing(name)
            if isinstance(node, bool):
                return "true" if node else "false"
            return "" if node is None else str(node)
        raise _Missing(name)

    def string(self, text: str) -> str:
        if "${" not in text:
            return text

        def repl(m: re.Match[str]) -> str:
            inner = m.group(2)
            if m.group(1):
                return "${" + inner + "}"
            expr, has_default, default = inner.partition(":-")
            expr = expr.strip()
            if expr.partition(".")[0] not in VARIABLE_ROOTS or "." not in expr:
                return m.group(0)
            try:
                return self.lookup(expr)
            except _Missing:
                if has_default:
                    return default
                raise RenderError(f"unknown variable ${{{expr}}}") from None

        return _VAR_RE.sub(repl, text)

    def walk(self, data: Any, where: str = "") -> Any:
        """A substituted copy of ``data`` (new containers; the input is not modified)."""
        if isinstance(data, str):
            try:
                return self.string(data)
            except RenderError as exc:
                raise RenderError(f"{where or '(root)'}: {exc.message}") from None
        if isinstance(data, dict):
            return {k: self.walk(v, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
        if isinstance(data, list):
            return [self.walk(v, f"{where}[{i}]") for i, v in enumerate(data)]
        return data


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm-like merge: mappings merge recursively, anything else (lists too) is replaced.

    ``None`` in ``override`` is kept (Helm then deletes the key from the chart defaults)."""
    result: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def merge_layers(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            if not isinstance(layer, Mapping):
                raise RenderError("values must be a mapping")
            merged = deep_merge(merged, layer)
    return merged
