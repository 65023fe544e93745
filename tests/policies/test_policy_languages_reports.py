"""VAP and Kyverno results beside Rego's everywhere the gate answers: policy_check (text, JSON, JUnit, SARIF),
the check API, PolicyReports (both flavours), the import command and API, and refusal at save (issue 17)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

from fleet.observability import metrics
from policies.models import Policy, PolicyBinding
from policies.services.evaluation import evaluate_mapping
from policies.services.importing import import_files
from tests.factories import CommitFactory
from tests.policies import language_library as ll
from tests.policies import policy_library as lib
from tests.policies.test_policy_reports import _validate

pytestmark = pytest.mark.django_db

VAP_DOCS = (
    ll.REPLICA_LIMIT_VAP + "---\n" + ll.vap_binding("replica-limit", "replica-limit.example.com", ["Deny"])
)


@pytest.fixture
def languages(
    fleet: dict[str, Any],
    make_policy: Callable[..., Policy],
    bind: Callable[..., PolicyBinding],
    regorus_engine: Any,
) -> dict[str, Policy]:
    policies = {
        "required-labels": make_policy("required-labels", regorus_engine, **lib.spec("required-labels"))
    }
    saved = import_files({"vap.yaml": VAP_DOCS, "kyverno.yaml": ll.REQUIRE_TEAM_KYVERNO}).saved
    policies |= {r.policy.name: r.policy for r in saved}
    for policy in policies.values():
        bind(policy, enforcement="")
    return policies


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "apps.yaml"
    path.write_text(
        yaml.safe_dump_all([lib.deployment("big", replicas=8, labels={}), lib.deployment("fine")])
    )
    return path


def _check(fleet: dict[str, Any], path: Path, output: str) -> tuple[int, str]:
    out = io.StringIO()
    args = ["policy_check", "--mapping", str(fleet["mapping"].pk), "--engine", "regorus", "--output", output]
    try:
        call_command(*args, "--file", str(path), stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue()


def test_policy_check_lists_vap_kyverno_and_rego_findings_with_their_language_in_every_format(
    tmp_path: Path, fleet: dict[str, Any], languages: dict[str, Policy]
) -> None:
    path = _write(tmp_path)
    code, text = _check(fleet, path, "text")
    assert code == 1
    for line in (
        "FAIL - prod-eu-1 - apps.yaml - Deployment/apps/big - replica-limit (VAP (CEL)) - "
        "replicas must be no greater than 5, got 8",
        "FAIL - prod-eu-1 - apps.yaml - Deployment/apps/big - require-team-label (Kyverno) - "
        "validation error: ",
        "FAIL - prod-eu-1 - apps.yaml - Deployment/apps/big - required-labels/must-have-team "
        "(Rego/Gatekeeper) - ",
    ):
        assert line in text, text

    code, raw = _check(fleet, path, "json")
    body = json.loads(raw)
    prod = next(c for c in body["clusters"] if c["cluster"] == "prod-eu-1")
    assert {(f["policy"], f["language"], f["rule"]) for f in prod["failures"]} == {
        ("replica-limit", "VAP (CEL)", "validations[0]"),
        ("require-team-label", "Kyverno", "check-team"),
        ("required-labels/must-have-team", "Rego/Gatekeeper", "violation"),
    }
    assert {p["policy"]: p["language"] for p in body["policies"]} == {
        "replica-limit": "VAP (CEL)",
        "require-team-label": "Kyverno",
        "required-labels": "Rego/Gatekeeper",
    }

    _code, junit = _check(fleet, path, "junit")
    root = ET.fromstring(junit)  # noqa: S314 - our own output
    failures = {
        case.get("classname"): case.find("failure").text  # type: ignore[union-attr]
        for case in root.iter("testcase")
        if case.find("failure") is not None and case.get("name") == "Deployment/apps/big"
    }
    assert "(VAP (CEL))" in failures["replica-limit"]
    assert "(Kyverno) [check-team]" in failures["require-team-label"]

    _code, sarif = _check(fleet, path, "sarif")
    run = json.loads(sarif)["runs"][0]
    assert {r["id"]: r["properties"]["language"] for r in run["tool"]["driver"]["rules"]} == {
        "replica-limit": "VAP (CEL)",
        "require-team-label": "Kyverno",
        "required-labels": "Rego/Gatekeeper",
    }
    assert {(r["ruleId"], r["properties"]["language"], r["level"]) for r in run["results"]} >= {
        ("replica-limit", "VAP (CEL)", "error"),
        ("require-team-label", "Kyverno", "error"),
    }


def test_the_check_api_answers_with_vap_and_kyverno_findings_named(
    fleet: dict[str, Any], languages: dict[str, Policy], make_user: Any, token_client: Any
) -> None:
    client = token_client(make_user("dev", role="deployer", scope=fleet["web"]))
    manifests = yaml.safe_dump_all([lib.deployment("big", replicas=8, labels={})])
    response = client.post(
        "/api/policies/check/", {"mapping": fleet["mapping"].pk, "manifests": manifests}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["blocked"] is True
    failures = {
        (f["policy"], f["language"]) for m in body["mappings"] for c in m["clusters"] for f in c["failures"]
    }
    assert failures == {
        ("replica-limit", "VAP (CEL)"),
        ("require-team-label", "Kyverno"),
        ("required-labels/must-have-team", "Rego/Gatekeeper"),
    }
    sarif = client.post(
        "/api/policies/check/?format=sarif",
        {"mapping": fleet["mapping"].pk, "manifests": manifests},
        format="json",
    )
    assert sarif.status_code == 200
    languages_seen = {
        r["properties"].get("language") for r in json.loads(sarif.content)["runs"][0]["results"]
    }
    assert {"VAP (CEL)", "Kyverno", "Rego/Gatekeeper"} <= languages_seen


@pytest.mark.parametrize("fmt", ["wgpolicyk8s", "openreports"])
def test_policy_reports_name_kyverno_and_vap_as_their_source_with_policy_and_rule(
    fmt: str,
    fleet: dict[str, Any],
    languages: dict[str, Policy],
    store_render: Any,
    make_user: Any,
    token_client: Any,
) -> None:
    objects = [lib.deployment("big", replicas=8, labels={}), lib.deployment("fine")]
    store_render(fleet["commit"], fleet["mapping"], [fleet["prod"]], objects, "apps/web/all.yaml")
    evaluate_mapping(fleet["commit"], fleet["mapping"])
    client = token_client(make_user("vera", role="viewer", scope=fleet["web"]))
    response = client.get(f"/api/policy-reports/{fleet['prod'].pk}/?format={fmt}")
    assert response.status_code == 200, response.content
    results = []
    for item in response.json()["items"]:
        _validate(item)
        results += item["results"]
    failed = {
        (r["source"], r["policy"], r.get("rule"), r["properties"].get("language"))
        for r in results
        if r["result"] == "fail"
    }
    assert failed == {
        ("ValidatingAdmissionPolicy", "replica-limit", "validations[0]", "VAP (CEL)"),
        ("kyverno", "require-team-label", "check-team", "Kyverno"),
        ("fleetgate", "required-labels", "must-have-team", "Rego/Gatekeeper"),
    }
    # every language reports its passes: Rego per (policy, object), VAP and Kyverno per rule that matched
    # the object in the gate and found nothing
    passed = {
        (r["source"], r["policy"], r.get("rule"), r["resources"][0]["name"], r["properties"].get("language"))
        for r in results
        if r["result"] == "pass"
    }
    assert passed == {
        ("ValidatingAdmissionPolicy", "replica-limit", "validations[0]", "fine", "VAP (CEL)"),
        ("kyverno", "require-team-label", "check-team", "fine", "Kyverno"),
        ("fleetgate", "required-labels", "must-have-team", "fine", None),
    }


def test_metrics_count_findings_by_language(
    fleet: dict[str, Any], languages: dict[str, Policy], store_render: Any
) -> None:
    def count(language: str) -> float:
        return metrics.GATE_FINDINGS.labels(language=language, effect="deny")._value.get()

    before = {lang: count(lang) for lang in ("VAP (CEL)", "Kyverno", "Rego/Gatekeeper")}
    store_render(
        fleet["commit"],
        fleet["mapping"],
        [fleet["prod"]],
        [lib.deployment("big", replicas=8, labels={})],
        "a.yaml",
    )
    evaluate_mapping(fleet["commit"], fleet["mapping"])
    assert {lang: count(lang) - n for lang, n in before.items()} == {
        "VAP (CEL)": 1.0,
        "Kyverno": 1.0,
        "Rego/Gatekeeper": 1.0,
    }


def test_import_policies_reports_what_the_gate_does_not_apply_and_the_waivers_it_made(
    tmp_path: Path, fleet: dict[str, Any]
) -> None:
    (tmp_path / "vap.yaml").write_text(
        VAP_DOCS + "---\n" + ll.SCALE_DOWN_VAP  # the second VAP has no binding
    )
    (tmp_path / "kyverno.yaml").write_text(ll.REQUIRE_TEAM_KYVERNO)
    (tmp_path / "exception.yaml").write_text(ll.legacy_exception(["legacy-*"], ["check-team"]))
    out = io.StringIO()
    call_command("import_policies", str(tmp_path), "--group", "web", "--enforcement", "deny", stdout=out)
    text = out.getvalue()
    assert "replica-limit (VAP (CEL) ValidatingAdmissionPolicy): v1 created" in text
    assert "require-team-label (Kyverno ClusterPolicy): v1 created" in text
    assert "bound replica-limit to web (deny)" in text
    assert "of require-team-label rule check-team for Deployment/legacy-* until " in text
    assert "reported: require-team-label: rule add-managed-by (mutate) is not applied by the gate" in text
    assert (
        "reported: vap.yaml: ValidatingAdmissionPolicy scale-down-by-half.example.com has no "
        "ValidatingAdmissionPolicyBinding: not imported" in text
    )
    assert not Policy.objects.filter(name__startswith="scale-down").exists()


def test_the_import_api_takes_vap_and_kyverno_documents_and_exceptions_need_waiver_rights(
    fleet: dict[str, Any], make_user: Any, token_client: Any
) -> None:
    documents = VAP_DOCS + "---\n" + ll.REQUIRE_TEAM_KYVERNO
    admin = token_client(make_user("root", role="policy-admin"))
    response = admin.post("/api/policies/import/", {"documents": documents}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert {(p["name"], p["style"]) for p in body["policies"]} == {
        ("replica-limit", "vap"),
        ("require-team-label", "kyverno"),
    }
    assert body["reported"] == ["require-team-label: rule add-managed-by (mutate) is not applied by the gate"]
    assert body["waivers"] == []
    detail = admin.get(f"/api/policies/{Policy.objects.get(name='replica-limit').pk}/").json()
    assert detail["language"] == "VAP (CEL)"
    assert "replica-limit.example.com" in detail["policy"]
    assert "replica-limit" in detail["binding"]

    exception = ll.legacy_exception(["legacy-*"], ["check-team"])
    # a policy author on all clusters without waiver rights in the group may not turn exceptions into waivers
    author = make_user("author", role="policy-admin", scope=fleet["other"])
    from fleet.access.models import RoleBinding

    RoleBinding.objects.create(user=author, role="viewer", scope=None)
    denied = token_client(author).post(
        "/api/policies/import/",
        {"documents": ll.REQUIRE_TEAM_KYVERNO + "---\n" + exception, "cluster_group": fleet["web"].pk},
        format="json",
    )
    assert denied.status_code == 403, denied.content
    made = admin.post(
        "/api/policies/import/",
        {"documents": exception, "cluster_group": fleet["web"].pk},
        format="json",
    )
    assert made.status_code == 201, made.content
    assert [(w["policy"], w["rule"], w["kind"], w["name_pattern"]) for w in made.json()["waivers"]] == [
        ("require-team-label", "check-team", "Deployment", "legacy-*")
    ]
    refused = admin.post(
        "/api/policies/import/",
        {"documents": exception.replace("legacy-*", "legacy-[ab]")},
        format="json",
    )
    assert refused.status_code == 400
    assert "cannot be expressed exactly as waivers" in json.dumps(refused.json())


@pytest.mark.parametrize(
    ("style", "content", "field", "says"),
    [
        (
            "vap",
            {
                "policy": ll.REPLICA_LIMIT_VAP.replace(
                    "object.spec.replicas <= 5", "object.spec.replicas <="
                ),
                "binding": ll.vap_binding("b", "replica-limit.example.com", ["Deny"]),
            },
            "policy",
            "spec.validations[0].expression: Syntax error",
        ),
        (
            "vap",
            {
                "policy": ll.REPLICA_LIMIT_VAP,
                "binding": ll.vap_binding("b", "replica-limit.example.com", ["Nope"]),
            },
            "binding",
            "spec.validationActions",
        ),
        (
            "kyverno",
            {
                "policy": ll.REQUIRE_TEAM_KYVERNO.replace(
                    "        pattern:\n", "        pattern: [1]\n        p2:\n"
                )
            },
            "policy",
            "spec.rules[0].validate",
        ),
    ],
)
def test_a_cel_error_or_malformed_pattern_is_refused_at_save_with_the_field_named(
    style: str, content: dict[str, str], field: str, says: str, make_user: Any, token_client: Any
) -> None:
    admin = token_client(make_user("root", role="policy-admin"))
    response = admin.post("/api/policies/", {"name": "broken", "style": style, **content}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body, body
    assert says in json.dumps(body)
    assert not Policy.objects.filter(name="broken").exists()


TWO_RULES_KYVERNO = """apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: deployment-rules
spec:
  validationFailureAction: Enforce
  rules:
    - name: check-team
      match:
        any:
          - resources:
              kinds: ["Deployment"]
      validate:
        message: "team is required"
        pattern:
          metadata:
            labels:
              team: "?*"
    - name: replicas-in-prod
      match:
        any:
          - resources:
              kinds: ["Deployment"]
      preconditions:
        all:
          - key: "{{ request.object.metadata.labels.env || '' }}"
            operator: Equals
            value: prod
      validate:
        message: "prod needs 2 replicas"
        deny:
          conditions:
            any:
              - key: "{{ request.object.spec.replicas }}"
                operator: LessThan
                value: 2
"""


def _report_results(client: Any, cluster: Any) -> list[dict[str, Any]]:
    response = client.get(f"/api/policy-reports/{cluster.pk}/")
    assert response.status_code == 200, response.content
    results: list[dict[str, Any]] = []
    for item in response.json()["items"]:
        _validate(item)
        results += item["results"]
    return results


def test_vap_and_kyverno_pass_results_are_per_policy_rule_and_object_with_constant_queries(
    fleet: dict[str, Any],
    store_render: Any,
    bind: Any,
    make_user: Any,
    token_client: Any,
    django_assert_max_num_queries: Any,
) -> None:
    """A pass is a rule that matched the object in the gate and found nothing: not a rule whose preconditions
    were not met, not an object the policy does not match, not a failed (or waived) rule; and the report's
    queries do not grow with the objects or the passes."""
    saved = import_files({"vap.yaml": VAP_DOCS, "kyverno.yaml": TWO_RULES_KYVERNO}).saved
    for r in saved:
        bind(r.policy, enforcement="")
    client = token_client(make_user("vera", role="viewer", scope=fleet["web"]))

    def render(objects: list[dict[str, Any]], commit: Any = fleet["commit"]) -> list[dict[str, Any]]:
        store_render(commit, fleet["mapping"], [fleet["prod"]], objects, "apps/web/all.yaml")
        evaluate_mapping(commit, fleet["mapping"])
        return _report_results(client, fleet["prod"])

    prod = lib.deployment("prod-web", replicas=3, labels={"team": "web", "env": "prod"})
    results = render(
        [
            lib.deployment("plain"),  # no env label: replicas-in-prod is skipped by its preconditions
            prod,
            lib.deployment("tiny", replicas=1, labels={"env": "prod"}),  # fails both Kyverno rules
            ll.config_map("settings", "apps", {"a": "1"}),  # matched by no policy
        ]
    )
    passed = {
        (r["source"], r["policy"], r["rule"], r["resources"][0]["name"])
        for r in results
        if r["result"] == "pass" and r["source"] != "fleetgate"
    }
    assert passed == {
        ("ValidatingAdmissionPolicy", "replica-limit", "validations[0]", "plain"),
        ("ValidatingAdmissionPolicy", "replica-limit", "validations[0]", "prod-web"),
        ("ValidatingAdmissionPolicy", "replica-limit", "validations[0]", "tiny"),
        ("kyverno", "deployment-rules", "check-team", "plain"),
        ("kyverno", "deployment-rules", "check-team", "prod-web"),
        ("kyverno", "deployment-rules", "replicas-in-prod", "prod-web"),
    }
    failed = {(r["policy"], r["rule"], r["resources"][0]["name"]) for r in results if r["result"] == "fail"}
    assert failed == {
        ("deployment-rules", "check-team", "tiny"),
        ("deployment-rules", "replicas-in-prod", "tiny"),
    }
    for r in results:
        if r["result"] == "pass" and r["source"] != "fleetgate":
            assert r["properties"]["language"] in ("VAP (CEL)", "Kyverno")
            assert r["resources"][0] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "namespace": "apps",
                "name": r["resources"][0]["name"],
            }
    summary = {
        s: n
        for item in client.get(f"/api/policy-reports/{fleet['prod'].pk}/").json()["items"]
        for s, n in item["summary"].items()
        if s == "pass"
    }
    assert summary["pass"] == 6

    # the queries of a report do not depend on how many objects passed
    with django_assert_max_num_queries(12) as few:
        _report_results(client, fleet["prod"])
    baseline = len(few)
    many_objects = [lib.deployment(f"web-{i}", labels={"team": "web", "env": "prod"}) for i in range(40)]
    results = render(many_objects, CommitFactory(repository=fleet["commit"].repository))
    assert sum(1 for r in results if r["result"] == "pass" and r["source"] != "fleetgate") == 40 * 3
    with django_assert_max_num_queries(baseline):
        _report_results(client, fleet["prod"])
