"""VAP and Kyverno evaluations are bounded like Rego's (issue 17 review): a CEL cost budget per expression
(Kubernetes' runtime cost limit), a time limit per CEL evaluation (FLEETGATE_REGO_TIMEOUT, the limit of one
Rego evaluation) and the gate's time budget checked inside evaluations. A policy over a limit blocks with a
clear error; no assertion here is about how long anything takes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from policies import gate
from policies.formats import limits
from policies.formats.cel import CelEvalError, compile_expression
from policies.formats.kyverno.jmes import search
from policies.formats.kyverno.pattern import match_pattern

#: three comprehensions nested over the same list: n**3 iterations (10**9 for 1,000 items)
NESTED = (
    "object.data.l.split(',').all(a, object.data.l.split(',').all(b, "
    "object.data.l.split(',').all(c, a != '' || b != '' || c != '')))"
)
BIG = {"l": ",".join(str(i) for i in range(1000))}
SMALL = {"l": "1,2,3"}


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "apps"},
        "data": data,
    }


def vap(expression: str, failure_policy: str = "Fail") -> gate.BoundPolicy:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "nested"},
        "spec": {
            "failurePolicy": failure_policy,
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [{"expression": expression}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "nested"},
        "spec": {"policyName": "nested", "validationActions": ["Deny"]},
    }
    return gate.BoundPolicy.vap("1", "nested", policy, binding)


def kyverno_cel(expression: str) -> gate.BoundPolicy:
    return gate.BoundPolicy.kyverno(
        "2",
        "nested-kyverno",
        {
            "apiVersion": "kyverno.io/v1",
            "kind": "ClusterPolicy",
            "metadata": {"name": "nested-kyverno"},
            "spec": {
                "validationFailureAction": "Enforce",
                "rules": [
                    {
                        "name": "nested",
                        "match": {"any": [{"resources": {"kinds": ["ConfigMap"]}}]},
                        "validate": {"cel": {"expressions": [{"expression": expression}]}},
                    }
                ],
            },
        },
    )


def test_a_comprehension_over_the_cost_budget_fails_as_kubernetes_words_it() -> None:
    program = compile_expression(NESTED, ["object"])
    assert program.evaluate({"object": {"data": SMALL}}) is True  # within the budget: the answer
    with pytest.raises(CelEvalError) as caught:
        program.evaluate({"object": {"data": BIG}})
    assert str(caught.value) == "operation cancelled: actual cost limit exceeded"
    # the budget is per evaluation: the next one starts afresh
    assert program.evaluate({"object": {"data": SMALL}}) is True


def test_the_budget_counts_iterations_times_the_body_not_the_list() -> None:
    """One comprehension over 100,000 items is well within Kubernetes' 1,000,000 (body of 3 tokens)."""
    items = {"l": ",".join("x" * 100_000)}
    assert compile_expression("object.data.l.split(',').all(x, x == 'x')", ["object"]).evaluate(
        {"object": {"data": items}}
    )


@pytest.mark.parametrize("policy", [vap(NESTED), kyverno_cel(NESTED)], ids=["vap", "kyverno-cel"])
def test_a_policy_over_the_cost_budget_blocks_with_a_clear_error(policy: gate.BoundPolicy) -> None:
    """VAP (failurePolicy Fail): an error on the object over the budget; Kyverno: the rule fails on it with
    the CEL error, as Kyverno reports a validate.cel expression that cannot be evaluated."""
    decision = gate.evaluate_target([configmap("small", SMALL), configmap("big", BIG)], [policy])
    assert decision.outcome is gate.Outcome.BLOCKED
    found = [(e.message, "") for e in decision.errors] + [
        (v.message, v.object.name if v.object else "") for v in decision.violations
    ]
    assert len(found) == 1
    message, name = found[0]
    assert "operation cancelled: actual cost limit exceeded" in message
    assert "ConfigMap apps/big" in message or name == "big"


def test_vap_failure_policy_ignore_lets_a_cost_error_pass_as_kubernetes_does() -> None:
    decision = gate.evaluate_target([configmap("big", BIG)], [vap(NESTED, failure_policy="Ignore")])
    assert decision.errors == [] and decision.violations == []


def test_an_evaluation_past_the_rego_timeout_blocks(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the cost budget the nested comprehensions would run for hours: the per-evaluation time limit
    (FLEETGATE_REGO_TIMEOUT) stops them inside the evaluation, and the gate blocks with a timeout error
    (whatever failurePolicy says: fail closed, as for Rego)."""
    monkeypatch.setattr(limits, "PER_CALL_COST_LIMIT", 10**15)
    settings.FLEETGATE_REGO_TIMEOUT = "0.5"
    for policy in (vap(NESTED, failure_policy="Ignore"), kyverno_cel(NESTED)):
        decision = gate.evaluate_target([configmap("big", BIG)], [policy])
        assert decision.outcome is gate.Outcome.BLOCKED
        [error] = decision.errors
        assert error.kind == "timeout"
        assert (
            "CEL evaluation stopped at the 0.5s limit of one evaluation (FLEETGATE_REGO_TIMEOUT)"
            in error.message
        )


def test_the_gate_time_budget_is_checked_inside_an_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "PER_CALL_COST_LIMIT", 10**15)
    decision = gate.evaluate_target([configmap("big", BIG)], [vap(NESTED)], time_budget=0.5)
    assert decision.outcome is gate.Outcome.BLOCKED
    [error] = decision.errors
    assert error.kind == "timeout"
    assert "CEL evaluation stopped at the policy evaluation's time budget" in error.message


def test_kyverno_queries_and_patterns_stop_once_the_time_budget_is_spent() -> None:
    with limits.time_limit(time.monotonic() - 1):
        with pytest.raises(limits.EvaluationTimeout):
            search("items[*].name", {"items": [{"name": "a"}]})
        with pytest.raises(limits.EvaluationTimeout):
            match_pattern({"a": 1}, {"a": 1})
    assert search("items[*].name", {"items": [{"name": "a"}]}) == ["a"]
    assert match_pattern({"a": 1}, {"a": 1}).ok
