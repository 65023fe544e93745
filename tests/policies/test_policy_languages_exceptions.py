"""Kyverno PolicyExceptions as waivers: each one becomes exactly the waivers that excuse what it excuses,
and one a waiver cannot express exactly is refused with the reason (never widened)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from django.utils import timezone

from policies.services.admission_import import WaiverSpec, exception_plan
from policies.services.definitions import PolicyInvalid


def exception(
    match: dict[str, Any], *, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kyverno.io/v2",
        "kind": "PolicyException",
        "metadata": {"name": "legacy", "namespace": "team-a", "annotations": annotations or {}},
        "spec": {
            "exceptions": [
                {"policyName": "require-labels", "ruleNames": ["check-team", "autogen-check-team"]},
                {"policyName": "team-a/disallow-latest", "ruleNames": ["no-latest"]},
            ],
            "match": match,
            **spec,
        },
    }
    return doc


def test_an_exception_becomes_one_waiver_per_policy_rule_and_resource_filter() -> None:
    doc = exception(
        {
            "any": [
                {"resources": {"kinds": ["Pod", "Deployment"], "namespaces": ["legacy"], "names": ["old-*"]}},
                {"resources": {"kinds": ["*"], "selector": {"matchLabels": {"legacy": "true"}}}},
            ]
        },
        annotations={"fleetgate.io/justification": "vendor chart; OPS-7"},
    )
    plan = exception_plan(doc, "exceptions.yaml")
    assert plan.origin == "kyverno PolicyException team-a/legacy"
    assert plan.justification == "vendor chart; OPS-7"
    assert timedelta(days=29) < plan.expires_at - timezone.now() <= timedelta(days=30)
    first = [
        WaiverSpec(policy, rule, kind, "legacy", "old-*")
        for policy, rule in (
            ("require-labels", "check-team"),
            ("require-labels", "autogen-check-team"),
            ("team-a.disallow-latest", "no-latest"),
        )
        for kind in ("Pod", "Deployment")
    ]
    assert set(plan.waivers) >= set(first)
    labelled = [w for w in plan.waivers if w.labels]
    assert {(w.policy, w.rule, w.kind, w.namespace, w.name_pattern) for w in labelled} == {
        ("require-labels", "check-team", "", "", ""),
        ("require-labels", "autogen-check-team", "", "", ""),
        ("team-a.disallow-latest", "no-latest", "", "", ""),
    }
    assert all(dict(w.labels) == {"legacy": "true"} for w in labelled)
    assert len(plan.waivers) == len(first) + 3


def test_the_expiry_annotation_sets_the_waivers_expiry_within_the_waiver_limit() -> None:
    when = (timezone.now() + timedelta(days=5)).replace(microsecond=0)
    doc = exception(
        {"any": [{"resources": {"kinds": ["Pod"]}}]},
        annotations={"fleetgate.io/expires-at": when.isoformat()},
    )
    assert exception_plan(doc, "e.yaml").expires_at == when
    too_late = (timezone.now() + timedelta(days=200)).isoformat()
    with pytest.raises(PolicyInvalid, match="must be in the next 90 days"):
        exception_plan(
            exception(
                {"any": [{"resources": {"kinds": ["Pod"]}}]},
                annotations={"fleetgate.io/expires-at": too_late},
            ),
            "e.yaml",
        )


@pytest.mark.parametrize(
    ("match", "spec", "reason"),
    [
        (
            {"any": [{"resources": {"kinds": ["Pod"]}}]},
            {"conditions": {"any": [{"key": "a"}]}},
            "spec.conditions",
        ),
        ({"any": [{"resources": {"kinds": ["apps/v1/Deployment"]}}]}, {}, "names a group"),
        ({"any": [{"resources": {"kinds": ["Pod"], "namespaces": ["team-*"]}}]}, {}, "is a wildcard"),
        (
            {"any": [{"resources": {"kinds": ["Pod"], "selector": {"matchExpressions": [{"key": "a"}]}}}]},
            {},
            "matchExpressions",
        ),
        ({"any": [{"resources": {"kinds": ["Pod"], "operations": ["CREATE"]}}]}, {}, "resources.operations"),
        ({"any": [{"resources": {"kinds": ["Pod"], "namespaceSelector": {}}}]}, {}, "namespaceSelector"),
        (
            {"any": [{"resources": {"kinds": ["Pod"]}, "subjects": [{"kind": "User", "name": "a"}]}]},
            {},
            "subjects",
        ),
        (
            {"all": [{"resources": {"kinds": ["Pod"]}}, {"resources": {"namespaces": ["a"]}}]},
            {},
            "intersection",
        ),
    ],
)
def test_an_exception_a_waiver_cannot_express_exactly_is_refused_with_the_reason(
    match: dict[str, Any], spec: dict[str, Any], reason: str
) -> None:
    with pytest.raises(PolicyInvalid) as refused:
        exception_plan(exception(match, **spec), "exceptions.yaml")
    assert "exceptions.yaml: PolicyException team-a/legacy" in refused.value.message
    assert "refused, not widened" in refused.value.message
    assert reason in refused.value.message


def test_an_exception_round_trips_through_yaml_unchanged() -> None:
    text = yaml.safe_dump(exception({"all": [{"resources": {"kinds": ["Pod"], "names": ["a"]}}]}))
    plan = exception_plan(yaml.safe_load(text), "e.yaml")
    assert {(w.kind, w.name_pattern) for w in plan.waivers} == {("Pod", "a")}
