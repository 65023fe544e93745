"""ValidatingAdmissionPolicy evaluated offline (policies/formats/vap.py): the examples of the Kubernetes
documentation (our own cases written from them), every match field, params, failurePolicy, errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from policies.formats import FormatError
from policies.formats.vap import compile, parse_binding, parse_policy, resource_of
from tests.policies.vap_cases import binding, deployment, policy, review

REPLICAS = [{"expression": "object.spec.replicas <= 5"}]


def vap(pol: dict[str, Any], bind: dict[str, Any] | None = None) -> Any:
    return compile(parse_policy(pol), parse_binding(bind) if bind else None)


def messages(compiled: Any, *inputs: Any, params: Any = None) -> list[str]:
    found = compiled.evaluate(list(inputs), params) if params else compiled.evaluate(list(inputs))
    return [f.message for f in found]


# ---------------------------------------------------------------- documentation examples


def test_doc_demo_policy_limits_replicas() -> None:
    compiled = vap(
        policy("demo-policy.example.com", REPLICAS),
        binding("demo-binding-test.example.com", "demo-policy.example.com"),
    )
    assert messages(compiled, review(deployment("ok", 5))) == []
    found = compiled.evaluate([review(deployment("big", 6))])
    assert [(f.rule, f.message, f.action, f.error) for f in found] == [
        ("validations[0]", "failed expression: object.spec.replicas <= 5", "deny", False)
    ]
    assert found[0].details["kubernetes_message"] == (
        "ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' "
        "denied request: failed expression: object.spec.replicas <= 5"
    )
    assert found[0].details["reason"] == "Invalid"


def _limits(
    api_version: str, kind: str, namespace: str, name: str, selector: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    assert (api_version, kind) == ("rules.example.com/v1", "ReplicaLimit")
    limits = [
        {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": "replica-limit-test.example.com", "labels": {"env": "test"}},
            "maxReplicas": 3,
        },
        {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": "replica-limit-prod.example.com", "labels": {"env": "prod"}},
            "maxReplicas": 100,
        },
    ]
    if name:
        return [p for p in limits if p["metadata"]["name"] == name]
    wanted = (selector or {}).get("matchLabels", {})
    return [p for p in limits if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]


def test_doc_params_replica_limit_with_message_expression() -> None:
    pol = policy(
        "replicalimit-policy.example.com",
        [
            {
                "expression": "object.spec.replicas <= params.maxReplicas",
                "messageExpression": "'object.spec.replicas must be no greater than ' + "
                "string(params.maxReplicas)",
                "reason": "Invalid",
            }
        ],
        paramKind={"apiVersion": "rules.example.com/v1", "kind": "ReplicaLimit"},
        failurePolicy="Fail",
    )
    by_name = binding(
        "replicalimit-binding-test.example.com",
        "replicalimit-policy.example.com",
        paramRef={
            "name": "replica-limit-test.example.com",
            "namespace": "default",
            "parameterNotFoundAction": "Deny",
        },
    )
    compiled = vap(pol, by_name)
    assert messages(compiled, review(deployment("web", 3)), params=_limits) == []
    assert messages(compiled, review(deployment("web", 4)), params=_limits) == [
        "object.spec.replicas must be no greater than 3"
    ]
    # a selector selects several params: one evaluation per param object, as the API server does
    by_selector = binding(
        "b",
        "replicalimit-policy.example.com",
        paramRef={"selector": {"matchLabels": {}}, "parameterNotFoundAction": "Deny"},
    )
    found = vap(pol, by_selector).evaluate([review(deployment("web", 50))], _limits)
    assert [(f.message, f.details["params"]) for f in found] == [
        ("object.spec.replicas must be no greater than 3", "replica-limit-test.example.com")
    ]


def test_param_not_found_follows_the_action_and_failure_policy() -> None:
    pol = policy(
        "p",
        [{"expression": "object.spec.replicas <= params.maxReplicas"}],
        paramKind={"apiVersion": "rules.example.com/v1", "kind": "ReplicaLimit"},
    )
    missing = {"name": "nope", "parameterNotFoundAction": "Deny"}
    found = vap(pol, binding("b", "p", paramRef=missing)).evaluate([review(deployment("web", 1))], _limits)
    assert [(f.error, f.message) for f in found] == [
        (
            True,
            "failed to configure binding: no params found for policy "
            "binding with `Deny` parameterNotFoundAction",
        )
    ]
    allow = {"name": "nope", "parameterNotFoundAction": "Allow"}
    assert vap(pol, binding("b", "p", paramRef=allow)).evaluate([review(deployment("web", 1))], _limits) == []
    ignore = {**pol, "spec": {**pol["spec"], "failurePolicy": "Ignore"}}
    assert (
        vap(ignore, binding("b", "p", paramRef=missing)).evaluate([review(deployment("web", 1))], _limits)
        == []
    )


def test_doc_match_conditions_exclude_leases_and_kubelet() -> None:
    pol = policy(
        "demo-policy.example.com",
        [{"expression": "!object.metadata.name.contains('forbidden')"}],
        matchConstraints={
            "resourceRules": [
                {
                    "apiGroups": ["*"],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["*"],
                }
            ]
        },
        matchConditions=[
            {
                "name": "exclude-leases",
                "expression": "!(request.resource.group == 'coordination.k8s.io' && "
                "request.resource.resource == 'leases')",
            },
            {
                "name": "exclude-kubelet-requests",
                "expression": "!('system:nodes' in request.userInfo.groups)",
            },
        ],
    )
    compiled = vap(pol)
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "forbidden", "namespace": "default"},
    }
    assert messages(compiled, review(lease)) == []
    kubelet = {"username": "system:node:n1", "groups": ["system:nodes"]}
    assert messages(compiled, review(deployment("forbidden"), user=kubelet)) == []
    assert len(messages(compiled, review(deployment("forbidden")))) == 1


def test_doc_variables_image_registry_and_audit_annotations() -> None:
    pol = policy(
        "image-matches-namespace-environment.policy.example.com",
        [
            {
                "expression": "variables.containers.all(c, "
                "c.image.startsWith(variables.environment + '.example.com/'))",
                "messageExpression": "'only ' + variables.environment + ' images are allowed in "
                "namespace ' + namespaceObject.metadata.name",
            }
        ],
        variables=[
            {
                "name": "environment",
                "expression": "'environment' in namespaceObject.metadata.labels ? "
                "namespaceObject.metadata.labels['environment'] : 'prod'",
            },
            {
                "name": "containers",
                "expression": "object.spec.template.spec.containers + "
                "object.spec.template.spec.?initContainers.orValue([])",
            },
        ],
        auditAnnotations=[
            {
                "key": "high-replica-count",
                "valueExpression": "'Deployment spec.replicas set to ' + string(object.spec.replicas)",
            }
        ],
    )
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "default", "labels": {"environment": "staging"}},
    }
    ok = deployment("web")
    ok["spec"]["template"]["spec"]["containers"][0]["image"] = "staging.example.com/app:1"
    assert messages(vap(pol), review(ok, namespace=ns)) == []
    found = vap(pol).evaluate([review(deployment("web", 7), namespace=ns)])
    assert [f.message for f in found] == ["only staging images are allowed in namespace default"]
    key = "image-matches-namespace-environment.policy.example.com/high-replica-count"
    assert found[0].details["audit_annotations"] == {key: "Deployment spec.replicas set to 7"}


def test_variables_are_lazy_so_a_guard_protects_them() -> None:
    pol = policy(
        "p",
        [{"expression": "!has(object.spec.template.spec.hostNetwork) || !variables.hostNet"}],
        variables=[{"name": "hostNet", "expression": "object.spec.template.spec.hostNetwork"}],
    )
    assert messages(vap(pol), review(deployment("web"))) == []


def test_update_sees_the_old_object_and_delete_has_no_object() -> None:
    pol = policy(
        "no-scale-down",
        [
            {
                "expression": "oldObject == null || object == null || object.spec.replicas "
                ">= oldObject.spec.replicas",
                "message": "no scale down",
            }
        ],
        matchConstraints={
            "resourceRules": [
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "operations": ["*"],
                    "resources": ["deployments"],
                }
            ]
        },
    )
    compiled = vap(pol)
    assert messages(compiled, review(deployment("web", 2), "UPDATE", old=deployment("web", 3))) == [
        "no scale down"
    ]
    assert messages(compiled, review(deployment("web", 4), "UPDATE", old=deployment("web", 3))) == []
    assert messages(compiled, review(None, "DELETE", old=deployment("web", 3))) == []


# ---------------------------------------------------------------- matching


def _match(constraints: dict[str, Any], item: Any, bind: dict[str, Any] | None = None) -> bool:
    pol = policy("p", [{"expression": "false", "message": "matched"}], matchConstraints=constraints)
    return bool(vap(pol, bind).evaluate([item]))


RULE = {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["deployments"]}


@pytest.mark.parametrize(
    ("rule", "matched"),
    [
        (RULE, True),
        ({**RULE, "resources": ["*"]}, True),
        ({**RULE, "resources": ["*/*"]}, True),
        ({**RULE, "resources": ["deployments/scale"]}, False),  # a subresource only
        ({**RULE, "resources": ["*/scale"]}, False),
        ({**RULE, "resources": ["pods"]}, False),
        ({**RULE, "apiGroups": [""]}, False),
        ({**RULE, "apiGroups": ["*"]}, True),
        ({**RULE, "apiGroups": ["extensions"]}, True),  # matchPolicy Equivalent (the default)
        ({**RULE, "apiVersions": ["v1beta1"]}, True),
        ({**RULE, "operations": ["UPDATE"]}, False),
        ({**RULE, "operations": ["*"]}, True),
        ({**RULE, "resourceNames": ["web"]}, True),
        ({**RULE, "resourceNames": ["other"]}, False),
        ({**RULE, "scope": "Namespaced"}, True),
        ({**RULE, "scope": "Cluster"}, False),
    ],
)
def test_resource_rules(rule: dict[str, Any], matched: bool) -> None:
    assert _match({"resourceRules": [rule]}, review(deployment("web"))) is matched


def test_match_policy_exact_needs_the_same_group_and_version() -> None:
    assert (
        _match(
            {"matchPolicy": "Exact", "resourceRules": [{**RULE, "apiVersions": ["v1beta1"]}]},
            review(deployment("web")),
        )
        is False
    )
    assert (
        _match(
            {"matchPolicy": "Exact", "resourceRules": [{**RULE, "apiGroups": ["extensions"]}]},
            review(deployment("web")),
        )
        is False
    )
    assert _match({"matchPolicy": "Exact", "resourceRules": [RULE]}, review(deployment("web"))) is True


def test_exclude_resource_rules() -> None:
    rules = {
        "resourceRules": [{**RULE, "resources": ["*"]}],
        "excludeResourceRules": [{**RULE, "resourceNames": ["web"]}],
    }
    assert _match(rules, review(deployment("web"))) is False
    assert _match(rules, review(deployment("api"))) is True


def test_namespace_selector_uses_the_namespace_labels_and_its_name_label() -> None:
    prod = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"env": "prod"}}}
    by_label = {"resourceRules": [RULE], "namespaceSelector": {"matchLabels": {"env": "prod"}}}
    assert _match(by_label, review(deployment("web", namespace="shop"), namespace=prod)) is True
    assert _match(by_label, review(deployment("web", namespace="dev"))) is False
    by_name = {
        "resourceRules": [RULE],
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}
            ]
        },
    }
    assert _match(by_name, review(deployment("web", namespace="kube-system"))) is False
    assert _match(by_name, review(deployment("web", namespace="shop"))) is True
    # a Namespace itself is matched on its own labels; other cluster-scoped objects ignore the selector
    ns_rule = {
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["namespaces", "persistentvolumes"],
            }
        ],
        "namespaceSelector": {"matchLabels": {"env": "prod"}},
    }
    assert _match(ns_rule, review(prod)) is True
    assert _match(ns_rule, review({**prod, "metadata": {"name": "x"}})) is False
    assert (
        _match(ns_rule, review({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"}}))
        is True
    )


def test_object_selector_matches_the_object_or_the_old_object() -> None:
    rules = {
        "resourceRules": [{**RULE, "operations": ["*"]}],
        "objectSelector": {"matchLabels": {"team": "a"}},
    }
    assert _match(rules, review(deployment("web", labels={"team": "a"}))) is True
    assert _match(rules, review(deployment("web", labels={"team": "b"}))) is False
    assert (
        _match(
            rules,
            review(
                deployment("web", labels={"team": "b"}), "UPDATE", old=deployment("web", labels={"team": "a"})
            ),
        )
        is True
    )
    assert _match(rules, review(None, "DELETE", old=deployment("web", labels={"team": "a"}))) is True


def test_binding_match_resources_narrow_the_policy() -> None:
    bind = binding(
        "b",
        "p",
        matchResources={"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}},
    )
    assert _match({"resourceRules": [RULE]}, review(deployment("web", namespace="shop")), bind) is True
    assert _match({"resourceRules": [RULE]}, review(deployment("web", namespace="other")), bind) is False


@pytest.mark.parametrize(
    ("kind", "resource"),
    [
        ("Deployment", "deployments"),
        ("Ingress", "ingresses"),
        ("NetworkPolicy", "networkpolicies"),
        ("Endpoints", "endpoints"),
        ("Policy", "policies"),
        ("Class", "classes"),
        ("Widget", "widgets"),
    ],
)
def test_kind_to_resource(kind: str, resource: str) -> None:
    assert resource_of(kind) == resource


# ---------------------------------------------------------------- actions and failures


@pytest.mark.parametrize(
    ("actions", "action"),
    [
        (["Deny"], "deny"),
        (["Warn"], "warn"),
        (["Audit"], "dryrun"),
        (["Warn", "Audit"], "warn"),
        (["Deny", "Audit"], "deny"),
    ],
)
def test_validation_actions_map_to_enforcement(actions: list[str], action: str) -> None:
    found = vap(policy("p", REPLICAS), binding("b", "p", actions)).evaluate([review(deployment("web", 9))])
    assert [f.action for f in found] == [action]


def test_runtime_error_follows_failure_policy() -> None:
    broken = [{"expression": "object.spec.nothere > 1"}]
    found = vap(policy("p", broken)).evaluate([review(deployment("web"))])
    assert [(f.error, f.message) for f in found] == [
        (True, "expression 'object.spec.nothere > 1' resulted in error: no such key: nothere")
    ]
    assert vap(policy("p", broken, failurePolicy="Ignore")).evaluate([review(deployment("web"))]) == []
    cond = policy("p", REPLICAS, matchConditions=[{"name": "c", "expression": "object.nothere"}])
    assert [f.rule for f in vap(cond).evaluate([review(deployment("web", 9))])] == ["matchConditions"]


def test_message_expression_falls_back_to_message_on_error() -> None:
    pol = policy("p", [{"expression": "false", "message": "static", "messageExpression": "object.nothere"}])
    assert messages(vap(pol), review(deployment("web"))) == ["static"]


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (
            policy("p", [{"expression": "object.spec.replicas <="}]),
            "spec.validations[0].expression: Syntax error",
        ),
        (
            policy(
                "p",
                [
                    {"expression": "true"},
                    {"expression": "true"},
                    {"expression": "authorizer.group('').check('x')"},
                ],
            ),
            "spec.validations[2].expression: 'authorizer' is not available",
        ),
        (
            policy("p", [{"expression": "true", "messageExpression": "nope"}]),
            "spec.validations[0].messageExpression: undeclared reference to 'nope'",
        ),
        (
            policy("p", [{"expression": "true"}], variables=[{"name": "x", "expression": "object.("}]),
            "spec.variables[0].expression",
        ),
        (
            policy("p", [{"expression": "true"}], matchConditions=[{"expression": "true"}]),
            "spec.matchConditions[0].name is required",
        ),
        (
            policy("p", [{"expression": "true"}], failurePolicy="Maybe"),
            "spec.failurePolicy must be Fail or Ignore",
        ),
        (
            policy(
                "p",
                [{"expression": "true"}],
                matchConstraints={"resourceRules": [{"operations": ["PATCH"], "resources": ["pods"]}]},
            ),
            "spec.matchConstraints.resourceRules[0].operations",
        ),
        (
            policy("p", [{"expression": "true"}], matchConstraints={}),
            "spec.matchConstraints.resourceRules is required",
        ),
        (policy("p"), "spec.validations or spec.auditAnnotations is required"),
        ({**policy("p", REPLICAS), "apiVersion": "v1"}, "apiVersion must be admissionregistration.k8s.io/v1"),
    ],
)
def test_policy_errors_name_the_field(doc: dict[str, Any], error: str) -> None:
    with pytest.raises(FormatError) as caught:
        parse_policy(doc)
    assert error in str(caught.value)


def test_compile_error_names_the_position() -> None:
    with pytest.raises(FormatError) as caught:
        parse_policy(
            policy(
                "p",
                [{"expression": "true"}, {"expression": "true"}, {"expression": "object.spec.replicas <= "}],
            )
        )
    assert str(caught.value).startswith("spec.validations[2].expression: Syntax error")
    assert "(line 1, column 25)" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"validationActions": []}, "spec.validationActions is required"),
        ({"validationActions": ["Block"]}, "'Block' is not Deny, Warn or Audit"),
        ({"validationActions": ["Deny", "Warn"]}, "Deny and Warn cannot be used together"),
        (
            {"validationActions": ["Deny"], "paramRef": {"name": "a", "selector": {}}},
            "exactly one of name and selector",
        ),
        ({"validationActions": ["Deny"], "policyName": ""}, "spec.policyName is required"),
    ],
)
def test_binding_errors_name_the_field(spec: dict[str, Any], error: str) -> None:
    doc = binding("b", "p")
    doc["spec"].update(spec)
    with pytest.raises(FormatError) as caught:
        parse_binding(doc)
    assert error in str(caught.value)


def test_variables_see_only_the_variables_defined_before_them() -> None:
    later = policy(
        "p",
        [{"expression": "variables.b"}],
        variables=[{"name": "a", "expression": "variables.b"}, {"name": "b", "expression": "true"}],
    )
    with pytest.raises(FormatError) as caught:
        parse_policy(later)
    assert str(caught.value) == (
        "spec.variables[0].expression: undefined variable 'b' (an expression can use the variables defined "
        "before it: none) (line 1, column 11)"
    )
    unknown = policy("p", [{"expression": "variables.nope"}], variables=[{"name": "a", "expression": "true"}])
    with pytest.raises(FormatError, match=r"spec.validations\[0\].expression: undefined variable 'nope'"):
        parse_policy(unknown)
    chained = policy(
        "p",
        [{"expression": "variables.b < 5"}],
        variables=[
            {"name": "a", "expression": "object.spec.replicas"},
            {"name": "b", "expression": "variables.a * 2"},
        ],
    )
    assert messages(vap(chained), review(deployment("web", 2))) == []
    assert messages(vap(chained), review(deployment("web", 3))) == ["failed expression: variables.b < 5"]


def test_audit_annotation_null_is_left_out_and_an_error_follows_failure_policy() -> None:
    annotations = [
        {
            "key": "high",
            "valueExpression": "object.spec.replicas > 50 ? 'high: ' + string(object.spec.replicas) : null",
        },
        {"key": "broken", "valueExpression": "object.spec.nothere"},
    ]
    found = vap(policy("p", REPLICAS, auditAnnotations=annotations)).evaluate([review(deployment("web", 9))])
    assert sorted((f.rule, f.error) for f in found) == [
        ("auditAnnotations[broken]", True),
        ("validations[0]", False),
    ]
    assert next(f for f in found if not f.error).details["audit_annotations"] == {}
    ignore = policy("p", REPLICAS, auditAnnotations=annotations, failurePolicy="Ignore")
    found = vap(ignore).evaluate([review(deployment("web", 60))])
    assert [(f.rule, f.details["audit_annotations"]) for f in found] == [
        ("validations[0]", {"p/high": "high: 60"})
    ]
