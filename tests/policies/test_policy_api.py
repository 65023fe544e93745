"""The policy API: saving compiles and tests (HTTP 400 with the engine's message and line), versions,
import, check before merge, evaluations and violations. The configured engine (regorus by default)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from fleet.audit.models import AuditEvent
from policies.models import Policy, PolicyBinding, PolicyVersion, Waiver
from policies.services.evaluation import evaluate
from tests.policies import policy_library as lib

pytestmark = pytest.mark.django_db

BROKEN = """package main

deny[msg] {
  input.kind == "Deployment"
  msg := sprintf("bad %s", [input.metadata.name]
}
"""

UNSAFE = """package main

deny[msg] {
  input.kind == "Deployment"
  msg := concat("", [undefined_var])
}
"""


def _conftest_body(name: str = "no-latest", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "style": "conftest",
        "modules": [{"path": "latest.rego", "source": lib.NO_LATEST}],
        "test_modules": [{"path": "latest_test.rego", "source": lib.NO_LATEST_TEST}],
        **extra,
    }


def test_create_policy_compiles_runs_tests_and_versions(admin_client: Any) -> None:
    response = admin_client.post("/api/policies/", _conftest_body(description="no :latest"), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["version"] == 1
    assert body["test_status"] == "passed"
    assert sorted(t["name"] for t in body["test_results"]) == [
        "data.main.test_latest_denied",
        "data.main.test_pinned_allowed",
    ]
    assert body["modules"][0]["path"] == "latest.rego"
    assert [v["number"] for v in body["versions"]] == [1]
    assert body["versions"][0]["created_by_name"] == "root"
    pk = body["id"]

    # A change of the definition makes version 2; version 1 stays as it was.
    v2_source = lib.NO_LATEST.replace("uses the :latest tag", "must pin its image")
    response = admin_client.patch(
        f"/api/policies/{pk}/", {"modules": [{"path": "latest.rego", "source": v2_source}]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2
    assert [v["number"] for v in response.json()["versions"]] == [2, 1]
    v1 = PolicyVersion.objects.get(policy_id=pk, number=1)
    assert v1.content["modules"][0]["source"] == lib.NO_LATEST
    # Saving the same content again does not make a version.
    response = admin_client.patch(
        f"/api/policies/{pk}/", {"modules": [{"path": "latest.rego", "source": v2_source}]}, format="json"
    )
    assert response.json()["version"] == 2
    # Versions are immutable.
    v1.content = {}
    with pytest.raises(DjangoValidationError):
        v1.save()
    actions = list(AuditEvent.objects.filter(target_type="policy").values_list("action", flat=True))
    assert actions.count("policy.create") == 1
    assert actions.count("policy.version") == 1


def test_invalid_rego_is_refused_with_the_engine_message_and_line(admin_client: Any) -> None:
    body = {"name": "broken", "style": "conftest", "modules": [{"path": "broken.rego", "source": BROKEN}]}
    response = admin_client.post("/api/policies/", body, format="json")
    assert response.status_code == 400
    errors = response.json()["compile_errors"]
    assert errors[0]["path"] == "broken.rego"
    assert errors[0]["line"] in (5, 6)
    assert errors[0]["message"]
    assert "does not compile" in response.json()["modules"][0]
    assert not Policy.objects.filter(name="broken").exists()

    body["modules"][0]["source"] = UNSAFE
    response = admin_client.post("/api/policies/", body, format="json")
    assert response.status_code == 400
    assert response.json()["compile_errors"][0]["line"] == 5


def test_malformed_template_yaml_is_refused(admin_client: Any) -> None:
    body = {"name": "bad-template", "style": "gatekeeper", "template": "kind: ConstraintTemplate\nspec: [\n"}
    response = admin_client.post("/api/policies/", body, format="json")
    assert response.status_code == 400
    assert "invalid YAML" in response.json()["template"][0]
    assert response.json()["compile_errors"][0]["line"] >= 2

    body = {
        "name": "bad-constraint",
        "style": "gatekeeper",
        "template": lib.REQUIRED_LABELS_TEMPLATE,
        "constraints": [lib.REQUIRED_LABELS_CONSTRAINT.replace('labels: ["team"]', "labels: team")],
    }
    response = admin_client.post("/api/policies/", body, format="json")
    assert response.status_code == 400
    assert "spec.parameters.labels" in response.json()["constraints"][0]


def test_failing_unit_tests_refuse_unless_allowed(admin_client: Any) -> None:
    body = _conftest_body(test_modules=[{"path": "t_test.rego", "source": lib.NO_LATEST_FAILING_TEST}])
    response = admin_client.post("/api/policies/", body, format="json")
    assert response.status_code == 400
    assert response.json()["tests"] == [
        {
            "name": "data.main.test_wrong_expectation",
            "passed": False,
            "error": response.json()["tests"][0]["error"],
        }
    ]
    response = admin_client.post("/api/policies/", {**body, "allow_failing_tests": True}, format="json")
    assert response.status_code == 201
    assert response.json()["test_status"] == "failed"
    assert response.json()["test_results"][0]["passed"] is False


def test_import_template_and_constraints_multi_document(admin_client: Any, make_user: Any) -> None:
    documents = "---\n".join([lib.REQUIRED_LABELS_TEMPLATE, lib.REQUIRED_LABELS_CONSTRAINT])
    response = admin_client.post(
        "/api/policies/import/", {"documents": documents, "enforcement": "warn"}, format="json"
    )
    assert response.status_code == 201, response.content
    (imported,) = response.json()["policies"]
    assert imported["name"] == "k8srequiredlabels"
    assert imported["kind"] == "K8sRequiredLabels"
    assert response.json()["bindings"][0]["enforcement"] == "warn"
    policy = Policy.objects.get(name="k8srequiredlabels")
    assert len(policy.current.content["constraints"]) == 1

    # A second constraint of that kind, alone, is added to the same policy as a new version.
    second = lib.REQUIRED_LABELS_CONSTRAINT.replace("must-have-team", "must-have-owner").replace(
        "team", "owner"
    )
    response = admin_client.post("/api/policies/import/", {"documents": second}, format="json")
    assert response.status_code == 201, response.content
    policy.refresh_from_db()
    assert policy.current.number == 2
    names = [yaml.safe_load(c)["metadata"]["name"] for c in policy.current.content["constraints"]]
    assert names == ["must-have-team", "must-have-owner"]


def test_import_conftest_directory_as_json_and_multipart(admin_client: Any, fleet: dict[str, Any]) -> None:
    files = {
        "policy/hostnet.rego": lib.HOST_NETWORK,
        "policy/latest.rego": lib.NO_LATEST,
        "policy/latest_test.rego": lib.NO_LATEST_TEST,
        "data/allowed.yaml": yaml.safe_dump(lib.HOST_NETWORK_DATA),
        "README.md": "ignored",
    }
    response = admin_client.post(
        "/api/policies/import/",
        {"files": files, "name": "platform", "cluster_group": fleet["web"].pk, "enforcement": "deny"},
        format="json",
    )
    assert response.status_code == 201, response.content
    (imported,) = response.json()["policies"]
    assert imported["name"] == "platform"
    assert [t["passed"] for t in imported["tests"]] == [True, True]
    assert response.json()["ignored"] == ["README.md"]
    policy = Policy.objects.get(name="platform")
    assert policy.current.content["data"] == lib.HOST_NETWORK_DATA
    assert [m["path"] for m in policy.current.content["test_modules"]] == ["policy/latest_test.rego"]
    assert PolicyBinding.objects.get(policy=policy).cluster_group == fleet["web"]
    # The imported policy works, with its data file (the exception reads data.allowed).
    ev = evaluate(
        fleet["commit"],
        fleet["mapping"],
        fleet["prod"],
        [lib.deployment("node-agent", host_network=True), lib.deployment("web", host_network=True)],
    )
    assert [v.name for v in ev.violations.all()] == ["web"]

    uploads = {
        "lib/privileged.yaml": SimpleUploadedFile("privileged.yaml", lib.PRIVILEGED_TEMPLATE.encode()),
        "lib/constraint.yaml": SimpleUploadedFile(
            "constraint.yaml", lib.constraint("K8sPrivileged", "no-privileged").encode()
        ),
    }
    response = admin_client.post("/api/policies/import/", uploads, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["policies"][0]["name"] == "k8sprivileged"


def test_import_of_broken_rego_stores_nothing(admin_client: Any) -> None:
    files = {"a.rego": lib.NO_LATEST, "b.rego": BROKEN.replace("package main", "package other")}
    response = admin_client.post("/api/policies/import/", {"files": files, "name": "mixed"}, format="json")
    assert response.status_code == 400
    assert response.json()["compile_errors"][0]["path"] == "b.rego"
    assert not Policy.objects.exists()


def test_check_api_returns_conftest_shaped_decisions_per_cluster(
    admin_client: Any, fleet: dict[str, Any], make_policy: Any, bind: Any
) -> None:
    bind(
        make_policy(
            "prod-replicas", style="conftest", modules=[{"path": "r.rego", "source": lib.PROD_REPLICAS}]
        )
    )
    bind(
        make_policy("no-latest", style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}]),
        None,
        "warn",
    )
    manifests = yaml.safe_dump_all(
        [lib.deployment("web", replicas=1, image="nginx:latest"), lib.deployment("api")]
    )
    response = admin_client.post(
        "/api/policies/check/", {"mapping": fleet["mapping"].pk, "manifests": manifests}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["blocked"] is True
    (mapping,) = body["mappings"]
    clusters = {c["cluster"]: c for c in mapping["clusters"]}
    prod, staging = clusters["prod-eu-1"], clusters["staging-eu-1"]
    assert prod["decision"] == "blocked"
    assert [f["msg"] for f in prod["failures"]] == [
        "web needs at least 2 replicas on production cluster prod-eu-1"
    ]
    assert prod["failures"][0]["filename"] == "manifests.yaml"
    assert [w["msg"] for w in prod["warnings"]] == ["web: container main uses the :latest tag"]
    assert prod["summary"] == "4 tests, 2 passed, 1 warnings, 1 failures, 0 exceptions"
    assert staging["decision"] == "warned"
    assert staging["summary"] == "4 tests, 3 passed, 1 warnings, 0 failures, 0 exceptions"
    assert mapping["summary"] == "8 tests, 5 passed, 2 warnings, 1 failures, 0 exceptions"
    # Not stored; audited once.
    assert not fleet["mapping"].evaluations.exists()
    assert AuditEvent.objects.filter(action="policy.check").count() == 1

    bad = admin_client.post(
        "/api/policies/check/", {"mapping": fleet["mapping"].pk, "manifests": "kind: [\n"}, format="json"
    )
    assert bad.status_code == 400
    assert "manifests" in bad.json()


def test_evaluations_and_violations_api_with_filters(
    admin_client: Any, fleet: dict[str, Any], make_policy: Any, bind: Any
) -> None:
    policy = make_policy("no-latest", style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}])
    bind(policy)
    waiver = Waiver.objects.create(
        policy=policy,
        name_pattern="legacy-*",
        expires_at=timezone.now() + timedelta(days=3),
        justification="vendor",
        author_name="alice",
    )
    objects = [lib.deployment("legacy-a", image="a:latest"), lib.deployment("web", image="b:latest")]
    prod_ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], objects)
    evaluate(fleet["commit"], fleet["mapping"], fleet["staging"], [lib.deployment("ok")])

    listed = admin_client.get("/api/evaluations/", {"decision": "blocked"}).json()
    assert [e["id"] for e in listed["results"]] == [prod_ev.pk]
    assert listed["results"][0]["cluster_name"] == "prod-eu-1"
    assert admin_client.get("/api/evaluations/", {"cluster": fleet["staging"].pk}).json()["count"] == 1
    assert admin_client.get("/api/evaluations/", {"policy": policy.pk}).json()["count"] == 1
    assert admin_client.get("/api/evaluations/", {"commit": fleet["commit"].pk}).json()["count"] == 2

    detail = admin_client.get(f"/api/evaluations/{prod_ev.pk}/").json()
    by_name = {v["name"]: v for v in detail["violations"]}
    assert by_name["legacy-a"]["waiver"]["id"] == waiver.pk
    assert by_name["legacy-a"]["waiver"]["justification"] == "vendor"
    assert by_name["web"]["waiver"] is None

    waived = admin_client.get("/api/violations/", {"waived": "true"}).json()
    assert [v["name"] for v in waived["results"]] == ["legacy-a"]
    assert (
        admin_client.get("/api/violations/", {"policy": policy.pk, "cluster": fleet["prod"].pk}).json()[
            "count"
        ]
        == 2
    )
    assert admin_client.post("/api/evaluations/", {}, format="json").status_code == 405


def test_waiver_create_shows_author_validates_expiry_and_expire_is_audited(
    admin_client: Any, make_policy: Any, fleet: dict[str, Any]
) -> None:
    policy = make_policy("no-latest", style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}])
    body = {
        "policy": policy.pk,
        "kind": "Deployment",
        "name_pattern": "legacy-*",
        "cluster_group": fleet["web"].pk,
        "expires_at": (timezone.now() + timedelta(days=30)).isoformat(),
        "justification": "vendor image, ticket OPS-1",
    }
    response = admin_client.post("/api/waivers/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["author_name"] == "root"
    assert response.json()["active"] is True
    pk = response.json()["id"]

    for bad, field in (
        ({"justification": ""}, "justification"),
        ({"expires_at": (timezone.now() - timedelta(minutes=1)).isoformat()}, "expires_at"),
        ({"expires_at": (timezone.now() + timedelta(days=91)).isoformat()}, "expires_at"),
    ):
        refused = admin_client.post("/api/waivers/", {**body, **bad}, format="json")
        assert refused.status_code == 400
        assert field in refused.json()
    missing = {k: v for k, v in body.items() if k != "expires_at"}
    assert "expires_at" in admin_client.post("/api/waivers/", missing, format="json").json()

    expired = admin_client.post(f"/api/waivers/{pk}/expire/")
    assert expired.status_code == 200
    assert expired.json()["active"] is False
    actions = set(AuditEvent.objects.filter(target_type="waiver").values_list("action", flat=True))
    assert {"waiver.create", "waiver.expire"} <= actions
    assert admin_client.delete(f"/api/waivers/{pk}/").status_code == 204
    assert AuditEvent.objects.filter(action="waiver.delete").exists()


def test_engine_unavailable_on_save_is_503_and_stores_nothing(admin_client: Any, monkeypatch: Any) -> None:
    from policies.engine.opa_server import free_port

    monkeypatch.setattr("django.conf.settings.FLEETGATE_REGO_ENGINE", "opa")
    monkeypatch.setattr("django.conf.settings.FLEETGATE_OPA_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr("django.conf.settings.FLEETGATE_REGO_TIMEOUT", "2")
    response = admin_client.post("/api/policies/", _conftest_body(), format="json")
    assert response.status_code == 503
    assert not Policy.objects.exists()


def test_deleting_a_policy_removes_its_versions_bindings_and_keeps_results(
    admin_client: Any, fleet: dict[str, Any], make_policy: Any, bind: Any
) -> None:
    policy = make_policy("no-latest", style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}])
    binding = bind(policy)
    binding.pinned_version = policy.current
    binding.save()
    ev = evaluate(fleet["commit"], fleet["mapping"], fleet["prod"], [lib.deployment("x", image="a:latest")])
    assert admin_client.delete(f"/api/policies/{policy.pk}/").status_code == 204
    assert not PolicyVersion.objects.exists()
    assert not PolicyBinding.objects.exists()
    violation = ev.violations.get()
    assert violation.policy is None
    assert violation.policy_name == "no-latest"
    assert AuditEvent.objects.filter(action="policy.delete").exists()
