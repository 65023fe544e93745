"""conftest as conftest does (issue 16): exceptions are counted, ``combine`` gives one entry per document,
tests are counted per rule definition, and both engines accept OPA's comprehension scoping. Fixtures are our
own, in the shapes of conftest's examples (tools/conformance/conftest_examples.py runs the real ones)."""

from __future__ import annotations

import pytest

from policies.engine import RegoEngine
from policies.engine.base import Module
from policies.engine.comprehension_scopes import rename_shadowing_locals
from policies.formats import conftest as conftest_fmt
from policies.gate import BoundPolicy, Outcome, RenderedObject, evaluate_target
from policies.services.checking import parse_manifests
from policies.services.evaluation import summary_line

DEPLOYMENTS = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: must-not-run-as-root
spec:
  template:
    spec:
      containers: [{name: app, image: registry.example/app:1}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: legacy-root
spec:
  template:
    spec:
      containers: [{name: app, image: registry.example/legacy:1}]
"""

ROOT_POLICY = """package main
import rego.v1

deny_root contains msg if {
  input.kind == "Deployment"
  not input.spec.template.spec.securityContext.runAsNonRoot
  msg := sprintf("%s runs as root", [input.metadata.name])
}

warn_tag contains msg if {
  input.kind == "Deployment"
  msg := sprintf("%s: pin images by digest", [input.metadata.name])
}

exception contains rules if {
  input.metadata.name == "legacy-root"
  rules := ["root", "tag"]
}
"""

# v0, several rules of each name, a violation rule with details and a bare deny excused by ""
MIXED_V0 = """package main

deny[msg] {
  input.kind == "Service"
  input.spec.type == "LoadBalancer"
  msg := sprintf("%s: no load balancers", [input.metadata.name])
}

deny[msg] {
  input.kind == "Service"
  not input.metadata.labels.team
  msg := sprintf("%s: label team missing", [input.metadata.name])
}

violation[{"msg": msg, "details": {"port": p}}] {
  p := input.spec.ports[_].port
  p < 1024
  msg := sprintf("privileged port %d", [p])
}

warn[msg] {
  input.kind == "Service"
  msg := "services are reviewed by the network team"
}

exception[rules] {
  input.metadata.labels.legacy == "true"
  rules := [""]
}
"""

SERVICES = """apiVersion: v1
kind: Service
metadata: {name: lb, labels: {team: web}}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: old, labels: {legacy: "true"}}
spec: {type: ClusterIP, ports: [{port: 8080}]}
"""

# conftest's combine shape: outer `name`, re-declared in a comprehension after a use; `some i` in the rule
# body used only in comprehensions, and `some i` again inside one of them.
COMBINE = """package main
import rego.v1

deny contains msg if {
  name := input[_].contents.metadata.name
  same := [name | some i; input[i].contents.metadata.name == name; name := input[i].contents.kind]
  count(same) > 5
  msg := sprintf("never: %s", [name])
}

deny contains msg if {
  some i
  users := {u | some i; input[i].contents.kind == "user"; u := input[i].contents.metadata.name}
  wanted := {m | input[i].contents.kind == "team"; m := input[i].contents.spec.members[_]}
  missing := wanted - users
  count(missing) > 0
  msg := sprintf("missing users: %v", [sort(missing)])
}
"""

TEAM = """apiVersion: example.com/v1
kind: team
metadata: {name: team-one}
spec: {members: [ana, bo]}
"""
USERS = """apiVersion: example.com/v1
kind: user
metadata: {name: ana}
---
apiVersion: example.com/v1
kind: user
metadata: {name: bob}
"""


def _objects(*files: tuple[str, str]) -> list[RenderedObject]:
    out: list[RenderedObject] = []
    for name, text in files:
        out.extend(parse_manifests(text, name))
    return out


def _policy(source: str, **kwargs: object) -> BoundPolicy:
    return BoundPolicy.conftest(1, "conftest", {"policy.rego": source}, **kwargs)  # type: ignore[arg-type]


def test_exception_excuses_failures_and_warnings_and_counts_as_exceptions(engine: RegoEngine) -> None:
    decision = evaluate_target(
        _objects(("deployments.yaml", DEPLOYMENTS)), [_policy(ROOT_POLICY)], engine=engine
    )
    assert decision.errors == []
    assert [(v.rule, v.object.name if v.object else "") for v in decision.violations] == [
        ("deny_root", "must-not-run-as-root"),
        ("warn_tag", "must-not-run-as-root"),
    ]
    assert sorted((v.rule, v.message) for v in decision.exceptions) == [
        ("deny_root", 'data.main.exception[_][_] == "root"'),
        ("warn_tag", 'data.main.exception[_][_] == "tag"'),
    ]
    assert {v.object.name for v in decision.exceptions if v.object} == {"legacy-root"}
    assert decision.outcome is Outcome.BLOCKED
    # conftest: 2 rules x 2 documents; legacy-root's two rules are exceptions, not passes
    assert summary_line(decision) == "4 tests, 0 passed, 1 warnings, 1 failures, 2 exceptions"


def test_tests_are_counted_per_rule_definition_and_a_bare_rule_is_excused_by_empty_name(
    engine: RegoEngine,
) -> None:
    decision = evaluate_target(_objects(("services.yaml", SERVICES)), [_policy(MIXED_V0)], engine=engine)
    assert decision.errors == []
    found = sorted((v.rule, v.message) for v in decision.violations)
    assert found == [
        ("deny", "lb: no load balancers"),
        ("violation", "privileged port 80"),
        ("warn", "services are reviewed by the network team"),
    ]
    port = next(v for v in decision.violations if v.rule == "violation")
    assert port.details == {"details": {"port": 80}}
    # "old" is legacy: every bare rule (suffix "") is excused, one exception per rule name
    assert sorted(v.rule for v in decision.exceptions) == ["deny", "violation", "warn"]
    # 4 definitions per document; lb: 3 findings + 1 passing definition; old: 3 exceptions + 1
    assert summary_line(decision) == "8 tests, 2 passed, 1 warnings, 2 failures, 3 exceptions"


def test_combine_gives_one_entry_per_document_and_both_engines_take_opa_scoping(engine: RegoEngine) -> None:
    objects = _objects(("users.yaml", USERS), ("team.yaml", TEAM))
    decision = evaluate_target(objects, [_policy(COMBINE, combine=True)], engine=engine)
    assert decision.errors == []
    assert [v.message for v in decision.violations] == ['missing users: ["bo"]']
    assert decision.violations[0].object is None
    assert summary_line(decision) == "2 tests, 1 passed, 0 warnings, 1 failures, 0 exceptions"
    # all users present: the same policy passes (the comprehensions really read each document)
    fixed = USERS.replace("name: bob", "name: bo")
    passed = evaluate_target(
        _objects(("users.yaml", fixed), ("team.yaml", TEAM)), [_policy(COMBINE, combine=True)], engine=engine
    )
    assert passed.outcome is Outcome.PASSED, passed.errors


def test_namespaces_and_all_namespaces(engine: RegoEngine) -> None:
    other = (
        "package team.checks\nimport rego.v1\n\n"
        'deny_owner contains "owner label missing" if {\n  not input.metadata.labels.owner\n}\n'
    )
    modules = {"main.rego": ROOT_POLICY, "team.rego": other}
    objects = _objects(("deployments.yaml", DEPLOYMENTS))
    only_team = BoundPolicy.conftest(1, "c", modules, namespaces=("team.checks",))
    d = evaluate_target(objects, [only_team], engine=engine)
    assert {(v.rule, v.message) for v in d.violations} == {("team.checks.deny_owner", "owner label missing")}
    assert d.exceptions == []
    every = BoundPolicy.conftest(1, "c", modules, all_namespaces=True)
    d = evaluate_target(objects, [every], engine=engine)
    assert summary_line(d) == "6 tests, 0 passed, 1 warnings, 3 failures, 2 exceptions"


# ------------------------------------------------------------------------------------- pure parts


def test_combined_input_is_one_entry_per_document_sorted_by_path() -> None:
    entries = conftest_fmt.combined_input([("users.yaml", [{"a": 1}, {"a": 2}]), ("team.yaml", [{"t": 1}])])
    assert entries == [
        {"path": "team.yaml", "contents": {"t": 1}},
        {"path": "users.yaml", "contents": {"a": 1}},
        {"path": "users.yaml", "contents": {"a": 2}},
    ]


def test_rule_definitions_count_every_body() -> None:
    policy = conftest_fmt.ConftestPolicy((Module("m.rego", MIXED_V0),))
    assert policy.rule_counts() == {"main": {"deny": 2, "violation": 1, "warn": 1}}
    two_bodies = (
        "package main\n\ndeny[m] {\n  m := 1\n}\n{\n  m := 2\n}\n\nf(x) = 1 { x } else = 2 { true }\n"
    )
    assert conftest_fmt.rule_definitions(two_bodies) == {"deny": 2, "f": 1}


def test_rename_shadowing_locals_keeps_lines_and_other_sources() -> None:
    out = rename_shadowing_locals(COMBINE)
    assert out.count("\n") == COMBINE.count("\n")
    assert "[__fg_name | some i; input[i].contents.metadata.name == name; __fg_name := " in out
    assert "  true \n" in out  # the outer `some i`, used only in comprehensions
    plain = "package p\n\nx := [n | some n in input]\ny := {k | k := input[_]}\n"
    assert rename_shadowing_locals(plain) == plain


@pytest.mark.parametrize("entry", [["root"], ("root",)])
def test_check_counts_one_exception_per_matching_entry(entry: object) -> None:
    result = {"main": {"deny_root": [["x"]], "exception": [[list(entry), ["root", "other"]]]}}  # type: ignore[call-overload]
    checked = conftest_fmt.check(result, {"main": {"deny_root": 1}})
    assert checked.findings == []
    assert [e.query for e in checked.exceptions] == ['data.main.exception[_][_] == "root"'] * 2
    assert checked.tests == 2 and checked.successes == 0
