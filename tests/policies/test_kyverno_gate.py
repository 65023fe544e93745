"""Kyverno policies in the gate itself (``policies.gate.evaluate_target``), issue 17: a ``validate.cel`` rule
with ``paramKind``/``paramRef`` reads its parameter objects from the render of the same target (then the live
objects the review read), as the VAP evaluator does; a parameter that is missing behaves as Kyverno's
``CollectParams`` does (a named one: an error whatever ``parameterNotFoundAction`` says; a selector that
selects nothing: an error under ``Deny``, else the rule passes); and the rules that matched and found nothing
come back as :class:`policies.gate.Passed` for the PolicyReports."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import yaml

from policies import gate
from tests.policies import language_library as ll
from tests.policies import policy_library as lib


def _policy(param_ref: dict[str, Any]) -> gate.BoundPolicy:
    doc = {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "max-replicas"},
        "spec": {
            "validationFailureAction": "Enforce",
            "rules": [
                {
                    "name": "replicas-within-limit",
                    "match": {"any": [{"resources": {"kinds": ["Deployment"]}}]},
                    "validate": {
                        "cel": {
                            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                            "paramRef": param_ref,
                            "expressions": [
                                {
                                    "expression": "object.spec.replicas <= int(params.data.maxReplicas)",
                                    "messageExpression": "'at most ' + params.data.maxReplicas + ' replicas'",
                                }
                            ],
                        }
                    },
                }
            ],
        },
    }
    return gate.BoundPolicy.kyverno(7, "max-replicas", yaml.safe_dump(doc))


def _limits(max_replicas: str, name: str = "replica-limits", **labels: str) -> dict[str, Any]:
    cm = ll.config_map(name, "apps", {"maxReplicas": max_replicas})
    if labels:
        cm["metadata"]["labels"] = labels
    return cm


def _outcome(decision: gate.Decision) -> tuple[str, list[tuple[str, str, str]], list[str]]:
    return (
        str(decision.outcome),
        [(v.object.name if v.object else "", v.rule, v.message) for v in decision.violations],
        [e.message for e in decision.errors],
    )


BY_NAME = {"name": "replica-limits"}


def test_a_cel_param_ref_reads_a_configmap_rendered_for_the_target() -> None:
    policy = _policy(BY_NAME)
    big, small = lib.deployment("big", replicas=6), lib.deployment("small", replicas=2)
    decision = gate.evaluate_target([_limits("4"), big, small], [policy])
    assert _outcome(decision) == ("blocked", [("big", "replicas-within-limit", "at most 4 replicas")], [])
    assert decision.violations[0].enforcement is gate.Enforcement.DENY
    assert decision.violations[0].language == "Kyverno"
    # the param says more are fine: the same objects pass
    assert _outcome(gate.evaluate_target([_limits("8"), big, small], [policy])) == ("passed", [], [])


def test_the_live_configmap_counts_when_the_render_does_not_hold_it() -> None:
    policy = _policy(BY_NAME)
    live = _limits("4")
    # the ConfigMap is being pruned from the target: the review read its live object
    pruned = gate.RenderedObject(None, "cm.yaml", operation="DELETE", old_object=live)
    decision = gate.evaluate_target([pruned, lib.deployment("big", replicas=6)], [policy])
    assert _outcome(decision)[1] == [("big", "replicas-within-limit", "at most 4 replicas")]
    # a rendered one wins over the live one
    update = gate.RenderedObject(_limits("9"), "cm.yaml", operation="UPDATE", old_object=live)
    assert (
        str(gate.evaluate_target([update, lib.deployment("big", replicas=6)], [policy]).outcome) == "passed"
    )


@pytest.mark.parametrize("action", [None, "Allow", "Deny"])
def test_a_named_param_that_is_missing_is_an_error_whatever_parameter_not_found_action_says(
    action: str | None,
) -> None:
    """Kyverno gets a named param with a GET: not found is the rule's error (``error in parameterized
    resource``), so the gate blocks, fail closed."""
    ref = {**BY_NAME, **({"parameterNotFoundAction": action} if action else {})}
    decision = gate.evaluate_target([lib.deployment("small", replicas=2)], [_policy(ref)])
    outcome, violations, errors = _outcome(decision)
    assert (outcome, violations) == ("blocked", [])
    assert len(errors) == 1
    assert errors[0].startswith(
        "replicas-within-limit on Deployment apps/small: error in parameterized resource"
    )
    assert "no ConfigMap replica-limits found in apps" in errors[0]
    assert [e.language for e in decision.errors] == ["Kyverno"]


@pytest.mark.parametrize(("action", "outcome"), [(None, "passed"), ("Allow", "passed"), ("Deny", "blocked")])
def test_a_selector_that_selects_nothing_passes_unless_parameter_not_found_action_is_deny(
    action: str | None, outcome: str
) -> None:
    ref: dict[str, Any] = {"selector": {"matchLabels": {"role": "limits"}}}
    if action:
        ref["parameterNotFoundAction"] = action
    policy = _policy(ref)
    unlabelled = _limits("1")  # in the render, but the selector does not select it
    decision = gate.evaluate_target([unlabelled, lib.deployment("big", replicas=6)], [policy])
    assert str(decision.outcome) == outcome
    if outcome == "blocked":
        assert "error in parameterized resource: no params found" in decision.errors[0].message
    # once a ConfigMap is selected, it is the param
    labelled = _limits("4", name="team-limits", role="limits")
    decision = gate.evaluate_target([labelled, lib.deployment("big", replicas=6)], [policy])
    assert _outcome(decision)[1] == [("big", "replicas-within-limit", "at most 4 replicas")]


def test_a_namespaced_param_for_a_cluster_scoped_object_needs_param_ref_namespace() -> None:
    doc = yaml.safe_load(_limits_policy_yaml())
    policy = gate.BoundPolicy.kyverno(8, "ns-limits", doc)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}
    decision = gate.evaluate_target([namespace], [policy])
    assert "can't use namespaced paramRef to match cluster-scoped resources" in decision.errors[0].message
    doc["spec"]["rules"][0]["validate"]["cel"]["paramRef"]["namespace"] = "kube-system"
    found = ll.config_map("ns-rules", "kube-system", {"forbidden": "apps"})
    decision = gate.evaluate_target([found, namespace], [gate.BoundPolicy.kyverno(8, "ns-limits", doc)])
    assert _outcome(decision)[1] == [("apps", "names", "namespace apps is forbidden")]


def _limits_policy_yaml() -> str:
    return """apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: ns-limits
spec:
  validationFailureAction: Enforce
  rules:
  - name: names
    match:
      any:
      - resources:
          kinds: [Namespace]
    validate:
      cel:
        paramKind: {apiVersion: v1, kind: ConfigMap}
        paramRef: {name: ns-rules}
        expressions:
        - expression: "object.metadata.name != params.data.forbidden"
          messageExpression: "'namespace ' + object.metadata.name + ' is forbidden'"
"""


def test_rules_that_matched_and_found_nothing_come_back_as_passes() -> None:
    kyverno = gate.BoundPolicy.kyverno(3, "require-team-label", ll.REQUIRE_TEAM_KYVERNO)
    vap = gate.BoundPolicy.vap(
        4,
        "replica-limit",
        ll.REPLICA_LIMIT_VAP,
        ll.vap_binding("replica-limit-binding", "replica-limit.example.com", ["Deny"]),
    )
    objects = [
        lib.deployment("fine"),
        lib.deployment("big", replicas=8, labels={}),
        ll.config_map("settings", "apps", {"a": "1"}),  # neither policy matches a ConfigMap
    ]
    decision = gate.evaluate_target(objects, [kyverno, vap])
    failed = {(v.policy_name, v.rule, v.object.name if v.object else "") for v in decision.violations}
    passed = {(p.policy_name, p.rule, o.name, p.language) for p in decision.passes for o in p.objects}
    assert passed
    # a pass is a rule that matched and found nothing: never on an object the same rule failed
    assert not {(p, r, o) for p, r, o, _ in passed} & failed
    assert ("require-team-label", "check-team", "fine", "Kyverno") in passed
    assert ("replica-limit", "validations[0]", "fine", "VAP (CEL)") in passed
    assert ("require-team-label", "check-team", "big") in failed
    assert not any(o == "settings" for _, _, o, _ in passed)
    # a policy that fails as a whole records no passes
    broken = replace(kyverno, admission=_Raising())
    decision = gate.evaluate_target(objects, [broken])
    assert decision.passes == [] and decision.errors


class _Raising:
    def evaluate(self, inputs: Any, params: Any, *, passes: Any = None) -> Any:
        if passes is not None:
            passes.append((0, "check-team"))
        raise RuntimeError("the evaluator broke")


WRITES_CONTEXT = """apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: writes-its-context
spec:
  validationFailureAction: Enforce
  rules:
  - name: writes
    match: {any: [{resources: {kinds: [ConfigMap]}}]}
    context:
    - name: meta
      variable: {jmesPath: request.object.metadata}
    - name: meta.labels
      variable: {value: {stolen: "yes"}}
    - name: own
      variable: {value: "writes"}
    validate:
      message: "never"
      deny: {conditions: {any: [{key: "{{ meta.labels.stolen }}", operator: Equals, value: "no"}]}}
  - name: reads
    match: {any: [{resources: {kinds: [ConfigMap]}}]}
    validate:
      message: "saw {{ request.object.metadata.labels }} and {{ own || 'nothing' }}"
      deny:
        conditions:
          any:
          - {key: "{{ request.object.metadata.labels.stolen || '' }}", operator: Equals, value: "yes"}
          - {key: "{{ own || '' }}", operator: Equals, value: "writes"}
"""

NO_STOLEN_LABEL_VAP = """apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: no-stolen-label
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
  validations:
  - expression: "!has(object.metadata.labels.stolen)"
    message: the label stolen appeared
"""


def test_no_rule_sees_another_rules_context_entries_or_changes_the_reviewed_objects() -> None:
    """The objects are shared by every rule and policy, never copied: a context entry written below the top
    level (``meta.labels`` where ``meta`` is the object's metadata) copies on write, so the object, the
    next rule, the next policy (Kyverno or VAP) and the Rego input all see the object as rendered."""
    writer = gate.BoundPolicy.kyverno(1, "writes-its-context", WRITES_CONTEXT)
    second = gate.BoundPolicy.kyverno(2, "reads-again", WRITES_CONTEXT.replace("writes-its-context", "again"))
    vap = gate.BoundPolicy.vap(
        3, "no-stolen", NO_STOLEN_LABEL_VAP, ll.vap_binding("b", "no-stolen-label", ["Deny"])
    )
    cm = ll.config_map("settings", "apps", {"a": "1"})
    cm["metadata"]["labels"] = {"app": "web"}
    rendered = yaml.safe_dump(cm)
    decision = gate.evaluate_target([cm], [writer, second, vap])
    assert _outcome(decision) == ("passed", [], [])
    assert yaml.safe_dump(cm) == rendered
    passed = {(p.policy_name, p.rule) for p in decision.passes}
    assert passed == {
        ("writes-its-context", "writes"),
        ("writes-its-context", "reads"),
        ("reads-again", "writes"),
        ("reads-again", "reads"),
        ("no-stolen", "validations[0]"),
    }
