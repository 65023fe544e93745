"""The gate through the models and services, on regorus AND the real OPA server (``engine`` fixture)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from fleet.audit.models import AuditEvent
from policies.engine import RegoEngine
from policies.engine.opa_server import free_port
from policies.models import Evaluation, Policy, Violation, Waiver
from policies.services.evaluation import evaluate, evaluate_mapping
from tests.policies import policy_library as lib

pytestmark = pytest.mark.django_db


def _violations(evaluation: Evaluation) -> dict[str, list[Violation]]:
    out: dict[str, list[Violation]] = {}
    for v in evaluation.violations.order_by("id"):
        out.setdefault(v.policy_name, []).append(v)
    return out


def test_each_policy_finds_its_violation_and_a_clean_deployment_passes(
    fleet: dict[str, Any], library: dict[str, Policy], engine: RegoEngine
) -> None:
    objects = [
        lib.deployment("good"),
        lib.deployment("latest", image="nginx:latest"),
        lib.deployment("unlabelled", labels={}),
        lib.deployment("root", privileged=True),
        lib.deployment("unbounded", limits=False),
        lib.deployment("single", replicas=1),
        lib.deployment("hostnet", host_network=True),
        lib.deployment("node-agent", host_network=True),  # excused by the policy's own exception
    ]
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine)
    found = _violations(ev)
    assert {k: [v.name for v in vs] for k, vs in found.items()} == {
        "no-latest": ["latest"],
        "required-labels/must-have-team": ["unlabelled"],
        "privileged/no-privileged": ["root"],
        "limits/memory-limits": ["unbounded"],
        "prod-replicas": ["single"],
        "host-network": ["hostnet"],
    }
    assert "uses the :latest tag" in found["no-latest"][0].message
    assert found["required-labels/must-have-team"][0].details == {"missing_labels": ["team"]}
    assert ev.decision == "blocked"
    assert ev.deny_count == 6
    assert ev.engine == engine.name
    assert {v["policy"] for v in ev.policy_versions} == set(library)

    clean = evaluate(
        fleet["commit"], fleet["mapping"], fleet["prod"], [lib.deployment("good")], engine=engine
    )
    assert clean.decision == "passed"
    assert clean.violations.count() == 0


def test_a_deny_stops_that_cluster_only(
    fleet: dict[str, Any], library: dict[str, Policy], engine: RegoEngine, store_render: Any
) -> None:
    """The context rule (replicas >= 2 where env=prod) blocks prod; staging of the same group passes."""
    commit, mapping = fleet["commit"], fleet["mapping"]
    objects = [lib.deployment("web", replicas=1)]
    store_render(commit, mapping, [fleet["prod"], fleet["staging"]], objects, "apps/web/deploy.yaml")
    result = evaluate_mapping(commit, mapping, engine=engine)
    decisions = {r.cluster.name: str(r.decision.outcome) for r in result.results}
    assert decisions == {"prod-eu-1": "blocked", "staging-eu-1": "passed"}
    assert [c.name for c in result.blocked] == ["prod-eu-1"]
    stored = {e.cluster.name: e for e in Evaluation.objects.filter(commit=commit, mapping=mapping)}
    assert stored["prod-eu-1"].decision == "blocked"
    violation = stored["prod-eu-1"].violations.get()
    assert violation.policy_name == "prod-replicas"
    assert violation.source_file == "apps/web/deploy.yaml"
    assert "production cluster prod-eu-1" in violation.message
    assert stored["staging-eu-1"].decision == "passed"

    event = AuditEvent.objects.filter(action="policy.decision").get()
    assert event.after["counts"] == {"passed": 1, "warned": 0, "blocked": 1}
    assert event.after["clusters"]["prod-eu-1"]["decision"] == "blocked"
    assert event.scope_group_name == "web"

    # Evaluating again replaces the stored decisions (idempotent), it does not add rows.
    evaluate_mapping(commit, mapping, engine=engine)
    assert Evaluation.objects.filter(commit=commit, mapping=mapping).count() == 2


def test_an_active_waiver_excuses_and_is_referenced_an_expired_one_stops_applying(
    fleet: dict[str, Any], library: dict[str, Policy], engine: RegoEngine, make_user: Any
) -> None:
    author = make_user("alice", role="policy-admin")
    waiver = Waiver.objects.create(
        policy=library["no-latest"],
        kind="Deployment",
        namespace="apps",
        name_pattern="legacy-*",
        cluster_group=fleet["web"],
        expires_at=timezone.now() + timedelta(days=7),
        justification="vendor image only ships :latest; ticket OPS-12",
        author=author,
        author_name="alice",
    )
    objects = [lib.deployment("legacy-billing", image="vendor/billing:latest")]
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine)
    assert ev.decision == "passed"
    assert ev.waived_count == 1
    violation = ev.violations.get()
    assert violation.waived_by == waiver
    used = AuditEvent.objects.filter(action="waiver.used").get()
    assert used.target_id == str(waiver.pk)
    assert used.after["violations"] == 1

    # Another object is not covered by the selector.
    other = evaluate(
        fleet["commit"],
        fleet["mapping"],
        fleet["prod"],
        [lib.deployment("web", image="x:latest")],
        engine=engine,
    )
    assert other.decision == "blocked"

    # Expired (past its expiry): no longer applies.
    Waiver.objects.filter(pk=waiver.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    again = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine)
    assert again.decision == "blocked"
    assert again.violations.get().waived_by is None


def test_a_waiver_of_another_group_does_not_apply(
    fleet: dict[str, Any], library: dict[str, Policy], engine: RegoEngine
) -> None:
    Waiver.objects.create(
        policy=library["no-latest"],
        cluster_group=fleet["other"],
        expires_at=timezone.now() + timedelta(days=1),
        justification="other team",
    )
    ev = evaluate(
        fleet["commit"],
        fleet["mapping"],
        fleet["prod"],
        [lib.deployment("x", image="a:latest")],
        engine=engine,
    )
    assert ev.decision == "blocked"


def test_group_binding_overrides_the_global_one_and_warn_does_not_block(
    fleet: dict[str, Any], make_policy: Any, bind: Any, engine: RegoEngine
) -> None:
    policy = make_policy(
        "no-latest", engine, style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}]
    )
    bind(policy, None, "deny")
    bind(policy, fleet["web"], "warn")
    objects = [lib.deployment("x", image="a:latest")]
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine)
    assert ev.decision == "warned"
    assert ev.warn_count == 1
    other = evaluate(fleet["commit"], fleet["other_mapping"], fleet["lonely"], objects, engine=engine)
    assert other.decision == "blocked"


def test_constraint_enforcement_is_inherited_when_the_binding_sets_none(
    fleet: dict[str, Any], make_policy: Any, bind: Any, engine: RegoEngine
) -> None:
    policy = make_policy(
        "limits",
        engine,
        style="gatekeeper",
        template=lib.LIMITS_TEMPLATE,
        constraints=[lib.constraint("K8sLimits", "memory-limits", action="dryrun")],
    )
    bind(policy, None, "")
    ev = evaluate(
        fleet["commit"], fleet["mapping"], fleet["prod"], [lib.deployment("x", limits=False)], engine=engine
    )
    assert ev.decision == "passed"
    assert ev.dryrun_count == 1
    assert ev.violations.get().enforcement == "dryrun"


def test_a_pinned_version_is_evaluated_instead_of_the_latest(
    fleet: dict[str, Any], make_policy: Any, bind: Any, engine: RegoEngine
) -> None:
    policy = make_policy(
        "no-latest", engine, style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}]
    )
    v1 = policy.current
    allow_all = 'package main\n\ndeny_nothing[msg] {\n  false\n  msg := "never"\n}\n'
    policy = make_policy(
        "no-latest", engine, style="conftest", modules=[{"path": "l.rego", "source": allow_all}]
    )
    assert policy.current.number == 2
    binding = bind(policy)
    objects = [lib.deployment("x", image="a:latest")]
    assert (
        evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine).decision
        == "passed"
    )
    binding.pinned_version = v1
    binding.save()
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine)
    assert ev.decision == "blocked"
    assert ev.violations.get().policy_version == 1


def test_unreachable_opa_blocks_fail_closed(
    fleet: dict[str, Any], make_policy: Any, bind: Any, regorus_engine: RegoEngine, monkeypatch: Any
) -> None:
    policy = make_policy(
        "no-latest", regorus_engine, style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}]
    )
    bind(policy)
    monkeypatch.setattr("django.conf.settings.FLEETGATE_REGO_ENGINE", "opa")
    # nothing listens there
    monkeypatch.setattr("django.conf.settings.FLEETGATE_OPA_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr("django.conf.settings.FLEETGATE_REGO_TIMEOUT", "2")
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], [lib.deployment("good")])
    assert ev.decision == "blocked"
    assert ev.engine == "opa"
    assert any(r.startswith("engine error: no-latest") for r in ev.reasons), ev.reasons
    assert ev.errors[0]["kind"] == "engine"


def test_rendered_manifest_rows_are_accepted_and_keep_their_source_file(
    fleet: dict[str, Any], make_policy: Any, bind: Any, engine: RegoEngine
) -> None:
    from policies.services.evaluation import evaluate_targets

    bind(
        make_policy(
            "no-latest", engine, style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}]
        )
    )
    obj = lib.deployment("web", image="a:latest")
    row = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "namespace": "apps",
        "source": "apps/web/deploy.yaml",
        "document": 2,
        "object": obj,
    }
    result = evaluate_targets(
        fleet["commit"],
        fleet["mapping"],
        [(fleet["prod"], [row], ""), (fleet["staging"], [obj], "")],
        engine=engine,
    )
    by = {r.cluster.name: r.evaluation for r in result.results}
    assert by["prod-eu-1"].violations.get().source_file == "apps/web/deploy.yaml"
    assert by["staging-eu-1"].violations.get().source_file == ""
    assert by["prod-eu-1"].violations.get().name == by["staging-eu-1"].violations.get().name == "web"


def test_parsed_policies_follow_the_stored_content(
    fleet: dict[str, Any], make_policy: Any, bind: Any, engine: RegoEngine
) -> None:
    """The gate keeps parsed templates and constraints between evaluations, keyed by the stored content:
    a row changed in the database (a constraint's parameters, then YAML that no longer parses) is parsed
    again, and the broken one blocks (fail closed)."""
    policy = make_policy(
        "limits",
        engine,
        style="gatekeeper",
        template=lib.LIMITS_TEMPLATE,
        constraints=[lib.constraint("K8sLimits", "memory-limits")],
    )
    bind(policy, None, "")
    objects = [lib.deployment("x", limits=False)]
    first = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine)
    assert first.decision == "blocked"
    assert first.violations.get().policy_name == "limits/memory-limits"
    version = policy.current
    content = dict(version.content)
    content["constraints"] = [lib.constraint("K8sLimits", "renamed-limits")]
    type(version).objects.filter(pk=version.pk).update(content=content)
    renamed = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine)
    assert renamed.violations.get().policy_name == "limits/renamed-limits"
    content["constraints"] = ["kind: [unclosed"]
    type(version).objects.filter(pk=version.pk).update(content=content)
    broken = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects, engine=engine)
    assert broken.decision == "blocked"
    assert broken.violations.count() == 0
    assert "constraints[0]" in broken.reasons[0]
