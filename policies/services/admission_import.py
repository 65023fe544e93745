"""Importing ValidatingAdmissionPolicies and Kyverno policies as they are (used by ``importing``).

* A ``ValidatingAdmissionPolicyBinding`` makes one Fleetgate policy (style ``vap``) named after the binding,
  holding the binding and the policy it names (from the same import, or the policy already stored under
  another binding); a ValidatingAdmissionPolicy that no binding names is reported, not imported (Kubernetes
  does not evaluate it either).
* A Kyverno ``ClusterPolicy`` makes a policy (style ``kyverno``) named after it, a namespaced ``Policy`` one
  named ``<namespace>.<name>``; its mutate, generate and verifyImages rules are reported by name as not
  applied by the gate.
* A Kyverno ``PolicyException`` becomes waivers (:func:`exception_waivers`): one per policy, rule and
  resource filter it names, exactly; an exception that a waiver cannot express exactly (conditions,
  selectors other than matchLabels, namespace selectors, wildcard namespaces, operations, subjects, kinds
  with a group) is refused with the reason, never widened.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import yaml
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from policies.choices import PolicyStyle
from policies.models import MAX_WAIVER_DAYS, Policy
from policies.services.definitions import PolicyInvalid

VAP = "ValidatingAdmissionPolicy"
VAP_BINDING = "ValidatingAdmissionPolicyBinding"
KYVERNO_KINDS = ("ClusterPolicy", "Policy")
EXCEPTION = "PolicyException"
NOT_APPLIED = ("mutate", "generate", "verifyImages")

#: annotations a PolicyException may carry for its waivers
EXPIRES_ANNOTATION = "fleetgate.io/expires-at"
JUSTIFICATION_ANNOTATION = "fleetgate.io/justification"
DEFAULT_EXCEPTION_DAYS = 30


def classify(doc: Mapping[str, Any]) -> str:
    """``vap``, ``vap-binding``, ``kyverno``, ``kyverno-exception`` or "" (not an admission document)."""
    api = str(doc.get("apiVersion") or "")
    kind = doc.get("kind")
    if api.startswith("admissionregistration.k8s.io/"):
        return {VAP: "vap", VAP_BINDING: "vap-binding"}.get(str(kind), "")
    if api.startswith("kyverno.io/"):
        if kind in KYVERNO_KINDS:
            return "kyverno"
        if kind == EXCEPTION:
            return "kyverno-exception"
    return ""


def _meta(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = doc.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def name_of(doc: Mapping[str, Any]) -> str:
    return str(_meta(doc).get("name") or "")


def kyverno_policy_name(doc: Mapping[str, Any]) -> str:
    """The Fleetgate name of a Kyverno policy: a ClusterPolicy's name, ``<namespace>.<name>`` for a Policy."""
    name = name_of(doc)
    namespace = str(_meta(doc).get("namespace") or "")
    return f"{namespace}.{name}" if doc.get("kind") == "Policy" and namespace else name


def kyverno_reference(policy_name: str) -> str:
    """A PolicyException's ``policyName`` (``name`` or ``namespace/name``) as the Fleetgate policy name."""
    return policy_name.replace("/", ".", 1)


def not_applied(doc: Mapping[str, Any], policy_name: str) -> list[str]:
    """The rules of a Kyverno policy the gate does not apply, by name, as report lines."""
    spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
    out = []
    for i, rule in enumerate((spec or {}).get("rules") or []):
        if not isinstance(rule, Mapping):
            continue
        for key in NOT_APPLIED:
            if key in rule:
                out.append(
                    f"{policy_name}: rule {rule.get('name') or f'#{i}'!s} ({key}) is not applied by the gate"
                )
    return out


def stored_vap(policy_name: str) -> str:
    """The YAML of a ValidatingAdmissionPolicy already stored with one of its bindings ("" when none)."""
    for policy in Policy.objects.filter(style=PolicyStyle.VAP).select_related("current"):
        text = policy.current.content.get("policy", "") if policy.current else ""
        try:
            doc = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            continue
        if isinstance(doc, Mapping) and name_of(doc) == policy_name:
            return str(text)
    return ""


# --------------------------------------------------------------------------------------------- exceptions


@dataclass(frozen=True)
class WaiverSpec:
    """One waiver an exception makes (the fields of :class:`policies.models.Waiver`)."""

    policy: str  # the Fleetgate policy name
    rule: str
    kind: str = ""
    namespace: str = ""
    name_pattern: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, sorted


@dataclass
class ExceptionPlan:
    origin: str  # "kyverno PolicyException <namespace>/<name>"
    waivers: list[WaiverSpec]
    expires_at: datetime
    justification: str


def _refuse(where: str, why: str) -> PolicyInvalid:
    return PolicyInvalid(
        f"{where}: cannot be expressed exactly as waivers: {why} (refused, not widened)", field="files"
    )


def _strings(raw: Any, where: str, what: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise PolicyInvalid(f"{where}: {what} must be a list of strings", field="files")
    return list(raw)


_RESOURCE_KEYS = frozenset({"kinds", "names", "name", "namespaces", "selector"})


def _filter_waivers(resources: Any, where: str) -> list[tuple[str, str, str, dict[str, str]]]:
    """(kind, namespace, name glob, labels) tuples whose union is exactly the filter's resources."""
    if not isinstance(resources, Mapping):
        raise PolicyInvalid(f"{where}.resources must be a mapping", field="files")
    extra = sorted(set(resources) - _RESOURCE_KEYS)
    if extra:
        raise _refuse(where, f"resources.{extra[0]} has no waiver field")
    kinds = _strings(resources.get("kinds"), where, "resources.kinds") or [""]
    for kind in kinds:
        if "/" in kind:
            raise _refuse(where, f"kind {kind!r} names a group, version or subresource; waivers match a kind")
        if kind != "*" and any(ch in kind for ch in "*?["):
            raise _refuse(where, f"kind {kind!r} is a wildcard")
    names = _strings(resources.get("names"), where, "resources.names")
    if resources.get("name"):
        names.append(str(resources["name"]))
    for name in names:
        if "[" in name:
            raise _refuse(where, f"name {name!r} holds '[', which waiver globs read differently")
    namespaces = _strings(resources.get("namespaces"), where, "resources.namespaces")
    for ns in namespaces:
        if any(ch in ns for ch in "*?["):
            raise _refuse(where, f"namespace {ns!r} is a wildcard; waivers name one namespace")
    labels: dict[str, str] = {}
    selector = resources.get("selector")
    if selector is not None:
        if not isinstance(selector, Mapping) or set(selector) - {"matchLabels"}:
            raise _refuse(where, "resources.selector has matchExpressions; waivers match labels exactly")
        raw = selector.get("matchLabels") or {}
        if not isinstance(raw, Mapping):
            raise PolicyInvalid(f"{where}.resources.selector.matchLabels must be a mapping", field="files")
        for k, v in raw.items():
            if any(ch in str(v) for ch in "*?"):
                raise _refuse(where, f"label {k}={v} is a wildcard")
            labels[str(k)] = str(v)
    return [
        ("" if kind == "*" else kind, ns, name, labels)
        for kind, ns, name in itertools.product(kinds, namespaces or [""], names or [""])
    ]


def exception_plan(
    doc: Mapping[str, Any], path: str, *, default_days: int = DEFAULT_EXCEPTION_DAYS
) -> ExceptionPlan:
    """The waivers a Kyverno PolicyException makes, or PolicyInvalid saying why it cannot be made exactly."""
    meta = _meta(doc)
    ident = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}".lstrip("/")
    where = f"{path}: PolicyException {ident}"
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise PolicyInvalid(f"{where}: spec must be a mapping", field="files")
    for key in ("conditions", "podSecurity"):
        if spec.get(key):
            raise _refuse(where, f"spec.{key} has no waiver counterpart")
    match = spec.get("match")
    if not isinstance(match, Mapping) or not (match.get("any") or match.get("all")):
        raise PolicyInvalid(f"{where}: spec.match needs any or all resource filters", field="files")
    if match.get("any") and match.get("all"):
        raise _refuse(where, "spec.match has both any and all")
    filters = match.get("any") or match.get("all")
    if not isinstance(filters, list):
        raise PolicyInvalid(f"{where}: spec.match.any/all must be a list", field="files")
    if match.get("all") and len(filters) > 1:
        raise _refuse(where, "spec.match.all of several filters (an intersection) has no waiver counterpart")
    selectors: list[tuple[str, str, str, dict[str, str]]] = []
    for i, flt in enumerate(filters):
        at = f"{where} match[{i}]"
        if not isinstance(flt, Mapping):
            raise PolicyInvalid(f"{at} must be a mapping", field="files")
        other = sorted(set(flt) - {"resources"})
        if other:
            raise _refuse(at, f"{other[0]} (who makes the request) has no waiver counterpart")
        selectors += _filter_waivers(flt.get("resources"), at)
    exceptions = spec.get("exceptions")
    if not isinstance(exceptions, list) or not exceptions:
        raise PolicyInvalid(f"{where}: spec.exceptions must list policyName and ruleNames", field="files")
    waivers: list[WaiverSpec] = []
    for j, exc in enumerate(exceptions):
        if not isinstance(exc, Mapping) or not isinstance(exc.get("policyName"), str):
            raise PolicyInvalid(f"{where}: exceptions[{j}] needs a policyName", field="files")
        rules = _strings(exc.get("ruleNames"), where, f"exceptions[{j}].ruleNames")
        if not rules:
            raise PolicyInvalid(f"{where}: exceptions[{j}] needs ruleNames", field="files")
        policy = kyverno_reference(exc["policyName"])
        for rule in rules:
            if any(ch in rule for ch in "*?["):
                raise _refuse(where, f"rule name {rule!r} is a wildcard")
            waivers += [
                WaiverSpec(policy, rule, k, ns, n, tuple(sorted(labels.items())))
                for k, ns, n, labels in selectors
            ]
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), Mapping) else {}
    now = timezone.now()
    expires_raw = (annotations or {}).get(EXPIRES_ANNOTATION)
    if expires_raw:
        expires_at = parse_datetime(str(expires_raw))
        if expires_at is None:
            raise PolicyInvalid(
                f"{where}: annotation {EXPIRES_ANNOTATION} {expires_raw!r} is not an ISO 8601 time",
                field="files",
            )
        if timezone.is_naive(expires_at):
            expires_at = timezone.make_aware(expires_at, timezone.get_current_timezone())
        if expires_at <= now or expires_at > now + timedelta(days=MAX_WAIVER_DAYS):
            raise PolicyInvalid(
                f"{where}: annotation {EXPIRES_ANNOTATION} must be in the next {MAX_WAIVER_DAYS} days",
                field="files",
            )
    else:
        expires_at = now + timedelta(days=default_days)
    justification = str((annotations or {}).get(JUSTIFICATION_ANNOTATION) or "").strip() or (
        f"Kyverno PolicyException {ident}"
    )
    return ExceptionPlan(f"kyverno PolicyException {ident}", waivers, expires_at, justification)


def referenced_policies(plans: Iterable[ExceptionPlan]) -> set[str]:
    return {w.policy for p in plans for w in p.waivers}
