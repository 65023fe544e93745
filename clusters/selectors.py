"""Kubernetes label selectors: validation and matching, for cluster groups and anything keyed by labels."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError

from clusters.labelmatch import selector_matches

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_PREFIX = r"([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*)"
LABEL_KEY = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
LABEL_VALUE = re.compile(rf"^({_NAME})?$")


def validate_labels(labels: Any) -> None:
    if not isinstance(labels, dict):
        raise ValidationError("Labels must be an object of string keys to string values.")
    errors = []
    for key, value in labels.items():
        if not isinstance(key, str) or len(key) > 316 or not LABEL_KEY.match(key):
            errors.append(f"invalid label key {key!r}")
        elif not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(f"invalid value for label {key!r}: {value!r}")
    if errors:
        raise ValidationError("; ".join(errors))


def validate_selector(selector: Any) -> None:
    """A selector is `{matchLabels: {...}, matchExpressions: [{key, operator, values}]}`, as in Kubernetes."""
    if not isinstance(selector, dict):
        raise ValidationError("The selector must be an object with matchLabels and/or matchExpressions.")
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise ValidationError(f"Unknown selector fields: {', '.join(sorted(unknown))}.")
    validate_labels(selector.get("matchLabels", {}))
    expressions = selector.get("matchExpressions", [])
    if not isinstance(expressions, list):
        raise ValidationError("matchExpressions must be a list.")
    for index, expr in enumerate(expressions):
        where = f"matchExpressions[{index}]"
        if not isinstance(expr, dict):
            raise ValidationError(f"{where} must be an object.")
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values", [])
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise ValidationError(f"{where}.key is not a valid label key.")
        if operator not in OPERATORS:
            raise ValidationError(f"{where}.operator must be one of {', '.join(OPERATORS)}.")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValidationError(f"{where}.values must be a list of strings.")
        if operator in ("In", "NotIn") and not values:
            raise ValidationError(f"{where}.values must be non-empty for {operator}.")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ValidationError(f"{where}.values must be empty for {operator}.")


# What the validators accept, as JSON Schema (OpenAPI 3.1): the API schema publishes it, so clients and
# schema-driven tests know a label key's shape without reading this module.
LABELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"type": "string", "maxLength": 316, "pattern": LABEL_KEY.pattern},
    "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE.pattern},
}
_EXPRESSION_KEY = {"type": "string", "pattern": LABEL_KEY.pattern}
SELECTOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": LABELS_SCHEMA,
        "matchExpressions": {
            "type": "array",
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["key", "operator", "values"],
                        "properties": {
                            "key": _EXPRESSION_KEY,
                            "operator": {"enum": ["In", "NotIn"]},
                            "values": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        },
                    },
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["key", "operator"],
                        "properties": {
                            "key": _EXPRESSION_KEY,
                            "operator": {"enum": ["Exists", "DoesNotExist"]},
                            "values": {"type": "array", "maxItems": 0},
                        },
                    },
                ]
            },
        },
    },
}
validate_labels.json_schema = LABELS_SCHEMA  # type: ignore[attr-defined]
validate_selector.json_schema = SELECTOR_SCHEMA  # type: ignore[attr-defined]


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether labels satisfy the selector. An empty selector matches nothing (a group's static members only),
    unlike Kubernetes, where it matches everything."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False
    return selector_matches(selector, labels)


_TERM = re.compile(
    r"^\s*(?P<key>[^\s!=,()]+)(?:(?P<op>\s*(?:==|=|!=)\s*|\s+(?:in|notin)\s+)(?P<value>.*?))?\s*$"
)


def parse_selector_string(text: str) -> dict[str, Any]:
    """Parse the kubectl form (`env=prod,region in (eu,us),!legacy`) into a structured selector."""
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for term in _split_terms(text):
        if term.startswith("!"):
            expressions.append({"key": term[1:].strip(), "operator": "DoesNotExist", "values": []})
            continue
        m = _TERM.match(term)
        if not m:
            raise ValidationError(f"Cannot parse selector term {term!r}.")
        key, op, value = m["key"], (m["op"] or "").strip(), (m["value"] or "").strip()
        if not op:
            expressions.append({"key": key, "operator": "Exists", "values": []})
        elif op in ("=", "=="):
            match_labels[key] = value
        elif op == "!=":
            expressions.append({"key": key, "operator": "NotIn", "values": [value]})
        else:
            if not (value.startswith("(") and value.endswith(")")):
                raise ValidationError(f"Values of {op!r} go in parentheses: {term!r}.")
            values = [v.strip() for v in value[1:-1].split(",") if v.strip()]
            expressions.append({"key": key, "operator": "In" if op == "in" else "NotIn", "values": values})
    selector = {"matchLabels": match_labels, "matchExpressions": expressions}
    validate_selector(selector)
    return selector


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return terms


def selector_to_string(selector: Mapping[str, Any] | None) -> str:
    """The kubectl form of a structured selector (inverse of parse_selector_string)."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr["key"], expr["operator"], expr.get("values") or []
        if operator == "Exists":
            terms.append(key)
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            terms.append(f"{key} {'in' if operator == 'In' else 'notin'} ({','.join(values)})")
    return ",".join(terms)
