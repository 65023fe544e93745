"""The gate's decisions on both engines: each policy style, enforcement, waivers, context, inventory,
and fail-closed behaviour (engine errors, unreachable OPA, invalid Rego, time budget)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from policies.engine import RegoEngine
from policies.engine.opa_engine import OpaEngine
from policies.engine.opa_server import OpaServer, free_port
from policies.gate import (
    BoundPolicy,
    Decision,
    Enforcement,
    Outcome,
    RenderedObject,
    TargetContext,
    Waiver,
    check_policy,
    evaluate_target,
)
from tests.policies import corpus

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PROD = TargetContext(
    cluster="prod-eu-1",
    cluster_labels={"env": "prod"},
    group="production",
    repository="https://git.example/apps.git",
    path="apps/",
    commit="abc123",
    author="dev",
)
STAGING = TargetContext(cluster="staging-1", cluster_labels={"env": "staging"})


def _run(
    engine: RegoEngine,
    objects: list[Any],
    policies: list[BoundPolicy],
    context: TargetContext = PROD,
    waivers: tuple[Waiver, ...] = (),
    **kwargs: Any,
) -> Decision:
    rendered = [RenderedObject(o, f"manifests/{o['metadata']['name']}.yaml") for o in objects]
    return evaluate_target(rendered, policies, context, waivers, engine=engine, now=NOW, **kwargs)


def _names(decision: Decision) -> list[tuple[str, str]]:
    return [(v.policy_id, v.object.name if v.object else "") for v in decision.violations]


def _policy(policy_id: str) -> BoundPolicy:
    return next(p for p in corpus.all_policies() if p.id == policy_id)


# --------------------------------------------------------------------------------------------- styles


def test_latest_images_are_blocked_conftest_style(engine: RegoEngine) -> None:
    objects = [
        corpus.deployment("web"),
        corpus.deployment("latest", image="r.example/web:latest"),
        corpus.deployment("untagged", image="nginx"),
    ]
    decision = _run(engine, objects, [_policy("no-latest")])
    assert decision.outcome is Outcome.BLOCKED
    assert _names(decision) == [("no-latest", "latest"), ("no-latest", "untagged")]
    first = decision.violations[0]
    assert first.rule == "deny_latest" and first.enforcement is Enforcement.DENY
    assert first.object is not None and first.object.source_file == "manifests/latest.yaml"
    assert "uses the :latest tag" in first.message
    assert _run(engine, [corpus.deployment("web")], [_policy("no-latest")]).outcome is Outcome.PASSED


def test_required_labels_template_with_parameters(engine: RegoEngine) -> None:
    objects = [
        corpus.deployment("ok"),
        corpus.deployment("partial", labels={"team": "web"}),
        corpus.deployment("bare", labels={}),
        corpus.deployment("sys", ns="kube-system", labels={}),
    ]
    decision = _run(engine, objects, [_policy("required-labels")])
    assert decision.outcome is Outcome.BLOCKED
    messages = {v.object.name: v.message for v in decision.violations if v.object}
    assert messages == {
        "bare": 'Deployment bare is missing required labels: ["team", "tier"]',
        "partial": 'Deployment partial is missing required labels: ["tier"]',
    }
    assert decision.violations[0].details == {"missing": ["team", "tier"]}


def test_constraint_without_parameters_gets_an_empty_object(engine: RegoEngine) -> None:
    constraint = (
        "kind: FgRequiredLabels\nmetadata: {name: none}\n"
        "spec:\n  match:\n    kinds: [{apiGroups: [apps], kinds: [Deployment]}]\n"
    )
    policy = BoundPolicy.gatekeeper("p", "labels", corpus.REQUIRED_LABELS_TEMPLATE, constraint)
    assert _run(engine, [corpus.deployment("bare", labels={})], [policy]).outcome is Outcome.PASSED


def test_privileged_containers_and_missing_limits_share_a_library(engine: RegoEngine) -> None:
    objects = [
        corpus.namespace("apps", limits="required"),
        corpus.deployment("priv", privileged=True),
        corpus.deployment("nolimits", limits=False),
        corpus.pod("debug", privileged=True),
        corpus.deployment("fine"),
    ]
    decision = _run(engine, objects, [_policy("no-privileged"), _policy("container-limits")])
    assert _names(decision) == [
        ("container-limits", "nolimits"),
        ("container-limits", "nolimits"),
        ("no-privileged", "debug"),
        ("no-privileged", "priv"),
    ]
    limits = [v for v in decision.violations if v.policy_id == "container-limits"]
    assert {v.message for v in limits} == {
        "container main has no cpu limit",
        "container main has no memory limit",
    }
    assert all(v.enforcement is Enforcement.WARN for v in limits)  # the Constraint says warn
    assert decision.outcome is Outcome.BLOCKED


def test_constraint_match_limits_what_is_reviewed(engine: RegoEngine) -> None:
    objects = [
        corpus.namespace("apps", limits="required"),
        corpus.namespace("batch"),
        corpus.deployment("in-apps", limits=False),
        corpus.deployment("in-batch", ns="batch", limits=False),
    ]
    decision = _run(engine, objects, [_policy("container-limits")])
    assert {v.object.name for v in decision.violations if v.object} == {"in-apps"}  # namespaceSelector
    assert decision.outcome is Outcome.WARNED

    constraint = """\
kind: FgRequiredLabels
metadata: {name: selected}
spec:
  match:
    kinds: [{apiGroups: [apps], kinds: [Deployment]}]
    namespaces: [apps, web-*]
    labelSelector:
      matchExpressions: [{key: tier, operator: NotIn, values: [internal]}]
  parameters: {labels: [owner]}
"""
    policy = BoundPolicy.gatekeeper("sel", "selected", corpus.REQUIRED_LABELS_TEMPLATE, constraint)
    objects = [
        corpus.deployment("a"),
        corpus.deployment("b", ns="web-eu"),
        corpus.deployment("c", ns="batch"),
        corpus.deployment("d", labels={"tier": "internal"}),
        corpus.pod("e"),
    ]
    assert {v.object.name for v in _run(engine, objects, [policy]).violations if v.object} == {"a", "b"}


def test_context_aware_rule_replicas_on_prod_only(engine: RegoEngine) -> None:
    objects = [corpus.deployment("single", replicas=1), corpus.deployment("pair", replicas=2)]
    prod = _run(engine, objects, [_policy("prod-replicas")], PROD)
    assert prod.outcome is Outcome.BLOCKED
    assert [v.message for v in prod.violations] == [
        "Deployment single runs 1 replica(s) on production cluster prod-eu-1"
    ]
    assert prod.violations[0].rule == "fleetgate.replicas.deny"
    assert _run(engine, objects, [_policy("prod-replicas")], STAGING).outcome is Outcome.PASSED


def test_conftest_exception_excuses_only_the_named_rule(engine: RegoEngine) -> None:
    objects = [corpus.deployment("root", non_root=False), corpus.deployment("legacy-app", non_root=False)]
    decision = _run(engine, objects, [_policy("run-as-root")])
    assert _names(decision) == [("run-as-root", "root")]
    assert decision.outcome is Outcome.BLOCKED
    warned = _run(
        engine, [corpus.deployment("legacy-app", non_root=False, labels={})], [_policy("run-as-root")]
    )
    assert [(v.rule, v.enforcement) for v in warned.violations] == [("warn", Enforcement.WARN)]
    assert warned.outcome is Outcome.WARNED


def test_inventory_finds_duplicate_ingress_hosts(engine: RegoEngine) -> None:
    objects = [
        corpus.ingress("a", "shop.example.com"),
        corpus.ingress("b", "shop.example.com", ns="batch"),
        corpus.ingress("c", "docs.example.com"),
    ]
    decision = _run(engine, objects, [_policy("unique-hosts")])
    assert sorted(v.message for v in decision.violations) == [
        "ingress host shop.example.com is also used by ingress apps/a",
        "ingress host shop.example.com is also used by ingress batch/b",
    ]
    assert _run(engine, objects[2:], [_policy("unique-hosts")]).outcome is Outcome.PASSED


def test_yaml_timestamps_in_objects_reach_policies_as_strings(engine: RegoEngine) -> None:
    obj = yaml.safe_load(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: stamped\n  namespace: apps\n"
        "  creationTimestamp: 2026-01-02T03:04:05Z\nspec:\n  template:\n    spec:\n"
        "      containers: [{name: main, image: 'nginx:latest'}]\n"
    )
    module = (
        'package main\n\nwarn[msg] {\n  msg := sprintf("created %s", [input.metadata.creationTimestamp])\n}\n'
    )
    policies = [_policy("no-latest"), BoundPolicy.conftest("stamp", "Stamp", {"s.rego": module})]
    decision = _run(engine, [obj], policies)
    assert decision.errors == []
    assert sorted(v.message for v in decision.violations) == [
        "Deployment/stamped: container main uses the :latest tag",
        "created 2026-01-02T03:04:05Z",
    ]


REVIEW_ECHO_TEMPLATE = """\
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: fgreviewecho}
spec:
  crd: {spec: {names: {kind: FgReviewEcho}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fgreviewecho

        violation[{"msg": "review", "details": d}] {
          r := input.review
          d := {
            "kind": r.kind, "name": r.name, "namespace": r.namespace, "operation": r.operation,
            "oldObjectIsNull": r.oldObject == null, "nsLabels": r.namespaceObject.metadata.labels,
            "parameters": input.parameters, "user": r.userInfo.username,
          }
        }
"""


def test_gatekeeper_review_input_is_shaped_like_an_admission_request(engine: RegoEngine) -> None:
    constraint = "kind: FgReviewEcho\nmetadata: {name: echo}\nspec:\n  parameters: {level: 3}\n"
    policy = BoundPolicy.gatekeeper("echo", "Echo", REVIEW_ECHO_TEMPLATE, constraint, enforcement="dryrun")
    objects = [corpus.namespace("apps", env="prod"), corpus.deployment("web")]
    decision = _run(engine, objects, [policy])
    details = {v.object.name: v.details for v in decision.violations if v.object}
    assert details["web"] == {
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "name": "web",
        "namespace": "apps",
        "operation": "CREATE",
        "oldObjectIsNull": True,
        "nsLabels": {"env": "prod"},
        "parameters": {"level": 3},
        "user": "fleetgate",
    }
    assert "apps" not in details  # a Namespace has no namespace (and so no namespaceObject)
    assert decision.outcome is Outcome.PASSED


def test_conftest_violation_rules_objects_and_data_files(engine: RegoEngine) -> None:
    module = """\
package main

import rego.v1

violation_registry contains {"msg": msg, "registry": registry} if {
  some c in input.spec.template.spec.containers
  registry := split(c.image, "/")[0]
  not registry in data.allowed.registries
  msg := sprintf("%s pulls from %s", [input.metadata.name, registry])
}
"""
    policy = BoundPolicy.conftest(
        "reg", "Registries", {"r.rego": module}, data={"allowed": {"registries": ["r.example"]}}
    )
    objects = [
        corpus.deployment("ok", image="r.example/web:1"),
        corpus.deployment("bad", image="evil.io/x:1"),
    ]
    decision = _run(engine, objects, [policy])
    assert [(v.rule, v.message, dict(v.details)) for v in decision.violations] == [
        ("violation_registry", "bad pulls from evil.io", {"registry": "evil.io"})
    ]
    assert decision.outcome is Outcome.BLOCKED


def test_combine_mode_sees_all_files_at_once(engine: RegoEngine) -> None:
    module = """\
package main

deny[msg] {
  names := [d.contents.metadata.name | d := input[_]; d.contents.kind == "Service"]
  count(names) == 0
  msg := sprintf("no Service among %d files", [count(input)])
}
"""
    policy = BoundPolicy.conftest("svc", "needs a service", {"svc.rego": module}, combine=True)
    decision = _run(engine, [corpus.deployment("web"), corpus.deployment("api")], [policy])
    assert [(v.message, v.object) for v in decision.violations] == [("no Service among 2 files", None)]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-svc"}}
    assert _run(engine, [corpus.deployment("web"), service], [policy]).outcome is Outcome.PASSED


# --------------------------------------------------------------------------------------------- enforcement


@pytest.mark.parametrize(
    ("enforcement", "outcome"),
    [
        (Enforcement.DENY, Outcome.BLOCKED),
        (Enforcement.WARN, Outcome.WARNED),
        (Enforcement.DRYRUN, Outcome.PASSED),
    ],
)
def test_binding_enforcement_decides_the_outcome(
    engine: RegoEngine, enforcement: Enforcement, outcome: Outcome
) -> None:
    policy = BoundPolicy.conftest(
        "no-latest", "No latest", {"p.rego": corpus.NO_LATEST}, enforcement=enforcement
    )
    decision = _run(engine, [corpus.deployment("x", image="nginx:latest")], [policy])
    assert decision.outcome is outcome
    assert [v.enforcement for v in decision.violations] == [enforcement]  # recorded in every mode


def test_constraint_enforcement_action_applies_when_the_binding_sets_none(engine: RegoEngine) -> None:
    dryrun = corpus.REQUIRED_LABELS_CONSTRAINT.replace("spec:\n", "spec:\n  enforcementAction: dryrun\n", 1)
    policy = BoundPolicy.gatekeeper("dry", "labels", corpus.REQUIRED_LABELS_TEMPLATE, dryrun)
    decision = _run(engine, [corpus.deployment("bare", labels={})], [policy])
    assert decision.outcome is Outcome.PASSED
    assert [v.enforcement for v in decision.violations] == [Enforcement.DRYRUN]
    bound_deny = BoundPolicy.gatekeeper(
        "dry", "labels", corpus.REQUIRED_LABELS_TEMPLATE, dryrun, enforcement=Enforcement.DENY
    )
    assert _run(engine, [corpus.deployment("bare", labels={})], [bound_deny]).outcome is Outcome.BLOCKED


# --------------------------------------------------------------------------------------------- waivers


def test_active_waiver_excuses_and_expired_one_does_not(engine: RegoEngine) -> None:
    objects = [
        corpus.deployment("latest", image="r.example/web:latest"),
        corpus.deployment("other", image="r.example/other:latest"),
    ]
    active = Waiver(
        "w-active",
        "no-latest",
        kind="Deployment",
        namespace="apps",
        name="lat*",
        expires_at=NOW + timedelta(days=1),
    )
    expired = Waiver("w-expired", "no-latest", name="other", expires_at=NOW - timedelta(seconds=1))
    decision = _run(engine, objects, [_policy("no-latest")], waivers=(active, expired))
    waived = {v.object.name: v.waived_by for v in decision.violations if v.object}
    assert waived == {"latest": "w-active", "other": None}
    assert decision.outcome is Outcome.BLOCKED

    both = (
        active,
        Waiver("w-other", "no-latest", labels={"team": "web"}, expires_at=NOW + timedelta(hours=1)),
    )
    decision = _run(engine, objects, [_policy("no-latest")], waivers=both)
    assert {v.waived_by for v in decision.violations} == {"w-active", "w-other"}
    assert decision.outcome is Outcome.PASSED
    assert decision.blocking == []


def test_waiver_for_another_policy_or_cluster_does_not_apply(engine: RegoEngine) -> None:
    objects = [corpus.deployment("latest", image="r.example/web:latest")]
    waivers = (Waiver("w1", "required-labels"), Waiver("w2", "no-latest", cluster="staging-*"))
    decision = _run(engine, objects, [_policy("no-latest")], waivers=waivers)
    assert [v.waived_by for v in decision.violations] == [None]
    assert decision.outcome is Outcome.BLOCKED
    scoped = (Waiver("w3", "no-latest", cluster="prod-*", group="production"),)
    assert [
        v.waived_by for v in _run(engine, objects, [_policy("no-latest")], waivers=scoped).violations
    ] == ["w3"]
    other_group = (Waiver("w4", "no-latest", group="staging"),)
    assert _run(engine, objects, [_policy("no-latest")], waivers=other_group).outcome is Outcome.BLOCKED


# --------------------------------------------------------------------------------------------- fail closed


def test_invalid_rego_is_refused_with_its_line(engine: RegoEngine) -> None:
    source = "package main\n\nwarn[msg] {\n  msg := 1\n}\n\ndeny[msg {\n  msg := 2\n}\n"
    broken = BoundPolicy.conftest("broken", "Broken", {"broken.rego": source})
    errors = check_policy(broken, engine)
    assert errors and {(e["path"], e["line"]) for e in errors} == {("broken.rego", 7)}
    assert check_policy(_policy("no-latest"), engine) == []
    decision = _run(engine, [corpus.deployment("web")], [broken, _policy("no-latest")])
    assert decision.outcome is Outcome.BLOCKED
    assert [e.kind for e in decision.errors] == ["compile"]
    assert decision.reasons[0].startswith("engine error: Broken: policy does not compile: broken.rego:")


def test_conftest_policy_without_rules_is_refused(engine: RegoEngine) -> None:
    helpers_only = BoundPolicy.conftest("lib", "Helpers", {"h.rego": "package main\n\nis_prod := true\n"})
    errors = check_policy(helpers_only, engine)
    assert [e["code"] for e in errors] == ["format_error"]
    assert "no deny, violation or warn rules" in errors[0]["message"]
    decision = _run(engine, [corpus.deployment("web")], [helpers_only])
    assert decision.outcome is Outcome.BLOCKED and [e.kind for e in decision.errors] == ["format"]


def test_runtime_error_in_a_policy_blocks(engine: RegoEngine) -> None:
    module = (
        'package main\n\nname = input.metadata.name {\n  true\n}\n\nname = "other" {\n  true\n}\n\n'
        "deny[msg] {\n  msg := name\n}\n"
    )
    policy = BoundPolicy.conftest("conflict", "Conflict", {"c.rego": module}, enforcement=Enforcement.WARN)
    decision = _run(engine, [corpus.deployment("web")], [policy])
    assert decision.outcome is Outcome.BLOCKED  # even a warn-only policy fails closed
    assert decision.errors and decision.errors[0].policy_id == "conflict"
    assert decision.reasons[0].startswith("engine error: Conflict:")


def test_unreachable_opa_blocks() -> None:
    engine = OpaEngine(f"http://127.0.0.1:{free_port()}", timeout=2)
    decision = _run(engine, [corpus.deployment("web")], [_policy("no-latest"), _policy("required-labels")])
    assert decision.outcome is Outcome.BLOCKED
    assert {e.policy_id for e in decision.errors} == {"no-latest", "required-labels"}
    assert all("cannot reach" in e.message for e in decision.errors)
    assert decision.as_dict()["outcome"] == "blocked"


def test_opa_restart_is_survived(opa_server: OpaServer) -> None:
    port = free_port()
    engine = OpaEngine(f"http://127.0.0.1:{port}", timeout=10)
    objects = [corpus.deployment("latest", image="r.example/web:latest")]
    with OpaServer(opa_server.binary, port=port):
        assert _run(engine, objects, [_policy("no-latest")]).outcome is Outcome.BLOCKED
    down = _run(engine, objects, [_policy("no-latest")])
    assert down.outcome is Outcome.BLOCKED and [e.kind for e in down.errors] == ["engine"]
    with OpaServer(opa_server.binary, port=port):  # a fresh server knows none of the pushed policies
        again = _run(engine, objects, [_policy("no-latest")])
    assert again.errors == [] and _names(again) == [("no-latest", "latest")]


def test_exhausted_time_budget_blocks(engine: RegoEngine) -> None:
    decision = _run(engine, [corpus.deployment("web")], [_policy("no-latest")], time_budget=0)
    assert decision.outcome is Outcome.BLOCKED
    assert [e.kind for e in decision.errors] == ["timeout"]


def test_no_policies_pass_and_decision_serialises(engine: RegoEngine) -> None:
    decision = _run(engine, corpus.corpus(), [])
    assert decision.outcome is Outcome.PASSED and decision.violations == [] and decision.errors == []
    full = _run(engine, corpus.corpus(), corpus.all_policies())
    data = full.as_dict()
    assert data["outcome"] == "blocked" and data["engine"] == engine.name
    assert {"policy_id", "enforcement", "message", "object", "waived_by"} <= set(data["violations"][0])
