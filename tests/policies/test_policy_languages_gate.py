"""ValidatingAdmissionPolicy and Kyverno in the gate beside Rego: imported as they are, bound like other
policies, evaluated on the same target, results side by side with their language named (issue 17).

The Rego side runs on regorus AND the real OPA server (``engine`` fixture); VAP and Kyverno are evaluated
in-process by policies.formats.vap and policies.formats.kyverno."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fleet.audit.models import AuditEvent
from policies import gate
from policies.engine import RegoEngine
from policies.models import Evaluation, Policy, PolicyBinding, PolicySource, Violation, Waiver
from policies.services.evaluation import build_bound_set, evaluate, evaluate_targets
from policies.services.importing import import_files
from policies.services.sources import sync_policy_source
from tests.policies import language_library as ll
from tests.policies import policy_library as lib
from tests.policies.test_policy_commands_and_sources import Origin, origin

__all__ = ["origin"]  # the fixture: a local Git origin the test commits policies to

pytestmark = pytest.mark.django_db


def _import(**files: str) -> dict[str, Policy]:
    result = import_files({f"{k}.yaml": v for k, v in files.items()})
    return {r.policy.name: r.policy for r in result.saved}


@pytest.fixture
def three(
    fleet: dict[str, Any],
    make_policy: Callable[..., Policy],
    bind: Callable[..., PolicyBinding],
    engine: RegoEngine,
) -> dict[str, Policy]:
    """A Gatekeeper constraint, a VAP with a Deny binding and a Kyverno Enforce policy, bound to all clusters
    with the enforcement their own documents say (a Fleetgate binding that inherits)."""
    policies = {"required-labels": make_policy("required-labels", engine, **lib.spec("required-labels"))}
    policies |= _import(
        vap=ll.REPLICA_LIMIT_VAP
        + "---\n"
        + ll.vap_binding("replica-limit-binding", "replica-limit.example.com", ["Deny"]),
        kyverno=ll.REQUIRE_TEAM_KYVERNO,
    )
    for policy in policies.values():
        bind(policy, enforcement="")
    return policies


def _found(evaluation: Evaluation) -> set[tuple[str, str, str, str, str]]:
    return {
        (v.policy_name, v.language, v.enforcement, v.name, "waived" if v.waived_by_id else "")
        for v in evaluation.violations.all()
    }


def test_a_render_violating_a_vap_a_kyverno_rule_and_a_constraint_is_blocked_with_all_three_named(
    fleet: dict[str, Any], three: dict[str, Policy], engine: RegoEngine
) -> None:
    assert {p.style for p in three.values()} == {"gatekeeper", "vap", "kyverno"}
    bad = lib.deployment("big", replicas=8, labels={})
    ev = evaluate(
        fleet["commit"], fleet["mapping"], fleet["prod"], [bad, lib.deployment("fine")], engine=engine
    )
    assert ev.decision == "blocked"
    assert _found(ev) == {
        ("required-labels/must-have-team", "Rego/Gatekeeper", "deny", "big", ""),
        ("replica-limit-binding", "VAP (CEL)", "deny", "big", ""),
        ("require-team-label", "Kyverno", "deny", "big", ""),
    }
    messages = {v.language: v.message for v in ev.violations.all()}
    assert messages["VAP (CEL)"] == "replicas must be no greater than 5, got 8"
    assert messages["Kyverno"].startswith("validation error: The label `team` is required on big.")
    assert ev.deny_count == 3
    assert {v["language"] for v in ev.policy_versions} == {"Rego/Gatekeeper", "VAP (CEL)", "Kyverno"}
    # the rule of each finding: the Kyverno rule name, the VAP validation
    rules = {v.language: v.rule for v in ev.violations.all()}
    assert rules["Kyverno"] == "check-team"
    decision = AuditEvent.objects.filter(action="policy.decision").latest("id")
    assert decision.after["findings"] == {
        "Kyverno": {"deny": 1},
        "Rego/Gatekeeper": {"deny": 1},
        "VAP (CEL)": {"deny": 1},
    }
    assert {p["language"] for p in decision.after["policies"]} == {"Rego/Gatekeeper", "VAP (CEL)", "Kyverno"}


def test_warn_and_audit_actions_are_recorded_only_and_a_fleetgate_binding_overrides_them(
    fleet: dict[str, Any], bind: Callable[..., PolicyBinding]
) -> None:
    policies = _import(
        vap=ll.REPLICA_LIMIT_VAP
        + "---\n"
        + ll.vap_binding("replicas-warn", "replica-limit.example.com", ["Warn"])
        + "---\n"
        + ll.vap_binding("replicas-audit", "replica-limit.example.com", ["Audit"]),
        kyverno=ll.disallow_latest("Audit"),
    )
    assert set(policies) == {"replicas-warn", "replicas-audit", "disallow-latest-tag"}
    bindings = {name: bind(p, enforcement="") for name, p in policies.items()}
    objects = [lib.deployment("big", replicas=8, image="nginx:latest")]
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects)
    assert ev.decision == "warned"
    assert _found(ev) == {
        ("replicas-warn", "VAP (CEL)", "warn", "big", ""),
        ("replicas-audit", "VAP (CEL)", "dryrun", "big", ""),
        ("disallow-latest-tag", "Kyverno", "dryrun", "big", ""),
    }
    assert (ev.deny_count, ev.warn_count, ev.dryrun_count) == (0, 1, 2)

    # a Fleetgate binding's enforcement overrides the document's, as for a Gatekeeper constraint
    bindings["disallow-latest-tag"].enforcement = "deny"
    bindings["disallow-latest-tag"].save()
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects)
    assert ev.decision == "blocked"
    assert ("disallow-latest-tag", "Kyverno", "deny", "big", "") in _found(ev)


def test_a_policy_exception_waives_exactly_its_resources_and_rules(
    fleet: dict[str, Any], bind: Callable[..., PolicyBinding], make_user: Callable[..., Any]
) -> None:
    alice = make_user("alice", role="policy-admin")
    result = import_files(
        {
            "kyverno.yaml": ll.REQUIRE_TEAM_KYVERNO,
            "exception.yaml": ll.legacy_exception(["legacy-*"], ["check-team"]),
        },
        user=alice,
        group=fleet["web"],
    )
    policy = result.saved[0].policy
    assert [(w.rule, w.kind, w.name_pattern, w.cluster_group, w.author_name) for w in result.waivers] == [
        ("check-team", "Deployment", "legacy-*", fleet["web"], "alice")
    ]
    waiver = result.waivers[0]
    assert waiver.justification == "vendor chart, OPS-31"
    assert waiver.origin == "kyverno PolicyException apps/legacy-apps"
    assert result.reported == ["require-team-label: rule add-managed-by (mutate) is not applied by the gate"]
    bind(policy, enforcement="")
    objects = [lib.deployment("legacy-api", labels={}), lib.deployment("web", labels={})]
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects)
    assert _found(ev) == {
        ("require-team-label", "Kyverno", "deny", "legacy-api", "waived"),
        ("require-team-label", "Kyverno", "deny", "web", ""),
    }
    assert ev.decision == "blocked" and ev.waived_count == 1
    assert Violation.objects.get(evaluation=ev, name="legacy-api").waived_by == waiver
    used = AuditEvent.objects.get(action="waiver.used")
    assert used.after["violations"] == 1
    # the waiver is of the group: a target of another group is not excused
    bind(policy, group=fleet["other"], enforcement="")
    other = evaluate(fleet["commit"], fleet["other_mapping"], fleet["lonely"], [objects[0]])
    assert _found(other) == {("require-team-label", "Kyverno", "deny", "legacy-api", "")}
    # importing the same exception again keeps its waiver; one that names another rule replaces it
    again = import_files(
        {"exception.yaml": ll.legacy_exception(["legacy-*"], ["check-team"])}, user=alice, group=fleet["web"]
    )
    assert [w.pk for w in again.waivers] == [waiver.pk]
    import_files(
        {"exception.yaml": ll.legacy_exception(["legacy-*"], ["autogen-check-team"])},
        user=alice,
        group=fleet["web"],
    )
    waiver.refresh_from_db()
    assert not waiver.active
    assert Waiver.objects.filter(origin=waiver.origin, rule="autogen-check-team").count() == 1


def test_an_update_is_reviewed_with_its_old_object_in_cel(
    fleet: dict[str, Any], bind: Callable[..., PolicyBinding]
) -> None:
    policies = _import(
        vap=ll.SCALE_DOWN_VAP
        + "---\n"
        + ll.vap_binding("scale-down", "scale-down-by-half.example.com", ["Deny"])
    )
    bind(policies["scale-down"], enforcement="")
    live = lib.deployment("web", replicas=10)
    entries = [
        gate.RenderedObject(
            lib.deployment("web", replicas=4), "web.yaml", operation="UPDATE", old_object=live
        ),
        gate.RenderedObject(
            lib.deployment("api", replicas=4),
            "api.yaml",
            operation="UPDATE",
            old_object=lib.deployment("api", replicas=6),
        ),
        gate.RenderedObject(lib.deployment("new", replicas=1), "new.yaml"),  # a CREATE: not matched
    ]
    result = evaluate_targets(fleet["commit"], fleet["mapping"], [(fleet["prod"], entries, "")])
    decision = result.results[0].decision
    assert [(v.object.name if v.object else "", v.message, v.language) for v in decision.violations] == [
        ("web", "scaling down from 10 to 4 is more than half", "VAP (CEL)")
    ]
    assert decision.outcome is gate.Outcome.BLOCKED


def test_a_vap_param_ref_reads_a_configmap_rendered_for_the_target(
    fleet: dict[str, Any], bind: Callable[..., PolicyBinding]
) -> None:
    binding = ll.vap_binding(
        "max-replicas",
        "max-replicas-param.example.com",
        ["Deny"],
        paramRef={"name": "replica-limits", "parameterNotFoundAction": "Deny"},
    )
    policies = _import(vap=ll.PARAM_VAP + "---\n" + binding)
    bind(policies["max-replicas"], enforcement="")
    limits = ll.config_map("replica-limits", "apps", {"maxReplicas": "4"})
    ev = evaluate(
        fleet["commit"],
        fleet["mapping"],
        fleet["prod"],
        [limits, lib.deployment("big", replicas=6), lib.deployment("small", replicas=2)],
    )
    assert _found(ev) == {("max-replicas", "VAP (CEL)", "deny", "big", "")}
    assert ev.violations.get().message == "at most 4 replicas here"
    # without the ConfigMap, parameterNotFoundAction Deny blocks every object it matches, as an error
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], [lib.deployment("small", replicas=2)])
    assert ev.decision == "blocked"
    assert [e["language"] for e in ev.errors] == ["VAP (CEL)"]
    assert "no params found" in ev.errors[0]["message"]
    # the live ConfigMap the review read counts too (the old object of an UPDATE)
    entries = [
        gate.RenderedObject(
            ll.config_map("replica-limits", "apps", {"maxReplicas": "9"}),
            "cm.yaml",
            operation="UPDATE",
            old_object=limits,
        ),
        gate.RenderedObject(lib.deployment("big", replicas=6), "big.yaml"),
    ]
    result = evaluate_targets(
        fleet["commit"], fleet["mapping"], [(fleet["prod"], entries, "")], store=False, audit=False
    )
    assert (
        result.results[0].decision.outcome is gate.Outcome.PASSED
    )  # the rendered one (9) wins over the live one


def test_queries_do_not_grow_with_the_number_of_vap_and_kyverno_policies(
    fleet: dict[str, Any], bind: Callable[..., PolicyBinding], django_assert_max_num_queries: Any
) -> None:
    def run() -> None:
        evaluate(
            fleet["commit"], fleet["mapping"], fleet["prod"], [lib.deployment("big", replicas=8, labels={})]
        )

    policies = _import(
        vap=ll.REPLICA_LIMIT_VAP + "---\n" + ll.vap_binding("b0", "replica-limit.example.com", ["Deny"]),
        kyverno=ll.REQUIRE_TEAM_KYVERNO,
    )
    for p in policies.values():
        bind(p, enforcement="")
    run()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        run()
    more = _import(
        vap=ll.REPLICA_LIMIT_VAP
        + "".join(
            "---\n" + ll.vap_binding(f"b{i}", "replica-limit.example.com", ["Deny"]) for i in range(1, 6)
        ),
        kyverno=ll.disallow_latest(),
    )
    for p in more.values():
        if p.name != "b0":
            bind(p, enforcement="")
    run()
    with django_assert_max_num_queries(len(few.captured_queries)):
        run()


def test_a_repository_policy_path_syncs_vaps_kyverno_policies_and_exceptions(
    origin: Origin, fleet: dict[str, Any]
) -> None:
    repo = fleet["repo"]
    repo.url = origin.path.as_uri()
    repo.save()
    vap = (
        ll.REPLICA_LIMIT_VAP
        + "---\n"
        + ll.vap_binding("replica-limit", "replica-limit.example.com", ["Deny"])
    )
    sha1 = origin.commit(
        {
            "policies/vap.yaml": vap,
            "policies/kyverno/require-team.yaml": ll.REQUIRE_TEAM_KYVERNO,
            "policies/kyverno/exception.yaml": ll.legacy_exception(["legacy-*"], ["check-team"]),
        }
    )
    source = PolicySource.objects.create(
        repository=repo,
        path="policies/",
        name="team-policies",
        bind_group=fleet["web"],
        bind_enforcement="warn",
    )
    outcome = sync_policy_source(source, sha1)
    assert outcome.ok, outcome.error
    assert outcome.result is not None
    assert outcome.result.reported == [
        "require-team-label: rule add-managed-by (mutate) is not applied by the gate"
    ]
    synced = {p.name: (p.style, p.current.commit_sha, p.source_id) for p in Policy.objects.all()}
    assert synced == {
        "replica-limit": ("vap", sha1, source.pk),
        "require-team-label": ("kyverno", sha1, source.pk),
    }
    assert set(PolicyBinding.objects.values_list("policy__name", "cluster_group", "enforcement")) == {
        ("replica-limit", fleet["web"].pk, "warn"),
        ("require-team-label", fleet["web"].pk, "warn"),
    }
    assert list(Waiver.objects.values_list("rule", "name_pattern", "cluster_group")) == [
        ("check-team", "legacy-*", fleet["web"].pk)
    ]
    # a commit whose CEL does not compile stores nothing and says where
    sha2 = origin.commit({"policies/vap.yaml": vap.replace("<= 5", "<=")})
    outcome = sync_policy_source(source, sha2)
    assert not outcome.ok
    assert "replica-limit: policy: spec.validations[0].expression: Syntax error" in outcome.error
    assert Policy.objects.get(name="replica-limit").current.commit_sha == sha1


def test_a_stored_version_is_compiled_once_and_shared_by_every_evaluation(
    fleet: dict[str, Any], bind: Callable[..., PolicyBinding]
) -> None:
    policies = _import(
        vap=ll.REPLICA_LIMIT_VAP + "---\n" + ll.vap_binding("b", "replica-limit.example.com", ["Deny"]),
        kyverno=ll.REQUIRE_TEAM_KYVERNO,
    )
    for p in policies.values():
        bind(p, enforcement="")
    first = build_bound_set(fleet["mapping"]).policies
    again = build_bound_set(fleet["mapping"]).policies
    assert [p.language for p in first] == ["VAP (CEL)", "Kyverno"]
    assert all(a.admission is b.admission for a, b in zip(first, again, strict=True))
    # a new version is compiled anew
    new = import_files({"k.yaml": ll.REQUIRE_TEAM_KYVERNO.replace("is required", "must be set")}).saved[0]
    assert new.version.number == 2
    changed = build_bound_set(fleet["mapping"]).policies
    assert changed[0].admission is first[0].admission
    assert changed[1].admission is not first[1].admission
