"""Kubernetes label-selector matching, in one place and free of Django.

Used by cluster groups (clusters/selectors.py), `fleetgate.yaml` target customizations
(fleet/sources/render/customize.py) and Gatekeeper Constraint matches (policies/formats/kube.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any


def requirements_match(
    match_labels: Iterable[tuple[str, str]],
    expressions: Iterable[tuple[str, str, Collection[str]]],
    labels: Mapping[str, str],
) -> bool:
    """matchLabels AND every (key, operator, values) expression; no requirement at all matches everything."""
    for key, value in match_labels:
        if labels.get(key) != value:
            return False
    for key, operator, values in expressions:
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A `{matchLabels, matchExpressions}` selector, with Kubernetes semantics (empty matches everything)."""
    return requirements_match(
        ((str(k), str(v)) for k, v in (selector.get("matchLabels") or {}).items()),
        (
            (expr["key"], expr["operator"], [str(v) for v in expr.get("values") or []])
            for expr in selector.get("matchExpressions") or []
        ),
        labels,
    )
