"""Kyverno ``PolicyException`` (kyverno.io/v2, v2beta1): which policy rules it excuses, and for which
resources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.formats import FormatError
from policies.formats.admission import AdmissionInput
from policies.formats.kyverno.conditions import SubstitutionError, evaluate_conditions
from policies.formats.kyverno.jmes import JMESPathError
from policies.formats.kyverno.match import MatchResources
from policies.formats.kyverno.podsecurity import parse_excludes
from policies.formats.kyverno.policy import _conditions, _load
from policies.formats.kyverno.values import wildcard_match

EXCEPTION_API_VERSIONS = ("kyverno.io/v2", "kyverno.io/v2beta1", "kyverno.io/v2alpha1")


@dataclass(frozen=True)
class PolicyRules:
    policy_name: str  # "name" for a ClusterPolicy, "namespace/name" for a Policy
    rule_names: tuple[str, ...]  # wildcards allowed


@dataclass(frozen=True)
class KyvernoException:
    name: str
    namespace: str
    exceptions: tuple[PolicyRules, ...]
    match: MatchResources
    conditions: Any = None
    pod_security: tuple[Any, ...] = ()  # spec.podSecurity: only these Pod Security controls are exempted

    def covers(self, policy_key: str, rule: str) -> bool:
        return any(
            e.policy_name == policy_key and any(wildcard_match(r, rule) for r in e.rule_names)
            for e in self.exceptions
        )

    def matches(self, policy: Any, rule: str, inp: AdmissionInput) -> bool:
        """True when this exception excuses ``rule`` of ``policy`` (a KyvernoPolicy) for ``inp``."""
        from policies.formats.kyverno.engine import build_context, build_request

        key = policy.key if hasattr(policy, "key") else str(policy)
        if not self.covers(key, rule):
            return False
        if not self.match.matches_exception(build_request(inp)):
            return False
        if self.conditions is not None:
            try:
                ok, _ = evaluate_conditions(self.conditions, build_context(inp, {}, {}))
            except (SubstitutionError, JMESPathError):
                return False
            return ok
        return True


def parse_exception(doc: str | bytes | Mapping[str, Any]) -> KyvernoException:
    data = _load(doc, "PolicyException")
    if data.get("kind") != "PolicyException":
        raise FormatError(f"PolicyException: kind is {data.get('kind')!r}, expected PolicyException")
    if data.get("apiVersion") not in EXCEPTION_API_VERSIONS:
        raise FormatError(
            f"PolicyException: apiVersion {data.get('apiVersion')!r} is not one of "
            f"{', '.join(EXCEPTION_API_VERSIONS)}"
        )
    meta = data.get("metadata") or {}
    spec = data.get("spec")
    if not isinstance(spec, Mapping):
        raise FormatError("PolicyException: spec is required")
    raw = spec.get("exceptions")
    if not isinstance(raw, list) or not raw:
        raise FormatError("PolicyException: spec.exceptions must be a non-empty list")
    rules = []
    for i, e in enumerate(raw):
        if not isinstance(e, Mapping) or not e.get("policyName") or not isinstance(e.get("ruleNames"), list):
            raise FormatError(f"PolicyException: spec.exceptions[{i}] needs policyName and ruleNames")
        rules.append(PolicyRules(str(e["policyName"]), tuple(str(r) for r in e["ruleNames"])))
    match = MatchResources.parse(spec.get("match"), "PolicyException: spec.match")
    if match is None or (not match.any and not match.all):
        raise FormatError("PolicyException: spec.match needs any or all")
    return KyvernoException(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        exceptions=tuple(rules),
        match=match,
        conditions=_conditions(spec.get("conditions"), "PolicyException: spec.conditions"),
        pod_security=parse_excludes(spec.get("podSecurity"), "PolicyException: spec.podSecurity"),
    )
