"""Parsing of Gatekeeper and conftest policies, Constraint match, inventory, and the Rego source helpers.

Pure Python: no engine runs here (the engines are exercised in test_policy_engines/gate/differential).
"""

from __future__ import annotations

import pytest

from policies.engine import Module
from policies.engine.source import (
    detect_rego_version,
    namespace_source,
    normalise_for_engine,
    package_of,
    rule_heads,
    split_multi_body_rules,
)
from policies.formats import FormatError
from policies.formats import conftest as conftest_fmt
from policies.formats.gatekeeper import (
    parse_constraint,
    parse_constraint_template,
    parse_match,
    validate_parameters,
)
from policies.formats.kube import build_inventory, object_id
from tests.policies import corpus

# --------------------------------------------------------------------------------------------- templates


def test_template_with_rego_and_libs_is_parsed() -> None:
    tpl = parse_constraint_template(corpus.privileged_template())
    assert tpl.kind == "FgNoPrivileged"
    assert tpl.package == "fgnoprivileged"
    assert len(tpl.libs) == 1 and "package lib.fgcontainers" in tpl.libs[0]
    policy_set = tpl.policy_set()
    assert [m.path for m in policy_set.modules] == [
        "fgnoprivileged/template.rego",
        "fgnoprivileged/lib0.rego",
    ]
    assert policy_set.entrypoints == {"violations": "[v | some v; data.fgnoprivileged.violation[v]]"}


def test_template_with_code_block_and_version_is_parsed() -> None:
    tpl = parse_constraint_template(corpus.limits_template())
    assert tpl.kind == "FgContainerLimits"
    assert tpl.rego_version == "v1"
    assert all(m.rego_version == "v1" for m in tpl.modules())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: ConstraintTemplate\nspec: {}\n", "spec.crd.spec.names.kind"),
        (
            "kind: ConstraintTemplate\nspec:\n  crd: {spec: {names: {kind: X}}}\n  targets: []\n",
            "spec.targets",
        ),
        (
            "kind: ConstraintTemplate\nspec:\n  crd: {spec: {names: {kind: X}}}\n  targets: [{target: t}]\n",
            "rego",
        ),
        ("kind: ConstraintTemplate\nspec: [unclosed\n", "invalid YAML at line"),
        ("kind: Deployment\n", "expected ConstraintTemplate"),
    ],
)
def test_malformed_template_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_constraint_template(text)


def test_constraint_defaults_and_errors() -> None:
    con = parse_constraint("kind: FgRequiredLabels\nmetadata: {name: x}\n")
    assert (con.parameters, con.enforcement_action, con.name) == ({}, "deny", "x")
    assert parse_constraint(corpus.LIMITS_CONSTRAINT).enforcement_action == "warn"
    with pytest.raises(FormatError, match="enforcementAction"):
        parse_constraint("kind: K\nspec: {enforcementAction: block}\n")
    with pytest.raises(FormatError, match="operator"):
        parse_constraint(
            "kind: K\nspec: {match: {labelSelector: {matchExpressions: [{key: a, operator: Is}]}}}\n"
        )


def test_constraint_parameters_are_checked_against_the_template_schema() -> None:
    tpl = parse_constraint_template(corpus.REQUIRED_LABELS_TEMPLATE)
    validate_parameters(tpl, parse_constraint(corpus.REQUIRED_LABELS_CONSTRAINT))
    wrong = parse_constraint(
        "kind: FgRequiredLabels\nmetadata: {name: bad}\nspec:\n  parameters: {labels: [1, team]}\n"
    )
    with pytest.raises(
        FormatError, match=r"Constraint bad: spec.parameters.labels.0: 1 is not of type 'string'"
    ):
        validate_parameters(tpl, wrong)


# --------------------------------------------------------------------------------------------- match


def _matches(match_yaml: dict, obj: dict, namespaces: dict | None = None) -> bool:
    match = parse_match(match_yaml)
    return match.matches(obj, object_id(obj), namespaces or {})


def test_match_kinds_by_group_and_kind() -> None:
    dep, pod = corpus.deployment("web"), corpus.pod("p")
    spec = {"kinds": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}]}
    assert _matches(spec, dep) and not _matches(spec, pod)
    assert _matches({"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}, pod)
    assert not _matches({"kinds": [{"apiGroups": [""], "kinds": ["Deployment"]}]}, dep)
    assert _matches({"kinds": [{"apiGroups": ["*"], "kinds": ["*"]}]}, dep)
    assert _matches({}, dep)


def test_match_namespaces_excluded_namespaces_and_globs() -> None:
    dep = corpus.deployment("web", ns="team-a")
    assert _matches({"namespaces": ["team-*"]}, dep)
    assert not _matches({"namespaces": ["apps"]}, dep)
    assert not _matches({"excludedNamespaces": ["team-*"]}, dep)
    assert _matches({"excludedNamespaces": ["kube-system"]}, dep)
    cluster_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "r"},
    }
    assert _matches({"namespaces": ["apps"]}, cluster_role)  # namespace criteria skip cluster-scoped objects
    assert _matches({"namespaces": ["apps"]}, corpus.namespace("apps"))  # a Namespace matches by its name
    assert not _matches({"scope": "Cluster"}, dep) and _matches({"scope": "Namespaced"}, dep)


def test_match_label_selector_with_expressions() -> None:
    dep = corpus.deployment("web", labels={"team": "web", "tier": "frontend"})
    assert _matches({"labelSelector": {"matchLabels": {"team": "web"}}}, dep)
    assert not _matches({"labelSelector": {"matchLabels": {"team": "db"}}}, dep)
    exprs = [
        {"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
        {"key": "legacy", "operator": "DoesNotExist"},
    ]
    assert _matches({"labelSelector": {"matchExpressions": exprs}}, dep)
    assert not _matches(
        {
            "labelSelector": {
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["frontend"]}]
            }
        },
        dep,
    )
    assert not _matches(
        {"labelSelector": {"matchExpressions": [{"key": "owner", "operator": "Exists"}]}}, dep
    )


def test_match_namespace_selector_uses_rendered_namespaces() -> None:
    dep = corpus.deployment("web", ns="apps")
    spec = {"namespaceSelector": {"matchLabels": {"limits": "required"}}}
    assert _matches(spec, dep, {"apps": {"limits": "required"}})
    assert not _matches(spec, dep, {"apps": {}})
    assert not _matches(spec, dep, {})  # the namespace was not rendered: no match


def test_match_name_glob() -> None:
    assert _matches({"name": "web-*"}, corpus.deployment("web-1"))
    assert not _matches({"name": "web-*"}, corpus.deployment("api"))


def test_inventory_layout() -> None:
    objs = [corpus.deployment("web"), corpus.namespace("apps"), corpus.ingress("a", "x.example")]
    inv = build_inventory(objs)
    assert inv["namespace"]["apps"]["apps/v1"]["Deployment"]["web"]["kind"] == "Deployment"
    assert (
        inv["namespace"]["apps"]["networking.k8s.io/v1"]["Ingress"]["a"]["spec"]["rules"][0]["host"]
        == "x.example"
    )
    assert inv["cluster"]["v1"]["Namespace"]["apps"]["metadata"]["name"] == "apps"


# --------------------------------------------------------------------------------------------- conftest


def test_conftest_rules_are_discovered_per_namespace() -> None:
    policy = conftest_fmt.ConftestPolicy(
        (Module("a.rego", corpus.RUN_AS_ROOT), Module("b.rego", corpus.NO_LATEST))
    )
    assert policy.rules() == {"main": ["deny_run_as_root", "warn", "exception", "deny_latest"]}
    other = conftest_fmt.ConftestPolicy((Module("r.rego", corpus.PROD_REPLICAS),))
    assert other.rules() == {}  # not in the default namespace
    assert conftest_fmt.ConftestPolicy(
        (Module("r.rego", corpus.PROD_REPLICAS),), all_namespaces=True
    ).rules() == {"fleetgate.replicas": ["deny"]}


def test_conftest_findings_messages_levels_and_exceptions() -> None:
    value = {
        "main": {
            "deny_run_as_root": [["root!"]],
            "deny": [[{"msg": "structured", "severity": "high"}]],
            "warn": [["careful"]],
            "warn_style": [{"keyed": True}],
            "exception": [[["run_as_root"]]],
        }
    }
    found = {(f.rule, f.level, f.message) for f in conftest_fmt.findings(value)}
    assert found == {
        ("deny", "failure", "structured"),
        ("warn", "warning", "careful"),
        ("warn_style", "warning", "keyed"),
    }
    structured = next(f for f in conftest_fmt.findings(value) if f.rule == "deny")
    assert structured.details == {"severity": "high"}


# --------------------------------------------------------------------------------------------- source


def test_rego_version_detection() -> None:
    assert detect_rego_version(corpus.RUN_AS_ROOT) == "v0"
    assert detect_rego_version(corpus.NO_LATEST) == "v1"
    assert detect_rego_version(corpus.PROD_REPLICAS) == "v1"
    assert detect_rego_version("package a\n\nimport future.keywords.if\n\nx if { true }\n") == "v0"
    assert detect_rego_version('package a\n\nx { contains(input.s, "if") }\n') == "v0"


def test_normalise_adds_rego_v1_import_on_the_package_line() -> None:
    out = normalise_for_engine(Module("a.rego", corpus.NO_LATEST))
    assert out.splitlines()[0] == "package main import rego.v1"
    assert out.count("\n") == corpus.NO_LATEST.count("\n")
    assert normalise_for_engine(Module("b.rego", corpus.RUN_AS_ROOT)) == corpus.RUN_AS_ROOT


def test_namespace_source_moves_package_and_data_refs_only() -> None:
    src = 'package p # data.x\n\nimport data.lib.a\n\nx := data.inventory {\n  input.data == "data.y"\n}\n'
    out = namespace_source(src, "ns.s1")
    assert out == (
        "package ns.s1.p # data.x\n\nimport data.ns.s1.lib.a\n\nx := data.ns.s1.inventory {\n"
        '  input.data == "data.y"\n}\n'
    )
    assert package_of(out) == "ns.s1.p"


def test_rule_heads_skip_bodies_and_keywords() -> None:
    src = (
        "package a\n\nimport rego.v1\n\ndefault allow := false\n\nallow if {\n  x := 1\n  y\n}\n\nf(x) := x\n"
    )
    assert rule_heads(src) == ["allow", "f"]


def test_split_multi_body_rules_repeats_the_head_on_the_same_line() -> None:
    src = "package a\n\np[x] {\n  x := 1\n} {\n  x := 2\n}\n\nq = 1 { input.a } else = 2 { true }\n"
    out = split_multi_body_rules(src)
    assert (
        out == "package a\n\np[x] {\n  x := 1\n} p[x] {\n  x := 2\n}\n\nq = 1 { input.a } else = 2 { true }\n"
    )
    assert split_multi_body_rules(corpus.RUN_AS_ROOT) == corpus.RUN_AS_ROOT
