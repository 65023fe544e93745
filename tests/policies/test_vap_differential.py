"""Differential test: the gate's ValidatingAdmissionPolicy evaluator against the real kube-apiserver.

Each case's policy and binding (validationActions [Deny]) are created on the API server of the test
suite; the same object is then sent through the official client (dry-run create / update / delete) and
the API server's answer (allowed, or denied with its message) is compared with what
policies.formats.vap answers for the same policy, binding, object, old object, namespace and params.
Every case's policy only matches objects labelled with its own ``vap-case`` value, so the cases do not
see each other. The API server enforces a new binding a moment after it is created, so each policy is
polled with a probe object (a validation every case policy carries) until it is enforced.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from policies.formats.admission import AdmissionInput
from policies.formats.cel import CelError, compile_expression
from policies.formats.kube import LabelSelector, object_id
from policies.formats.vap import compile, parse_binding, parse_policy
from tests.kube_backends import KubeApiServer, kube_apiserver, kube_apiserver_bin_dir  # noqa: F401
from tests.policies.test_cel_library import FUNCTION_RESULTS

pytestmark = pytest.mark.kube_apiserver

PROBE = {"expression": "!object.metadata.name.startsWith('fg-probe')", "message": "probe"}
CM_RULE = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}


@dataclass
class Case:
    id: str
    validations: list[dict[str, Any]]
    data: dict[str, str]
    operation: str = "CREATE"
    old_data: dict[str, str] | None = None
    name: str = ""  # default: s-<id>
    namespace: str = "prod"  # prod (labelled env=prod) or dev
    policy: dict[str, Any] = field(default_factory=dict)  # extra spec fields
    binding: dict[str, Any] = field(default_factory=dict)  # extra spec fields
    rules: list[dict[str, Any]] | None = None
    kind: str = "ConfigMap"


def _rule(*ops: str) -> list[dict[str, Any]]:
    return [{**CM_RULE, "operations": list(ops)}]


PARAMS = {"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}}
REPLICAS = [{"expression": "int(object.data.replicas) <= 5"}]
CASES = [
    Case("replicas-ok", REPLICAS, {"replicas": "3"}),
    Case("replicas-deny", REPLICAS, {"replicas": "7"}),
    Case(
        "message",
        [{"expression": "int(object.data.replicas) <= 5", "message": "at most five"}],
        {"replicas": "9"},
    ),
    Case(
        "message-expression",
        [
            {
                "expression": "int(object.data.replicas) <= 5",
                "messageExpression": "'replicas ' + object.data.replicas + ' > 5'",
            }
        ],
        {"replicas": "9"},
    ),
    Case(
        "format",
        [
            {
                "expression": "size(object.data) < 2",
                "messageExpression": "'%s has %d keys'.format([object.metadata.name, size(object.data)])",
            }
        ],
        {"a": "1", "b": "2"},
    ),
    Case(
        "variables",
        [{"expression": "variables.total < 10", "messageExpression": "'total ' + string(variables.total)"}],
        {"a": "4", "b": "7"},
        policy={"variables": [{"name": "total", "expression": "int(object.data.a) + int(object.data.b)"}]},
    ),
    Case(
        "optional-missing",
        [{"expression": "object.?data.?team.orValue('') != ''", "message": "team required"}],
        {"x": "1"},
    ),
    Case(
        "optional-present",
        [{"expression": "object.?data.?team.orValue('') != ''", "message": "team required"}],
        {"team": "a"},
    ),
    Case(
        "quantity-deny",
        [{"expression": "quantity(object.data.mem).compareTo(quantity('1Gi')) <= 0"}],
        {"mem": "2Gi"},
    ),
    Case(
        "quantity-ok",
        [{"expression": "quantity(object.data.mem).isLessThan(quantity('1Gi'))"}],
        {"mem": "512Mi"},
    ),
    Case(
        "quantity-add",
        [{"expression": "quantity(object.data.a).add(quantity(object.data.b)).asInteger() <= 1000"}],
        {"a": "600", "b": "0.5k"},
    ),
    Case("regex-matches", [{"expression": "object.metadata.name.matches('^team-[a-z]+-')"}], {"x": "1"}),
    Case(
        "regex-find",
        [{"expression": "object.data.image.find('[0-9]+[.][0-9]+') != ''"}],
        {"image": "app:latest"},
    ),
    Case("regex-find-all", [{"expression": "object.data.s.findAll('[0-9]').size() == 2"}], {"s": "a1b2c3"}),
    Case(
        "url",
        [{"expression": "url(object.data.endpoint).getScheme() == 'https'", "message": "https only"}],
        {"endpoint": "http://x.example.com/"},
    ),
    Case(
        "url-host",
        [{"expression": "url(object.data.endpoint).getHostname().endsWith('.example.com')"}],
        {"endpoint": "https://a.example.com:8443/p"},
    ),
    Case("cidr", [{"expression": "cidr('10.0.0.0/8').containsIP(object.data.ip)"}], {"ip": "192.168.1.1"}),
    Case("ip-family", [{"expression": "ip(object.data.ip).family() == 4"}], {"ip": "2001:db8::1"}),
    Case(
        "lists",
        [{"expression": "object.data.ports.split(',').map(p, int(p)).isSorted()"}],
        {"ports": "80,443,8080"},
    ),
    Case(
        "lists-sum",
        [{"expression": "object.data.ports.split(',').map(p, int(p)).sum() < 1000"}],
        {"ports": "80,443,8080"},
    ),
    Case(
        "strings", [{"expression": "object.data.owner.lowerAscii() == object.data.owner"}], {"owner": "Alice"}
    ),
    Case("ns-selector-match", REPLICAS, {"replicas": "9"}, policy={"ns": {"matchLabels": {"env": "prod"}}}),
    Case(
        "ns-selector-miss",
        REPLICAS,
        {"replicas": "9"},
        namespace="dev",
        policy={"ns": {"matchLabels": {"env": "prod"}}},
    ),
    Case(
        "namespace-object", [{"expression": "namespaceObject.metadata.labels['env'] != 'prod'"}], {"x": "1"}
    ),
    Case(
        "match-condition-off",
        REPLICAS,
        {"replicas": "9", "enforce": "false"},
        policy={
            "matchConditions": [
                {"name": "opt-in", "expression": "object.data.?enforce.orValue('') == 'true'"}
            ]
        },
    ),
    Case(
        "match-condition-on",
        REPLICAS,
        {"replicas": "9", "enforce": "true"},
        policy={
            "matchConditions": [
                {"name": "opt-in", "expression": "object.data.?enforce.orValue('') == 'true'"}
            ]
        },
    ),
    Case(
        "params-ok",
        [
            {
                "expression": "int(object.data.replicas) <= int(params.data.max)",
                "messageExpression": "'max is ' + params.data.max",
            }
        ],
        {"replicas": "2"},
        policy=PARAMS,
        binding={"paramRef": {"name": "limits", "parameterNotFoundAction": "Deny"}},
    ),
    Case(
        "params-deny",
        [
            {
                "expression": "int(object.data.replicas) <= int(params.data.max)",
                "messageExpression": "'max is ' + params.data.max",
            }
        ],
        {"replicas": "4"},
        policy=PARAMS,
        binding={"paramRef": {"name": "limits", "parameterNotFoundAction": "Deny"}},
    ),
    Case(
        "params-selector",
        [
            {
                "expression": "int(object.data.replicas) <= int(params.data.max)",
                "messageExpression": "'max is ' + params.data.max",
            }
        ],
        {"replicas": "4"},
        policy=PARAMS,
        binding={
            "paramRef": {"selector": {"matchLabels": {"role": "limits"}}, "parameterNotFoundAction": "Deny"}
        },
    ),
    Case(
        "params-not-found-deny",
        [{"expression": "true"}],
        {"x": "1"},
        policy=PARAMS,
        binding={"paramRef": {"name": "missing", "parameterNotFoundAction": "Deny"}},
    ),
    Case(
        "params-not-found-allow",
        [{"expression": "false"}],
        {"x": "1"},
        policy=PARAMS,
        binding={"paramRef": {"name": "missing", "parameterNotFoundAction": "Allow"}},
    ),
    Case(
        "update-scale-down",
        [
            {
                "expression": "int(object.data.replicas) >= int(oldObject.data.replicas)",
                "message": "no scale down",
            }
        ],
        {"replicas": "2"},
        operation="UPDATE",
        old_data={"replicas": "3"},
        rules=_rule("UPDATE"),
    ),
    Case(
        "update-scale-up",
        [
            {
                "expression": "int(object.data.replicas) >= int(oldObject.data.replicas)",
                "message": "no scale down",
            }
        ],
        {"replicas": "4"},
        operation="UPDATE",
        old_data={"replicas": "3"},
        rules=_rule("UPDATE"),
    ),
    Case(
        "delete-protected",
        [
            {
                "expression": "object == null && oldObject.data.?protected.orValue('') != 'true'",
                "message": "protected",
            }
        ],
        {},
        operation="DELETE",
        old_data={"protected": "true"},
        rules=_rule("DELETE"),
    ),
    Case("fail-on-error", [{"expression": "object.data.nothere == 'x'"}], {"x": "1"}),
    Case(
        "ignore-on-error",
        [{"expression": "object.data.nothere == 'x'"}],
        {"x": "1"},
        policy={"failurePolicy": "Ignore"},
    ),
    Case(
        "request",
        [
            {
                "expression": "request.operation == 'CREATE' && request.resource.resource == 'configmaps' "
                "&& request.name == 'other'"
            }
        ],
        {"x": "1"},
    ),
    Case("reason-forbidden", [{"expression": "false", "message": "nope", "reason": "Forbidden"}], {"x": "1"}),
    Case(
        "exclude-by-name",
        [{"expression": "false"}],
        {"x": "1"},
        policy={"excludeResourceRules": [{**CM_RULE, "resourceNames": ["s-exclude-by-name"]}]},
    ),
    Case(
        "audit-annotation-error",
        [{"expression": "true"}],
        {"x": "1"},
        policy={"auditAnnotations": [{"key": "k", "valueExpression": "string(object.data.nothere)"}]},
    ),
    Case(
        "message-multiline",
        [{"expression": "false", "message": "static", "messageExpression": "'line one\\nline two'"}],
        {"x": "1"},
    ),
    Case(
        "variables-chain",
        [
            {
                "expression": "variables.doubled < 10",
                "messageExpression": "'doubled ' + string(variables.doubled)",
            }
        ],
        {"n": "6"},
        policy={
            "variables": [
                {"name": "n", "expression": "int(object.data.n)"},
                {"name": "doubled", "expression": "variables.n * 2"},
            ]
        },
    ),
    Case(
        "int-or-string",
        [{"expression": "type(object.data.v) == string ? object.data.v == '100%' : false"}],
        {"v": "50%"},
    ),
    Case(
        "deployment-replicas",
        [
            {
                "expression": "object.spec.replicas <= 2",
                "messageExpression": "'replicas: ' + string(object.spec.replicas)",
            }
        ],
        {},
        kind="Deployment",
        rules=[
            {
                "apiGroups": ["apps"],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["deployments"],
            }
        ],
    ),
]


def _subject(case: Case, namespace: str, data: Mapping[str, str], name: str | None = None) -> dict[str, Any]:
    meta = {
        "name": name or case.name or f"s-{case.id}",
        "namespace": namespace,
        "labels": {"vap-case": case.id},
    }
    if case.kind == "Deployment":
        labels = {"app": "web"}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                },
            },
        }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}


def _documents(case: Case, suffix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    extra = dict(case.policy)
    ns_selector = extra.pop("ns", None)
    exclude = extra.pop("excludeResourceRules", None)
    constraints: dict[str, Any] = {
        "resourceRules": case.rules or _rule("CREATE"),
        "objectSelector": {"matchLabels": {"vap-case": case.id}},
    }
    if ns_selector:
        constraints["namespaceSelector"] = ns_selector
    if exclude:
        constraints["excludeResourceRules"] = exclude
    name = f"fg-vapdiff-{case.id}-{suffix}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"matchConstraints": constraints, "validations": [*case.validations, PROBE], **extra},
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], **case.binding},
    }
    return policy, binding


def _denial(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message", ""))
    except (ValueError, TypeError):
        return str(exc.body)


@pytest.fixture
def namespaces(kube_apiserver: KubeApiServer) -> Iterator[dict[str, str]]:  # noqa: F811
    suffix = secrets.token_hex(3)
    names = {"prod": f"fg-vap-prod-{suffix}", "dev": f"fg-vap-dev-{suffix}"}
    with kube_apiserver.api_client() as api:
        core = k8s.CoreV1Api(api)
        for env, name in names.items():
            core.create_namespace({"metadata": {"name": name, "labels": {"env": env}}})
        try:
            yield names
        finally:
            for name in names.values():
                core.delete_namespace(name)


def test_the_evaluator_answers_as_the_api_server_does(
    kube_apiserver: KubeApiServer,  # noqa: F811 - the fixture imported above
    namespaces: dict[str, str],
) -> None:
    assert len(CASES) >= 25
    suffix = secrets.token_hex(3)
    with kube_apiserver.api_client() as api:
        core, apps, reg = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.AdmissionregistrationV1Api(api)
        for ns in namespaces.values():
            core.create_namespaced_config_map(
                ns, {"metadata": {"name": "limits", "labels": {"role": "limits"}}, "data": {"max": "3"}}
            )
        documents = {case.id: _documents(case, suffix) for case in CASES}
        created: list[tuple[str, str]] = []
        # old objects first (the case policies only match the operation under test)
        for case in CASES:
            if case.old_data is not None:
                core.create_namespaced_config_map(
                    namespaces[case.namespace], _subject(case, namespaces[case.namespace], case.old_data)
                )
        try:
            for policy, binding in documents.values():
                reg.create_validating_admission_policy(policy)
                created.append(("policy", policy["metadata"]["name"]))
                reg.create_validating_admission_policy_binding(binding)
                created.append(("binding", binding["metadata"]["name"]))

            def send(case: Case, obj: dict[str, Any]) -> str | None:
                ns = obj["metadata"]["namespace"]
                try:
                    if case.kind == "Deployment":
                        apps.create_namespaced_deployment(ns, obj, dry_run="All")
                    elif case.operation == "CREATE":
                        core.create_namespaced_config_map(ns, obj, dry_run="All")
                    elif case.operation == "UPDATE":
                        core.replace_namespaced_config_map(obj["metadata"]["name"], ns, obj, dry_run="All")
                    else:
                        core.delete_namespaced_config_map(obj["metadata"]["name"], ns, dry_run="All")
                except ApiException as exc:
                    if exc.status not in (400, 403, 422):
                        raise
                    return _denial(exc)
                return None

            # enforced yet? a probe named fg-probe-* is denied by every case policy once it is loaded
            deadline = time.monotonic() + 60
            # (in the prod namespace, opted in; a binding that allows missing params cannot be probed)
            pending = [c for c in CASES if c.operation == "CREATE" and "missing" not in json.dumps(c.binding)]
            while pending and time.monotonic() < deadline:
                pending = [
                    c
                    for c in pending
                    if send(
                        c, _subject(c, namespaces["prod"], {**c.data, "enforce": "true"}, name="fg-probe-x")
                    )
                    is None
                ]
                if pending:
                    time.sleep(0.2)
            assert not pending, f"policies never enforced: {[c.id for c in pending]}"

            def lookup(
                api_version: str, kind: str, namespace: str, name: str, selector: Mapping[str, Any] | None
            ) -> list[dict[str, Any]]:
                assert (api_version, kind) == ("v1", "ConfigMap")
                items = api.sanitize_for_serialization(core.list_namespaced_config_map(namespace).items)
                chosen = LabelSelector.parse(selector, "selector") if selector is not None else None
                return [
                    {"apiVersion": "v1", "kind": "ConfigMap", **i}
                    for i in items
                    if (not name or i["metadata"]["name"] == name)
                    and (chosen is None or chosen.matches(i["metadata"].get("labels") or {}))
                ]

            results = []
            for case in CASES:
                ns = namespaces[case.namespace]
                ns_obj = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    **api.sanitize_for_serialization(core.read_namespace(ns)),
                }
                old = None
                if case.old_data is not None:
                    live = core.read_namespaced_config_map(f"s-{case.id}", ns)
                    old = {"apiVersion": "v1", "kind": "ConfigMap", **api.sanitize_for_serialization(live)}
                obj: dict[str, Any] | None = _subject(case, ns, case.data)
                if case.operation == "UPDATE":
                    assert old is not None and obj is not None
                    obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
                if case.operation == "DELETE":
                    obj = None
                server = send(
                    case, obj if obj is not None else {"metadata": {"name": f"s-{case.id}", "namespace": ns}}
                )
                subject = obj if obj is not None else old
                assert subject is not None
                item = AdmissionInput(
                    operation=case.operation,
                    id=object_id(subject),
                    object=obj,
                    old_object=old,
                    namespace_object=ns_obj,
                    user_info={
                        "username": "fleetgate-test",
                        "groups": ["system:masters", "system:authenticated"],
                    },
                )
                policy, binding = documents[case.id]
                findings = compile(parse_policy(policy), parse_binding(binding)).evaluate([item], lookup)
                results.append((case.id, server, findings))
        finally:
            for what, name in reversed(created):
                if what == "binding":
                    reg.delete_validating_admission_policy_binding(name)
                else:
                    reg.delete_validating_admission_policy(name)
    disagreements = []
    for case_id, server, findings in results:
        ours_denied = any(f.action == "deny" or f.error for f in findings)
        if ours_denied != (server is not None):
            disagreements.append(
                (case_id, "allowed" if server is None else f"denied: {server}", [f.message for f in findings])
            )
        elif server is not None and not any(f.message in server for f in findings):
            disagreements.append((case_id, server, [f.message for f in findings]))
    assert disagreements == [], json.dumps(disagreements, indent=1)
    # both answers are exercised: the table holds allowed and denied cases
    denied = [case_id for case_id, server, _ in results if server is not None]
    assert 20 <= len(denied) < len(results)


def _cel_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_cel_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_cel_literal(k)}: {_cel_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _server_answers(
    kube_apiserver: KubeApiServer,  # noqa: F811 - the fixture imported above
    namespace: str,
    cases: list[Case],
) -> tuple[list[str], dict[str, str | None]]:
    """Each case's policy created on the API server (one per case), then its subject sent (dry-run
    create): the policies the server refused (with its message) and each other case's answer (None:
    allowed, else the denial's message)."""
    suffix = secrets.token_hex(3)
    refused: list[str] = []
    answers: dict[str, str | None] = {}
    created: list[tuple[str, str]] = []
    with kube_apiserver.api_client() as api:
        core, reg = k8s.CoreV1Api(api), k8s.AdmissionregistrationV1Api(api)

        def denial(case: Case, name: str) -> str | None:
            obj = _subject(case, namespace, case.data, name=name)
            try:
                core.create_namespaced_config_map(namespace, obj, dry_run="All")
            except ApiException as exc:
                if exc.status not in (400, 403, 422):
                    raise
                return _denial(exc)
            return None

        try:
            enforced = []
            for case in cases:
                policy, binding = _documents(case, suffix)
                try:
                    reg.create_validating_admission_policy(policy)
                except ApiException as exc:
                    refused.append(f"{case.validations}: {_denial(exc)}")
                    continue
                created.append(("policy", policy["metadata"]["name"]))
                reg.create_validating_admission_policy_binding(binding)
                created.append(("binding", binding["metadata"]["name"]))
                enforced.append(case)
            deadline = time.monotonic() + 60
            pending = list(enforced)
            while pending and time.monotonic() < deadline:
                pending = [c for c in pending if denial(c, "fg-probe-x") is None]
            assert not pending, "policies never enforced"
            for case in enforced:
                answers[case.id] = denial(case, f"s-{case.id}")
        finally:
            for what, name in reversed(created):
                if what == "binding":
                    reg.delete_validating_admission_policy_binding(name)
                else:
                    reg.delete_validating_admission_policy(name)
    return refused, answers


def test_the_cel_libraries_answer_as_the_api_server_does(
    kube_apiserver: KubeApiServer,  # noqa: F811 - the fixture imported above
    namespaces: dict[str, str],
) -> None:
    """Every library result of tests/policies/test_cel_library.py that needs no object, as ``(expr) ==
    expected``: true in the gate, and true on the API server too (one policy per check, each denies an
    object of its own when the check is false or fails there; an unknown function refuses the policy)."""
    checks = [
        f"({source}) == {_cel_literal(expected)}"
        for source, expected in FUNCTION_RESULTS
        if "object" not in source
    ]
    assert len(checks) >= 50
    for check in checks:
        assert compile_expression(check, ["object"]).evaluate({"object": {}}) is True, check
    cases = [
        Case(f"lib-{i}", [{"expression": c, "message": "false"}], {"x": "1"}) for i, c in enumerate(checks)
    ]
    refused, answers = _server_answers(kube_apiserver, namespaces["prod"], cases)
    assert refused == []
    assert {c.validations[0]["expression"]: answers[c.id] for c in cases if answers[c.id] is not None} == {}


RUNTIME_ERRORS = [
    "object.data.missing == 'x'",
    "quantity('ten').isInteger()",
    "quantity('1.5').asInteger() == 2",
    "url('example.com').getScheme() == ''",
    "ip('::ffff:1.2.3.4').family() == 4",
    "cidr('10.0.0.0').prefixLength() == 8",
    "[1, 2][5] == 1",
    "int(object.data.x) / 0 == 1",
    "int(object.data.x + 'ten') == 10",
    "'abc'.substring(2, 1) == ''",
    "'abc'.charAt(5) == ''",
    "dyn([]).max() == 1",
    "'%d'.format([dyn(3.0)]) == ''",
    "'%f'.format([dyn(1)]) == ''",
    "'abc'.find(object.data.x + '(') == ''",
    "'aa'.find(object.data.x + '(a)\\\\1') == ''",
]


def test_runtime_errors_read_as_the_api_server_words_them(
    kube_apiserver: KubeApiServer,  # noqa: F811 - the fixture imported above
    namespaces: dict[str, str],
) -> None:
    """An expression that fails: the API server denies (failurePolicy Fail) with "expression '…'
    resulted in error: <cel-go's message>"; the gate's finding is an error with the same text."""
    cases = [Case(f"err-{i}", [{"expression": e}], {"x": "1"}) for i, e in enumerate(RUNTIME_ERRORS)]
    refused, answers = _server_answers(kube_apiserver, namespaces["prod"], cases)
    assert refused == []
    ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespaces["prod"]}}
    mismatches = []
    for case in cases:
        policy, binding = _documents(case, "x")
        subject = _subject(case, namespaces["prod"], case.data)
        item = AdmissionInput("CREATE", object_id(subject), subject, None, ns_obj)
        findings = compile(parse_policy(policy), parse_binding(binding)).evaluate([item])
        ours = [f.message for f in findings if f.error]
        server = answers[case.id]
        if not ours or server is None or ours[0] not in server:
            mismatches.append((case.validations[0]["expression"], server, ours))
    assert mismatches == [], json.dumps(mismatches, indent=1, ensure_ascii=False)


#: Patterns Go's regexp (RE2) refuses, as literals: the API server refuses the policy when it is created.
REFUSED_PATTERNS = [
    r"object.data.x.find('(a)\\1') == ''",
    "object.data.x.matches('^(?=a)')",
    "object.data.x.findAll('x(?<!y)').size() == 0",
    "object.data.x.find('(?!a)b') == ''",
    "object.data.x.findAll(r'[a').size() == 0",
]


def test_patterns_go_refuses_are_refused_when_saved_as_the_api_server_does(
    kube_apiserver: KubeApiServer,  # noqa: F811 - the fixture imported above
    namespaces: dict[str, str],
) -> None:
    """Backreferences and look-around are not RE2: the API server refuses a policy whose literal pattern
    uses them, naming Go's parse error; the gate refuses the expression with the same words. A pattern that
    backtracks exponentially in Python's ``re`` answers as on the API server (allowed: nothing found)."""
    cases = [Case(f"re-{i}", [{"expression": e}], {"x": "aa"}) for i, e in enumerate(REFUSED_PATTERNS)]
    linear = Case("re-linear", [{"expression": "object.data.x.find('^(a+)+$') == ''"}], {"x": "a" * 64 + "!"})
    refused, answers = _server_answers(kube_apiserver, namespaces["prod"], [*cases, linear])
    assert answers == {"re-linear": None}
    assert len(refused) == len(cases)
    mismatches = []
    for expression, server in zip(REFUSED_PATTERNS, refused, strict=True):
        with pytest.raises(CelError) as caught:
            compile_expression(expression, ["object"])
        if caught.value.reason not in server:
            mismatches.append((expression, server, caught.value.reason))
    assert mismatches == [], json.dumps(mismatches, indent=1)
    policy, binding = _documents(linear, "x")
    subject = _subject(linear, namespaces["prod"], linear.data)
    ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespaces["prod"]}}
    item = AdmissionInput("CREATE", object_id(subject), subject, None, ns_obj)
    assert compile(parse_policy(policy), parse_binding(binding)).evaluate([item]) == []
