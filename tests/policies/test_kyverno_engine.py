"""Kyverno evaluator: pattern anchors and operators, condition operators, JMESPath functions, match fields,
autogen, failure actions and PolicyExceptions (policies/formats/kyverno)."""

from __future__ import annotations

from typing import Any

import pytest

from policies.formats import FormatError
from policies.formats.admission import AdmissionInput
from policies.formats.kube import object_id
from policies.formats.kyverno import parse_exception, parse_policy
from policies.formats.kyverno.conditions import evaluate_operator, substitute
from policies.formats.kyverno.jmes import JMESPathError, NotFound, search
from policies.formats.kyverno.pattern import match_pattern, validate_value


def pod(
    name: str = "p", labels: dict[str, str] | None = None, ns: str = "default", **spec: Any
) -> dict[str, Any]:
    spec.setdefault("containers", [{"name": "c", "image": "nginx:1.25"}])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": spec,
    }


def review(obj: dict[str, Any], operation: str = "CREATE", **kw: Any) -> AdmissionInput:
    return AdmissionInput(operation=operation, id=object_id(obj, ""), object=obj, old_object=None, **kw)


def policy(rules: list[dict[str, Any]], action: str = "Enforce", **meta: Any) -> Any:
    return parse_policy(
        {
            "apiVersion": "kyverno.io/v1",
            "kind": "ClusterPolicy",
            "metadata": {"name": "p", **meta},
            "spec": {"validationFailureAction": action, "rules": rules},
        }
    )


def pattern_rule(pattern: Any, kinds: tuple[str, ...] = ("Pod",), **extra: Any) -> dict[str, Any]:
    return {
        "name": "r",
        "match": {"any": [{"resources": {"kinds": list(kinds)}}]},
        "validate": {"message": "m {{ request.object.metadata.name }}", "pattern": pattern},
        **extra,
    }


def statuses(pol: Any, obj: dict[str, Any], **kw: Any) -> dict[str, str]:
    return {r.rule: r.status for r in pol.apply(review(obj, **kw))}


# ------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "pattern", "expected"),
    [
        ("nginx:1.2", "!*:latest", True),
        ("nginx:latest", "!*:latest", False),
        ("abc", "a?c", True),
        ("abbc", "a?c", False),
        ("x", "?*", True),
        ("", "?*", False),
        (5, ">3", True),
        (2, ">3", False),
        (3, ">=3", True),
        ("500m", "<=1", True),
        ("2Gi", "<1Gi", False),
        ("2Gi", "1Gi-4Gi", True),
        (11, "1-10", False),
        (11, "1!-10", True),
        (5, "1!-10", False),
        ("1h", ">30m", True),
        ("10m", ">30m", False),
        ("Always", "Always | IfNotPresent", True),
        ("Never", "Always | IfNotPresent", False),
        (5, ">1 & <10", True),
        (15, ">1 & <10", False),
        (None, None, True),
        ("", None, True),
        (0, None, True),
        ("x", None, False),
        (True, False, False),
        (80, 80, True),
        ("80", 80, True),
        (1.5, 1.5, True),
        ({"a": 1}, {}, True),
    ],
)
def test_pattern_values(value: Any, pattern: Any, expected: bool) -> None:
    assert validate_value(value, pattern) is expected


# ------------------------------------------------------------------------------------------- anchors


def test_plain_key_must_match_every_list_element() -> None:
    pattern = {"spec": {"containers": [{"image": "!*:latest"}]}}
    ok = pod(containers=[{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}])
    bad = pod(containers=[{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:latest"}])
    assert match_pattern(ok, pattern).ok
    res = match_pattern(bad, pattern)
    assert not res.ok and not res.skip and res.path == "/spec/containers/1/image/"


def test_equality_anchor_checks_only_when_present() -> None:
    pattern = {"spec": {"=(hostNetwork)": False}}
    assert match_pattern(pod(), pattern).ok
    assert not match_pattern(pod(hostNetwork=True), pattern).ok
    assert match_pattern(pod(hostNetwork=True), {"spec": {"?(hostNetwork)": True}}).ok


def test_negation_anchor_forbids_the_key() -> None:
    pattern = {"spec": {"X(hostPID)": "null"}}
    assert match_pattern(pod(), pattern).ok
    res = match_pattern(pod(hostPID=True), pattern)
    assert not res.ok and "not allowed" in res.message


def test_conditional_anchor_skips_or_applies() -> None:
    pattern = {"spec": {"containers": [{"(name)": "web", "image": "*:1.*"}]}}
    assert match_pattern(pod(containers=[{"name": "web", "image": "x:1.2"}]), pattern).ok
    assert not match_pattern(pod(containers=[{"name": "web", "image": "x:2.0"}]), pattern).ok
    skipped = match_pattern(pod(containers=[{"name": "db", "image": "x:2.0"}]), pattern)
    assert skipped.skip


def test_global_anchor_skips_the_whole_rule() -> None:
    pattern = {
        "spec": {"containers": [{"<(image)": "registry.corp/*"}], "imagePullSecrets": [{"name": "?*"}]}
    }
    other = pod(containers=[{"name": "a", "image": "docker.io/x"}])
    assert match_pattern(other, pattern).skip
    corp = pod(containers=[{"name": "a", "image": "registry.corp/x"}])
    assert not match_pattern(corp, pattern).ok
    corp["spec"]["imagePullSecrets"] = [{"name": "s"}]
    assert match_pattern(corp, pattern).ok


def test_existence_anchor_needs_one_matching_element() -> None:
    pattern = {"spec": {"^(containers)": [{"image": "nginx:*"}]}}
    assert match_pattern(pod(containers=[{"image": "a"}, {"image": "nginx:1"}]), pattern).ok
    assert not match_pattern(pod(containers=[{"image": "a"}]), pattern).ok


def test_wildcard_label_keys_expand_against_the_resource() -> None:
    pattern = {"metadata": {"labels": {"app.kubernetes.io/*": "?*"}}}
    assert match_pattern(pod(labels={"app.kubernetes.io/name": "x"}), pattern).ok


# ---------------------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("op", "key", "value", "expected"),
    [
        ("Equals", "abc", "a*", True),
        ("Equals", "1Gi", "1024Mi", True),
        ("Equals", "1h", "60m", True),
        ("Equals", 3, "3", True),
        ("Equals", 3, "3.0", True),
        ("Equals", "3", 3, False),
        ("NotEquals", "x", "y", True),
        ("AnyIn", ["a", "b"], ["b", "c"], True),
        ("AnyIn", ["a"], ["b"], False),
        ("AllIn", ["a", "b"], ["a", "b", "c"], True),
        ("AllIn", ["a", "z"], ["a", "b"], False),
        ("AnyNotIn", ["a", "z"], ["a", "b"], True),
        ("AllNotIn", ["x", "y"], ["a", "b"], True),
        ("AllNotIn", ["x", "a"], ["a", "b"], False),
        ("AnyIn", "CREATE", ["CREATE", "UPDATE"], True),
        ("AnyNotIn", "DELETE", ["CREATE", "UPDATE"], True),
        ("AnyIn", 5, "1-10", True),
        ("AnyIn", "ns-1", ["ns-*"], True),
        ("In", "a", ["a", "b"], True),
        ("NotIn", "c", ["a", "b"], True),
        ("GreaterThan", 5, 3, True),
        ("GreaterThan", "2Gi", "1Gi", True),
        ("GreaterThanOrEquals", "1", 1, True),
        ("LessThan", "500m", "1", True),
        ("LessThanOrEquals", "1.2.3", "1.10.0", True),
        ("DurationGreaterThan", "2h", "90m", True),
        ("DurationLessThanOrEquals", "30s", 30, True),
        ("DurationLessThan", "2h", "1h", False),
    ],
)
def test_condition_operators(op: str, key: Any, value: Any, expected: bool) -> None:
    assert evaluate_operator(op, key, value) is expected


# ----------------------------------------------------------------------------------------- JMESPath


def test_missing_key_is_an_error_unless_defaulted() -> None:
    data = {"request": {"object": {"metadata": {"labels": {"a": "b"}}}}}
    with pytest.raises(NotFound):
        search("request.object.metadata.labels.z", data)
    assert search("request.object.metadata.labels.z || 'dflt'", data) == "dflt"
    assert search("length(request.object.metadata.missing || `[]`)", data) == 0


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("to_upper('abc')", "ABC"),
        ("to_lower('ABC')", "abc"),
        ("trim('  x ', ' ')", "x"),
        ("split('a,b', ',')", ["a", "b"]),
        ("regex_match('^ng', 'nginx')", True),
        ("regex_replace_all('([a-z]+)-([0-9]+)', 'app-12', '$2')", "12"),
        ('label_match(`{"a":"1"}`, `{"a":"1","b":"2"}`)', True),
        ("parse_json('{\"a\": [1]}').a[0]", 1),
        ("parse_yaml('a: b').a", "b"),
        ("base64_decode(base64_encode('hi'))", "hi"),
        ("compare('a', 'b')", -1),
        ("equal_fold('Ab', 'aB')", True),
        ("replace('aaa', 'a', 'b', `2`)", "bba"),
        ("replace_all('aaa', 'a', 'b')", "bbb"),
        ("truncate('abcdef', `3`)", "abc"),
        ("semver_compare('1.2.3', '>=1.0.0 <2.0.0')", True),
        ("add(`1`, `2`)", 3),
        ("add('1Gi', '512Mi')", "1536Mi"),
        ("subtract('1h', '30s')", "59m30s"),
        ("multiply('500m', `2`)", "1"),
        ("divide('2Gi', '1Gi')", 2.0),
        ("modulo(`7`, `3`)", 1.0),
        ("items(`{\"b\":1,\"a\":2}`, 'k', 'v')[0].k", "a"),
        ("object_from_lists(['a','b'], [`1`,`2`]).b", 2),
        ("lookup(`{\"a\":1}`, 'a')", 1),
        ("pattern_match('nginx:*', 'nginx:1')", True),
        ("time_add('2024-01-01T00:00:00Z', '1h')", "2024-01-01T01:00:00Z"),
        ("time_diff('2024-01-01T00:00:00Z', '2024-01-01T02:00:00Z')", "2h0m0s"),
        ("time_before('2024-01-01T00:00:00Z', '2024-01-02T00:00:00Z')", True),
        ("image_normalize('nginx')", "docker.io/library/nginx:latest"),
        ("sha256('a')", "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"),
    ],
)
def test_kyverno_functions(expression: str, expected: Any) -> None:
    assert search(expression, {}) == expected


def test_a_failing_function_is_an_error() -> None:
    with pytest.raises(JMESPathError):
        search("divide(`1`, `0`)", {})
    with pytest.raises(JMESPathError):
        search("random('[a-z]{4}')", {})


def test_substitution_types_and_strings() -> None:
    ctx = {"request": {"object": {"metadata": {"name": "x", "labels": {"a": "b"}}}}}
    assert substitute("{{ request.object.metadata.labels }}", ctx) == {"a": "b"}
    assert substitute("n={{request.object.metadata.name}}", ctx) == "n=x"
    assert substitute("\\{{ literal }}", ctx) == "{{ literal }}"


# -------------------------------------------------------------------------------------------- match


def match_policy(match: dict[str, Any], exclude: dict[str, Any] | None = None) -> Any:
    rule = {"name": "r", "match": match, "validate": {"pattern": {"metadata": {"name": "?*"}}}}
    if exclude:
        rule["exclude"] = exclude
    return policy([rule])


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"kinds": ["Pod"]}, True),
        ({"kinds": ["v1/Pod"]}, True),
        ({"kinds": ["apps/v1/Deployment"]}, False),
        ({"kinds": ["*"]}, True),
        ({"kinds": ["Pod"], "names": ["web-*"]}, True),
        ({"kinds": ["Pod"], "name": "db"}, False),
        ({"kinds": ["Pod"], "namespaces": ["prod-*"]}, True),
        ({"kinds": ["Pod"], "namespaces": ["dev"]}, False),
        ({"kinds": ["Pod"], "annotations": {"team": "a*"}}, True),
        ({"kinds": ["Pod"], "selector": {"matchLabels": {"app": "web"}}}, True),
        (
            {
                "kinds": ["Pod"],
                "selector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
            },
            False,
        ),
        ({"kinds": ["Pod"], "namespaceSelector": {"matchLabels": {"env": "prod"}}}, True),
        ({"kinds": ["Pod"], "namespaceSelector": {"matchLabels": {"env": "dev"}}}, False),
        ({"kinds": ["Pod"], "operations": ["UPDATE"]}, False),
        ({"kinds": ["Pod"], "operations": ["CREATE"]}, True),
    ],
)
def test_match_resource_fields(resources: dict[str, Any], expected: bool) -> None:
    obj = pod("web-1", {"app": "web"}, ns="prod-eu")
    obj["metadata"]["annotations"] = {"team": "alpha"}
    ns = {"metadata": {"name": "prod-eu", "labels": {"env": "prod"}}}
    pol = match_policy({"any": [{"resources": resources}]})
    assert bool(pol.apply(review(obj, namespace_object=ns))) is expected


def test_match_all_and_exclude_and_user_info() -> None:
    obj = pod("web-1", {"app": "web"})
    user = {"username": "system:serviceaccount:ci:deployer", "groups": ["devs"], "clusterRoles": ["admin"]}
    all_pol = match_policy({"all": [{"resources": {"kinds": ["Pod"]}}, {"resources": {"names": ["db*"]}}]})
    assert not all_pol.apply(review(obj))
    excl = match_policy(
        {"any": [{"resources": {"kinds": ["Pod"]}}]},
        {"any": [{"subjects": [{"kind": "Group", "name": "devs"}]}]},
    )
    assert not excl.apply(review(obj, user_info=user))
    assert excl.apply(review(obj, user_info={"username": "alice", "groups": ["ops"]}))
    sa = match_policy(
        {
            "any": [
                {
                    "resources": {"kinds": ["Pod"]},
                    "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}],
                }
            ]
        }
    )
    assert sa.apply(review(obj, user_info=user))
    assert not sa.apply(review(obj, user_info={"username": "bob"}))
    roles = match_policy({"any": [{"resources": {"kinds": ["Pod"]}, "clusterRoles": ["admin"]}]})
    assert roles.apply(review(obj, user_info=user))
    assert not roles.apply(review(obj, user_info={"username": "bob", "clusterRoles": ["view"]}))


# ---------------------------------------------------------------------------------------- whole rules


def test_pattern_rule_fail_message_and_actions() -> None:
    pol = policy([pattern_rule({"metadata": {"labels": {"team": "?*"}}})])
    [res] = pol.apply(review(pod("web")))
    assert res.status == "fail" and res.action == "deny"
    assert res.message == "validation error: m web. rule r failed at path /metadata/labels/team/"
    findings = pol.evaluate([review(pod("ok", {"team": "a"})), review(pod("web"))])
    assert [(f.index, f.rule, f.action) for f in findings] == [(1, "r", "deny")]
    audit = policy([pattern_rule({"metadata": {"labels": {"team": "?*"}}})], action="Audit")
    assert [f.action for f in audit.evaluate([review(pod())])] == ["dryrun"]
    per_rule = pattern_rule({"metadata": {"labels": {"team": "?*"}}})
    per_rule["validate"]["failureAction"] = "Audit"
    assert [f.action for f in policy([per_rule]).evaluate([review(pod())])] == ["dryrun"]


def test_autogen_rules_for_pod_controllers() -> None:
    pol = policy([pattern_rule({"spec": {"containers": [{"image": "!*:latest"}]}})])
    assert [r.name for r in pol.rules] == ["r", "autogen-r", "autogen-cronjob-r"]
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:latest"}]}}},
    }
    assert statuses(pol, deploy) == {"autogen-r": "fail"}
    none = policy(
        [pattern_rule({"spec": {"containers": [{"image": "!*:latest"}]}})],
        annotations={"pod-policies.kyverno.io/autogen-controllers": "none"},
    )
    assert [r.name for r in none.rules] == ["r"]


def test_deny_preconditions_and_foreach() -> None:
    deny = {
        "name": "no-host-ports",
        "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        "preconditions": {
            "all": [{"key": "{{ request.operation }}", "operator": "NotEquals", "value": "DELETE"}]
        },
        "validate": {
            "message": "ports",
            "deny": {
                "conditions": {
                    "any": [
                        {
                            "key": "{{ request.object.spec.containers[].ports[].hostPort || `[]` }}",
                            "operator": "AnyNotIn",
                            "value": ["0"],
                        }
                    ]
                }
            },
        },
    }
    foreach = {
        "name": "images",
        "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        "validate": {
            "message": "image {{ element.image }}",
            "foreach": [
                {
                    "list": "request.object.spec.containers",
                    "deny": {
                        "conditions": {
                            "any": [{"key": "{{ element.image }}", "operator": "Equals", "value": "*:latest"}]
                        }
                    },
                }
            ],
        },
    }
    pol = policy([deny, foreach])
    good = pod(containers=[{"name": "c", "image": "x:1"}])
    bad = pod(containers=[{"name": "c", "image": "x:latest", "ports": [{"hostPort": 80}]}])
    assert statuses(pol, good) == {"no-host-ports": "pass", "images": "pass"}
    assert statuses(pol, bad) == {"no-host-ports": "fail", "images": "fail"}
    assert statuses(pol, good, operation="DELETE")["no-host-ports"] == "skip"


def test_context_variables_and_cluster_entries() -> None:
    rule = pattern_rule({"metadata": {"labels": {"team": "{{ wanted }}"}}})
    rule["context"] = [
        {"name": "wanted", "variable": {"jmesPath": "request.object.metadata.labels.owner", "default": "x"}}
    ]
    pol = policy([rule])
    assert statuses(pol, pod(labels={"owner": "a", "team": "a"})) == {"r": "pass"}
    assert statuses(pol, pod(labels={"team": "x"})) == {"r": "pass"}
    cluster = pattern_rule({"metadata": {"name": "?*"}})
    cluster["context"] = [{"name": "cm", "configMap": {"name": "c", "namespace": "d"}}]
    pol = policy([cluster])
    [res] = pol.apply(review(pod()))
    assert res.status == "error" and "needs the cluster" in res.message
    assert pol.evaluate([review(pod())])[0].error
    assert pol.needs_cluster() == {
        "r": ["cm (configMap)"],
        "autogen-r": ["cm (configMap)"],
        "autogen-cronjob-r": ["cm (configMap)"],
    }


def test_validate_cel_rule() -> None:
    rule = {
        "name": "replicas",
        "match": {"any": [{"resources": {"kinds": ["Deployment"]}}]},
        "validate": {
            "cel": {
                "expressions": [
                    {
                        "expression": "object.spec.replicas <= 3",
                        "messageExpression": "'too many: ' + string(object.spec.replicas)",
                    }
                ]
            }
        },
    }
    pol = policy([rule])
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "x"},
        "spec": {"replicas": 5},
    }
    [res] = pol.apply(review(deploy))
    assert (res.status, res.message) == ("fail", "too many: 5")


def test_mutate_and_generate_are_listed_not_applied() -> None:
    pol = policy(
        [
            pattern_rule({"metadata": {"name": "?*"}}),
            {
                "name": "add",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "mutate": {"patchStrategicMerge": {}},
            },
            {
                "name": "gen",
                "match": {"any": [{"resources": {"kinds": ["Namespace"]}}]},
                "generate": {"kind": "ConfigMap"},
            },
        ]
    )
    assert pol.not_applied == [("add", "mutate"), ("gen", "generate")]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [
                {
                    "name": "a",
                    "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                    "validate": {"pattern": "x"},
                }
            ],
            "spec.rules[0].validate.pattern",
        ),
        ([{"name": "a", "validate": {"pattern": {}}}], "spec.rules[0].match"),
        (
            [
                {
                    "name": "a",
                    "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                    "validate": {
                        "deny": {"conditions": {"any": [{"key": 1, "operator": "Bigger", "value": 2}]}}
                    },
                }
            ],
            "spec.rules[0].validate.deny.conditions.any[0].operator",
        ),
        (
            [
                {
                    "name": "a",
                    "match": {"any": [{"resources": {"kinds": ["Pod"], "operations": ["PATCH"]}}]},
                    "validate": {"pattern": {}},
                }
            ],
            "spec.rules[0].match.any[0].resources.operations",
        ),
        (
            [
                {
                    "name": "a",
                    "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                    "validate": {"cel": {"expressions": [{"expression": "object.("}]}},
                }
            ],
            "spec.rules[0].validate.cel.expressions[0]",
        ),
    ],
)
def test_malformed_policies_name_the_field(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(FormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        policy(rules)


def test_policy_exception_excuses_named_rules() -> None:
    pol = policy([pattern_rule({"metadata": {"labels": {"team": "?*"}}})])
    exc = parse_exception(
        {
            "apiVersion": "kyverno.io/v2",
            "kind": "PolicyException",
            "metadata": {"name": "e", "namespace": "kyverno"},
            "spec": {
                "exceptions": [{"policyName": "p", "ruleNames": ["r", "autogen-*"]}],
                "match": {"any": [{"resources": {"kinds": ["Pod"], "names": ["legacy-*"]}}]},
            },
        }
    )
    assert exc.matches(pol, "r", review(pod("legacy-1")))
    assert not exc.matches(pol, "r", review(pod("new-1")))
    assert not exc.matches(pol, "other", review(pod("legacy-1")))
    assert pol.evaluate([review(pod("legacy-1"))], exceptions=[exc]) == []
    with pytest.raises(FormatError, match=r"spec\.exceptions"):
        parse_exception({"apiVersion": "kyverno.io/v2", "kind": "PolicyException", "spec": {"match": {}}})


def test_cel_errors_deny_and_the_namespace_is_known_by_name() -> None:
    rule = {
        "name": "ns",
        "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        "validate": {
            "message": "not in default",
            "cel": {"expressions": [{"expression": "namespaceObject.metadata.name != 'default'"}]},
        },
    }
    pol = policy([rule])
    assert [(r.status, r.message) for r in pol.apply(review(pod(ns="default")))] == [
        ("fail", "not in default")
    ]
    assert [r.status for r in pol.apply(review(pod(ns="apps")))] == ["pass"]
    broken = {
        **rule,
        "validate": {"cel": {"expressions": [{"expression": "object.spec.missing.size() > 0"}]}},
    }
    [res] = policy([broken]).apply(review(pod()))
    assert res.status == "fail" and "CEL evaluation failed" in res.message


def test_context_entries_given_from_outside_are_not_loaded() -> None:
    rule = pattern_rule({"metadata": {"labels": {"team": "{{ teams.data.allowed }}"}}})
    rule["context"] = [{"name": "teams", "configMap": {"name": "teams", "namespace": "kyverno"}}]
    pol = policy([rule])
    obj = pod(labels={"team": "a"})
    results = pol.apply(review(obj), rule_values={"r": {"teams.data.allowed": "a | b"}})
    assert [(r.rule, r.status) for r in results] == [("r", "pass")]


def pss_policy(level: str, exclude: list[dict[str, Any]] | None = None) -> Any:
    return policy(
        [
            {
                "name": "pss",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "validate": {"podSecurity": {"level": level, "version": "latest", "exclude": exclude or []}},
            }
        ]
    )


RESTRICTED_OK = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "c",
            "image": "nginx:1",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
}


@pytest.mark.parametrize(
    ("level", "spec", "status"),
    [
        ("baseline", {}, "pass"),
        ("baseline", {"hostNetwork": True}, "fail"),
        (
            "baseline",
            {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
            "fail",
        ),
        (
            "baseline",
            {
                "containers": [
                    {"name": "c", "image": "x", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}
                ]
            },
            "fail",
        ),
        (
            "baseline",
            {
                "containers": [
                    {"name": "c", "image": "x", "securityContext": {"capabilities": {"add": ["CHOWN"]}}}
                ]
            },
            "pass",
        ),
        ("baseline", {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "fail"),
        (
            "baseline",
            {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}]},
            "fail",
        ),
        ("baseline", {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}, "fail"),
        ("baseline", {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, "fail"),
        ("restricted", {}, "fail"),
        ("restricted", RESTRICTED_OK, "pass"),
        (
            "restricted",
            {**RESTRICTED_OK, "volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]},
            "fail",
        ),
        ("restricted", {**RESTRICTED_OK, "securityContext": {"runAsNonRoot": True}}, "fail"),
    ],
)
def test_pod_security_levels(level: str, spec: dict[str, Any], status: str) -> None:
    obj = pod(**spec) if spec else pod()
    assert statuses(pss_policy(level), obj)["pss"] == status


def test_pod_security_exclusions_by_control_and_image() -> None:
    spec = {
        **RESTRICTED_OK,
        "containers": [
            {**RESTRICTED_OK["containers"][0], "securityContext": {"allowPrivilegeEscalation": False}}
        ],
    }
    pol = pss_policy("restricted", [{"controlName": "Capabilities", "images": ["nginx*"]}])
    assert statuses(pol, pod(**spec))["pss"] == "pass"
    other = pss_policy("restricted", [{"controlName": "Capabilities", "images": ["redis*"]}])
    [res] = [r for r in other.apply(review(pod(**spec))) if r.rule == "pss"]
    assert res.status == "fail" and "Capabilities" in res.message
    pod_level = pss_policy("baseline", [{"controlName": "Host Namespaces"}])
    assert statuses(pod_level, pod(hostNetwork=True))["pss"] == "pass"
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "x"},
        "spec": {"template": {"spec": {"hostPID": True, "containers": [{"name": "c", "image": "x"}]}}},
    }
    assert statuses(pss_policy("baseline"), deploy) == {"autogen-pss": "fail"}
    with pytest.raises(FormatError, match="controlName"):
        pss_policy("baseline", [{"controlName": "Nope"}])


def test_evaluation_leaves_inputs_and_policy_untouched() -> None:
    import copy as _copy

    rule = pattern_rule({"metadata": {"labels": {"team": "{{ request.object.metadata.name }}"}}})
    rule["context"] = [{"name": "x.y", "variable": {"value": {"a": 1}}}]
    pol = policy([rule])
    obj = pod("web", {"team": "web"})
    before_obj, before_rules = _copy.deepcopy(obj), _copy.deepcopy([r.validate for r in pol.rules])
    assert statuses(pol, obj) == {"r": "pass"}
    assert statuses(pol, obj) == {"r": "pass"}
    assert obj == before_obj
    assert [r.validate for r in pol.rules] == before_rules
    with pytest.raises(FormatError, match="reserved"):
        bad = pattern_rule({"metadata": {"name": "?*"}})
        bad["context"] = [{"name": "request.object", "variable": {"value": 1}}]
        policy([bad])


def test_legacy_preconditions_list_and_failure_action_overrides() -> None:
    rule = pattern_rule({"metadata": {"labels": {"team": "?*"}}})
    rule["preconditions"] = [
        {"key": "{{ request.object.metadata.name }}", "operator": "Equals", "value": "web*"}
    ]
    rule["validate"]["failureActionOverrides"] = [{"action": "Audit", "namespaces": ["dev-*"]}]
    pol = policy([rule])
    assert statuses(pol, pod("db")) == {"r": "skip"}
    assert [f.action for f in pol.evaluate([review(pod("web", ns="prod"))])] == ["deny"]
    assert [f.action for f in pol.evaluate([review(pod("web", ns="dev-1"))])] == ["dryrun"]
    warn = parse_policy(
        {
            "apiVersion": "kyverno.io/v1",
            "kind": "ClusterPolicy",
            "metadata": {"name": "w"},
            "spec": {
                "validationFailureAction": "Audit",
                "emitWarning": True,
                "rules": [pattern_rule({"metadata": {"labels": {"team": "?*"}}})],
            },
        }
    )
    assert [f.action for f in warn.evaluate([review(pod())])] == ["warn"]


def test_x509_decode() -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetgate-test")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(42)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    out = search("x509_decode(@)", pem)
    assert out["Subject"]["CommonName"] == "fleetgate-test"
    assert out["SerialNumber"] == 42 and out["NotAfter"] == "2026-01-02T00:00:00Z"
    with pytest.raises(JMESPathError):
        search("x509_decode('not a certificate')", {})


def test_namespace_selector_sees_the_metadata_name_label() -> None:
    pol = match_policy(
        {
            "any": [
                {
                    "resources": {
                        "kinds": ["Pod"],
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prod"}},
                    }
                }
            ]
        }
    )
    assert pol.apply(review(pod(ns="prod"), namespace_object={"metadata": {"name": "prod"}}))
    assert not pol.apply(review(pod(ns="dev"), namespace_object={"metadata": {"name": "dev"}}))
    [finding] = pol.evaluate([review(pod("", ns="prod"), namespace_object={"metadata": {"name": "prod"}})])
    assert finding.details == {"policy": "p", "kind": "ClusterPolicy"}


def test_enforced_rules_allow_existing_violations_on_update() -> None:
    pol = policy([pattern_rule({"metadata": {"labels": {"team": "?*"}}})])
    old_bad, new_bad, good = pod("web"), pod("web", {"x": "1"}), pod("web", {"team": "a"})

    def update(new: dict[str, Any], old: dict[str, Any], p: Any = pol) -> list[str]:
        inp = AdmissionInput("UPDATE", object_id(new, ""), new, old)
        return [r.status for r in p.apply(inp)]

    assert update(new_bad, old_bad) == ["skip"]  # it violated before: not blocked now
    assert update(new_bad, good) == ["fail"]  # a new violation
    strict_rule = pattern_rule({"metadata": {"labels": {"team": "?*"}}})
    strict_rule["validate"]["allowExistingViolations"] = False
    assert update(new_bad, old_bad, policy([strict_rule])) == ["fail"]
    audit = policy([pattern_rule({"metadata": {"labels": {"team": "?*"}}})], action="Audit")
    assert update(new_bad, old_bad, audit) == ["fail"]  # only enforced rules let them pass


def test_validate_cel_with_params() -> None:
    rule = {
        "name": "priority",
        "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        "validate": {
            "cel": {
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "paramRef": {"name": "allowed", "parameterNotFoundAction": "Deny"},
                "variables": [{"name": "cls", "expression": "object.spec.?priorityClassName.orValue('')"}],
                "expressions": [
                    {
                        "expression": "variables.cls in params.data.classes.split(',')",
                        "messageExpression": "'class ' + variables.cls + ' is not allowed'",
                    }
                ],
            }
        },
    }
    pol = policy([rule])
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "allowed", "namespace": "apps"},
        "data": {"classes": "low,high"},
    }
    asked: list[tuple[str, ...]] = []

    def lookup(api_version: str, kind: str, namespace: str, name: str, selector: Any) -> list[Any]:
        asked.append((api_version, kind, namespace, name))
        return [cm] if (kind, namespace, name) == ("ConfigMap", "apps", "allowed") else []

    ok, bad = pod(ns="apps", priorityClassName="low"), pod(ns="apps", priorityClassName="urgent")
    assert pol.evaluate([review(ok)], lookup) == []
    [finding] = pol.evaluate([review(bad)], lookup)
    assert finding.message == "class urgent is not allowed" and not finding.error
    assert asked[0] == ("v1", "ConfigMap", "apps", "allowed")
    [missing] = pol.evaluate([review(pod(ns="other", priorityClassName="low"))], lookup)
    assert missing.error and "no ConfigMap allowed found" in missing.message
    assert pol.evaluate([review(ok)]) != []  # no lookup given: no params, Deny
    with pytest.raises(FormatError, match="paramRef needs exactly one of name and selector"):
        policy([{**rule, "validate": {"cel": {**rule["validate"]["cel"], "paramRef": {}}}}])


def test_policy_exceptions_exempting_pod_security_controls() -> None:
    pol = pss_policy("baseline")

    def exception(pod_security: list[dict[str, Any]] | None) -> Any:
        spec: dict[str, Any] = {
            "exceptions": [{"policyName": "p", "ruleNames": ["pss"]}],
            "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        }
        if pod_security is not None:
            spec["podSecurity"] = pod_security
        return parse_exception(
            {
                "apiVersion": "kyverno.io/v2",
                "kind": "PolicyException",
                "metadata": {"name": "e"},
                "spec": spec,
            }
        )

    host = pod(hostNetwork=True)
    both = pod(hostNetwork=True, volumes=[{"name": "h", "hostPath": {"path": "/"}}])
    only_ns = exception([{"controlName": "Host Namespaces"}])
    assert [r.status for r in pol.apply(review(host), exceptions=[only_ns])] == ["skip"]
    [res] = pol.apply(review(both), exceptions=[only_ns])
    assert res.status == "fail" and "HostPath Volumes" in res.message and "Host Namespaces" not in res.message
    assert [r.status for r in pol.apply(review(both), exceptions=[exception(None)])] == ["skip"]
    assert [r.status for r in pol.apply(review(pod()), exceptions=[only_ns])] == ["pass"]


# ------------------------------------------------------------------------------------------ anyPattern


def any_pattern_rule(patterns: list[Any], message: str = "m {{ request.object.metadata.name }}") -> Any:
    return policy(
        [
            {
                "name": "r",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "validate": {"message": message, "anyPattern": patterns},
            }
        ]
    )


TEAM = {"metadata": {"labels": {"team": "?*"}}}
OWNER = {"metadata": {"labels": {"owner": "?*"}}}


def test_any_pattern_passes_when_one_alternative_matches() -> None:
    pol = any_pattern_rule([TEAM, OWNER])
    [res] = pol.apply(review(pod("web", {"owner": "alice"})))
    assert (res.status, res.message) == ("pass", "validation rule 'r' anyPattern[1] passed.")
    assert pol.evaluate([review(pod("web", {"team": "a"})), review(pod("db", {"owner": "b"}))]) == []


def test_any_pattern_fails_with_every_alternative_named_as_kyverno_words_it() -> None:
    [res] = any_pattern_rule([TEAM, OWNER]).apply(review(pod("web")))
    assert res.status == "fail" and res.action == "deny"
    assert res.message == (
        "validation error: m web. rule r[0] failed at path /metadata/labels/team/ "
        "rule r[1] failed at path /metadata/labels/owner/"
    )
    # a message that ends with a full stop gets no second one; no message: the failures alone
    [dot] = any_pattern_rule([TEAM, OWNER], message="Label a team or an owner.").apply(review(pod("web")))
    assert dot.message.startswith("validation error: Label a team or an owner. rule r[0] failed at path")
    [bare] = any_pattern_rule([TEAM], message="").apply(review(pod("web")))
    assert bare.message == "validation error: rule r[0] failed at path /metadata/labels/team/"
    [finding] = any_pattern_rule([TEAM, OWNER]).evaluate([review(pod("web"))])
    assert (finding.index, finding.rule, finding.action) == (0, "r", "deny")


def test_any_pattern_skips_when_every_alternative_is_skipped_by_its_conditional_anchor() -> None:
    web_only = {"spec": {"containers": [{"(name)": "web", "image": "*:1.*"}]}}
    sidecar_only = {"spec": {"containers": [{"(name)": "sidecar", "image": "proxy:*"}]}}
    pol = any_pattern_rule([web_only, sidecar_only])
    [res] = pol.apply(review(pod("p", containers=[{"name": "db", "image": "postgres:16"}])))
    assert res.status == "skip"
    assert res.message.startswith("rule r[0] skipped: ") and " rule r[1] skipped: " in res.message
    assert pol.evaluate([review(pod("p", containers=[{"name": "db", "image": "postgres:16"}]))]) == []
    # one skipped and one failed alternative: the rule fails, naming only the failure
    [mixed] = pol.apply(review(pod("p", containers=[{"name": "web", "image": "x:2.0"}])))
    assert mixed.status == "fail"
    assert mixed.message == "validation error: m p. rule r[0] failed at path /spec/containers/0/image/"


# --------------------------------------------------------------------------------- mutate-only anchors


@pytest.mark.parametrize(
    ("validate", "where"),
    [
        ({"pattern": {"metadata": {"labels": {"+(team)": "a"}}}}, "validate.pattern.metadata.labels"),
        ({"anyPattern": [TEAM, {"spec": {"+(hostNetwork)": False}}]}, "validate.anyPattern[1].spec"),
        (
            {"foreach": [{"list": "request.object.spec.containers", "pattern": {"+(image)": "*"}}]},
            "validate.foreach[0].pattern",
        ),
    ],
)
def test_the_add_anchor_is_refused_in_validate_patterns_by_name(validate: dict[str, Any], where: str) -> None:
    rule = {"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]}, "validate": validate}
    with pytest.raises(FormatError) as caught:
        policy([rule])
    message = str(caught.value)
    assert where in message
    assert "add if not present) is a mutate anchor; a validate pattern cannot use it" in message


# ------------------------------------------------------------------------------------ Go's regexp (RE2)


def test_regex_functions_and_wildcards_run_in_linear_time_with_go_semantics() -> None:
    """Patterns that backtrack exponentially (or polynomially) in Python's ``re`` complete, with Go's
    answers."""
    text = "a" * 5000 + "!"
    assert search("regex_match('^(a+)+$', s)", {"s": text}) is False
    assert search("regex_replace_all('(a|aa)+$', s, 'x')", {"s": text}) == text
    assert search("regex_replace_all('a(x*)b', '-ab-axxb-', '${1}W')", {}) == "-W-xxW-"
    assert search("regex_replace_all('a*', 'baaac', 'X')", {}) == "XbXcX"  # Go: no empty match after a match
    assert search("pattern_match('*a*a*a*a*a*a*a*a*b', s)", {"s": text}) is False
    assert match_pattern({"s": text}, {"s": "*a*a*a*a*a*a*a*a*b"}).ok is False
    with pytest.raises(JMESPathError) as caught:
        search("regex_match('(a)\\1', 'aa')", {})
    assert "error parsing regexp: invalid escape sequence: `\\1`" in str(caught.value)
