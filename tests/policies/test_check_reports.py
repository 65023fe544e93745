"""policy_check --output junit|sarif|json and the check API in the same formats (issue 16).

JUnit: one testsuite per cluster, one testcase per (policy, object), failures for blocking denies, skipped
for warnings and excused findings, errors for engine errors, as GitLab/Jenkins/GitHub reporters read it.
SARIF: checked against the structure of the SARIF 2.1.0 schema, re-typed below from the OASIS schema
(sarif-schema-2.1.0.json: sarifLog, run, toolComponent, reportingDescriptor, result, location,
physicalLocation, artifactLocation, region, suppression), with the objects' files and lines."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import jsonschema
import pytest
import yaml
from django.core.management import call_command

from clusters.models import Cluster
from policies.engine import RegoEngine
from policies.engine.opa_server import free_port
from tests.policies import policy_library as lib
from tests.sources.origin import Origin

pytestmark = pytest.mark.django_db

# ----------------------------------------------------------------------------- SARIF 2.1.0, re-typed
_MESSAGE = {
    "type": "object",
    "anyOf": [{"required": ["text"]}, {"required": ["id"]}],
    "properties": {"text": {"type": "string"}, "markdown": {"type": "string"}, "id": {"type": "string"}},
}
_PROPERTY_BAG = {"type": "object"}
_REGION = {
    "type": "object",
    "properties": {
        "startLine": {"type": "integer", "minimum": 1},
        "startColumn": {"type": "integer", "minimum": 1},
        "endLine": {"type": "integer", "minimum": 1},
        "endColumn": {"type": "integer", "minimum": 1},
    },
}
_LOCATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": -1},
        "physicalLocation": {
            "type": "object",
            "additionalProperties": False,
            "anyOf": [{"required": ["address"]}, {"required": ["artifactLocation"]}],
            "properties": {
                "address": {"type": "object"},
                "artifactLocation": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "uri": {"type": "string", "format": "uri-reference"},
                        "uriBaseId": {"type": "string"},
                        "index": {"type": "integer", "minimum": -1},
                        "description": _MESSAGE,
                        "properties": _PROPERTY_BAG,
                    },
                },
                "region": _REGION,
                "contextRegion": _REGION,
                "properties": _PROPERTY_BAG,
            },
        },
        "logicalLocations": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "index": {"type": "integer", "minimum": -1},
                    "fullyQualifiedName": {"type": "string"},
                    "decoratedName": {"type": "string"},
                    "parentIndex": {"type": "integer", "minimum": -1},
                    "kind": {"type": "string"},
                    "properties": _PROPERTY_BAG,
                },
            },
        },
        "message": _MESSAGE,
        "properties": _PROPERTY_BAG,
    },
}
_RESULT = {
    "type": "object",
    "required": ["message"],
    "additionalProperties": False,
    "properties": {
        "ruleId": {"type": "string"},
        "ruleIndex": {"type": "integer", "minimum": -1},
        "kind": {"enum": ["notApplicable", "pass", "fail", "review", "open", "informational"]},
        "level": {"enum": ["none", "note", "warning", "error"]},
        "message": _MESSAGE,
        "locations": {"type": "array", "items": _LOCATION},
        "suppressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind"],
                "additionalProperties": False,
                "properties": {
                    "guid": {"type": "string"},
                    "kind": {"enum": ["inSource", "external"]},
                    "status": {"enum": ["accepted", "underReview", "rejected"]},
                    "justification": {"type": "string"},
                    "location": _LOCATION,
                    "properties": _PROPERTY_BAG,
                },
            },
        },
        "properties": _PROPERTY_BAG,
    },
}
_RULE = {
    "type": "object",
    "required": ["id"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "shortDescription": _MESSAGE,
        "fullDescription": _MESSAGE,
        "helpUri": {"type": "string", "format": "uri"},
        "properties": _PROPERTY_BAG,
    },
}
SARIF = {
    "type": "object",
    "required": ["version", "runs"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"enum": ["2.1.0"]},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["tool"],
                "additionalProperties": False,
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "version": {"type": "string"},
                                    "informationUri": {"type": "string", "format": "uri"},
                                    "rules": {"type": "array", "items": _RULE},
                                },
                            }
                        },
                    },
                    "automationDetails": {"type": "object", "properties": {"id": {"type": "string"}}},
                    "results": {"type": "array", "items": _RESULT},
                    "properties": _PROPERTY_BAG,
                },
            },
        },
    },
}

# ----------------------------------------------------------------------------- the fleet and the files


@pytest.fixture
def policies(
    fleet: dict[str, Any], make_policy: Any, bind: Any, waive_legacy: Any, regorus_engine: RegoEngine
) -> dict[str, Any]:
    names = ("no-latest", "host-network", "required-labels", "numbers")
    made = {name: make_policy(name, regorus_engine, **lib.spec(name)) for name in names}
    bind(made["no-latest"], fleet["web"], "warn")
    for name in ("host-network", "required-labels", "numbers"):
        bind(made[name])
    waive_legacy(made["required-labels"], fleet["web"])
    return made


def _files(tmp_path: Path) -> tuple[Path, Path]:
    apps = tmp_path / "apps.yaml"
    apps.write_text(
        yaml.safe_dump_all(
            [
                lib.deployment("web"),
                lib.deployment("latest", image="nginx:latest"),
                lib.deployment("unlabelled", labels={}),
                lib.deployment("legacy-app", labels={}),
                lib.deployment("node-agent", host_network=True),  # the policy's own exception
            ]
        )
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\n  namespace: apps\n"
        "  annotations: {example.com/n: not-a-number}\n"
    )
    return apps, config


def _check(fleet: dict[str, Any], files: tuple[Path, ...], output: str) -> tuple[int, str]:
    out = io.StringIO()
    args = ["policy_check", "--mapping", str(fleet["mapping"].pk), "--engine", "regorus", "--output", output]
    for f in files:
        args += ["--file", str(f)]
    try:
        call_command(*args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue()


def _doc_lines(path: Path) -> list[int]:
    """The line each document of a YAML file starts on (what SARIF regions must say)."""
    lines, start = [], 1
    for i, text in enumerate(path.read_text().splitlines(), start=1):
        if text == "---":
            lines.append(start)
            start = i + 1
    lines.append(start)
    return lines


def test_junit_one_suite_per_cluster_one_case_per_policy_and_object(
    tmp_path: Path, fleet: dict[str, Any], policies: dict[str, Any]
) -> None:
    apps, config = _files(tmp_path)
    code, text = _check(fleet, (apps, config), "junit")
    assert code == 1  # exit codes as before: blocked
    root = ET.fromstring(text)  # noqa: S314 - our own output
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"prod-eu-1", "staging-eu-1"}
    prod = suites["prod-eu-1"]
    cases = {(c.get("classname"), c.get("name")): c for c in prod.findall("testcase")}
    objects = [
        "Deployment/apps/web",
        "Deployment/apps/latest",
        "Deployment/apps/unlabelled",
        "Deployment/apps/legacy-app",
        "Deployment/apps/node-agent",
        "ConfigMap/apps/n",
    ]
    names = ["no-latest", "host-network", "required-labels", "numbers"]
    assert {(p, o) for p in names for o in objects} | {("numbers", "engine")} == set(cases)
    assert cases[("required-labels", "Deployment/apps/web")].get("file") == "apps.yaml"
    assert cases[("required-labels", "ConfigMap/apps/n")].get("file") == "config.yaml"

    def outcome(case: ET.Element) -> str:
        children = [c.tag for c in case if c.tag in ("failure", "skipped", "error")]
        return children[0] if children else "passed"

    assert outcome(cases[("required-labels", "Deployment/apps/unlabelled")]) == "failure"
    failure = cases[("required-labels", "Deployment/apps/unlabelled")].find("failure")
    assert failure is not None and "missing_labels" not in (failure.get("message") or "")
    assert "you must provide labels" in (failure.get("message") or "")
    waived = cases[("required-labels", "Deployment/apps/legacy-app")]
    assert outcome(waived) == "skipped"
    assert "WAIVED" in (waived.findtext("system-out") or "")
    excepted = cases[("host-network", "Deployment/apps/node-agent")]
    assert outcome(excepted) == "skipped"
    assert (
        'EXCP host-network (Rego/conftest) [deny_host_network]: data.main.exception[_][_] == "host_network"'
        in (excepted.findtext("system-out") or "")
    )
    warned = cases[("no-latest", "Deployment/apps/latest")]
    assert outcome(warned) == "skipped"
    assert (warned.findtext("system-out") or "").startswith("WARN no-latest")
    assert outcome(cases[("numbers", "engine")]) == "error"
    # a policy that did not run has no verdict on any object: never a pass
    not_run = cases[("numbers", "Deployment/apps/web")].find("skipped")
    assert not_run is not None and (not_run.get("message") or "").startswith("not evaluated: engine error")
    assert outcome(cases[("no-latest", "Deployment/apps/web")]) == "passed"
    counts = {k: int(prod.get(k) or 0) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": 25, "failures": 1, "errors": 1, "skipped": 3 + 6}
    assert int(root.get("tests") or 0) == sum(int(s.get("tests") or 0) for s in suites.values())
    props = {p.get("name"): p.get("value") for p in prod.iter("property")}
    assert props["decision"] == "blocked"


def test_sarif_is_valid_with_rules_per_policy_and_file_lines(
    tmp_path: Path, fleet: dict[str, Any], policies: dict[str, Any]
) -> None:
    apps, config = _files(tmp_path)
    code, text = _check(fleet, (apps, config), "sarif")
    assert code == 1
    log = json.loads(text)
    jsonschema.Draft7Validator(SARIF, format_checker=jsonschema.FormatChecker()).validate(log)
    run = log["runs"][0]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert sorted(rules) == ["host-network", "no-latest", "numbers", "required-labels"]
    prod = [r for r in run["results"] if r["properties"]["cluster"] == "prod-eu-1"]
    by_object = {(r.get("ruleId"), r["properties"].get("object")): r for r in prod}
    failing = by_object[("required-labels", "Deployment/apps/unlabelled")]
    assert failing["level"] == "error"
    assert rules[failing["ruleIndex"]] == "required-labels"
    location = failing["locations"][0]["physicalLocation"]
    starts = _doc_lines(apps)
    assert location == {"artifactLocation": {"uri": "apps.yaml"}, "region": {"startLine": starts[2]}}
    assert failing["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == (
        "prod-eu-1/Deployment/apps/unlabelled"
    )
    warned = by_object[("no-latest", "Deployment/apps/latest")]
    assert warned["level"] == "warning"
    assert warned["locations"][0]["physicalLocation"]["region"] == {"startLine": starts[1]}
    waived = by_object[("required-labels", "Deployment/apps/legacy-app")]
    assert waived["suppressions"][0]["kind"] == "external"
    excepted = by_object[("host-network", "Deployment/apps/node-agent")]
    assert excepted["suppressions"][0]["kind"] == "inSource"
    errors = [r for r in prod if r.get("kind") == "fail"]
    assert [(e["ruleId"], e["level"]) for e in errors] == [("numbers", "error")]
    assert run["properties"]["blocked"] is True


def test_json_and_text_outputs_keep_their_shape(
    tmp_path: Path, fleet: dict[str, Any], policies: dict[str, Any]
) -> None:
    apps, _config = _files(tmp_path)
    code, text = _check(fleet, (apps,), "json")
    assert code == 1
    data = json.loads(text)
    prod = next(c for c in data["clusters"] if c["cluster"] == "prod-eu-1")
    assert [f["policy"] for f in prod["failures"]] == ["required-labels/must-have-team"]
    code, text = _check(fleet, (apps,), "text")
    assert code == 1
    assert (
        "FAIL - prod-eu-1 - apps.yaml - Deployment/apps/unlabelled - required-labels/must-have-team" in text
    )


@pytest.mark.parametrize("fmt", ["junit", "sarif"])
def test_check_api_answers_junit_and_sarif(
    fleet: dict[str, Any],
    policies: dict[str, Any],
    make_user: Any,
    token_client: Any,
    tmp_path: Path,
    fmt: str,
) -> None:
    apps, _config = _files(tmp_path)
    client = token_client(make_user("dev", role="viewer", scope=fleet["web"]))
    body = {"mapping": fleet["mapping"].pk, "manifests": apps.read_text()}
    response = client.post(f"/api/policies/check/?format={fmt}", body, format="json")
    assert response.status_code == 200, response.content
    if fmt == "junit":
        assert response["Content-Type"].startswith("application/xml")
        root = ET.fromstring(response.content)  # noqa: S314
        assert {s.get("name") for s in root.findall("testsuite")} == {"web/prod-eu-1", "web/staging-eu-1"}
    else:
        assert response["Content-Type"].startswith("application/sarif+json")
        log = json.loads(response.content)
        jsonschema.Draft7Validator(SARIF, format_checker=jsonschema.FormatChecker()).validate(log)
        assert log["runs"][0]["properties"]["mapping"] == "web"
    # bad input keeps DRF's error shape, in JSON
    bad = client.post(f"/api/policies/check/?format={fmt}", {"mapping": fleet["mapping"].pk}, format="json")
    assert bad.status_code == 400
    assert bad["Content-Type"] == "application/json"
    assert json.loads(bad.content) == {"non_field_errors": ["Give exactly one of branch, commit, manifests."]}


def test_sarif_of_a_branch_points_at_the_file_and_line_in_the_repository(
    tmp_path: Path, settings: Any, fleet: dict[str, Any], policies: dict[str, Any]
) -> None:
    settings.FLEETGATE_GIT_CACHE = tmp_path / "git-cache"
    origin = Origin(tmp_path / "origin")
    repo = fleet["repo"]
    repo.url = origin.url
    repo.save()
    text = "# the web app\n" + yaml.safe_dump_all(
        [lib.deployment("web"), lib.deployment("unlabelled", labels={})], explicit_start=True
    )
    origin.commit("apps", {"apps/web/deploy.yaml": text})
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "policy_check", "--mapping", "apps/web", "--branch", "main", "--output", "sarif", stdout=out
        )
    assert exit_info.value.code == 1
    log = json.loads(out.getvalue())
    jsonschema.Draft7Validator(SARIF, format_checker=jsonschema.FormatChecker()).validate(log)
    failing = next(
        r
        for r in log["runs"][0]["results"]
        if r.get("level") == "error" and r["properties"]["cluster"] == "prod-eu-1" and r.get("ruleId")
    )
    assert failing["ruleId"] == "required-labels"
    second = [i for i, line in enumerate(text.splitlines(), start=1) if line == "---"][1] + 1
    assert failing["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "apps/web/deploy.yaml"},
        "region": {"startLine": second},
    }


def test_a_cluster_that_cannot_be_reviewed_has_no_verdicts_in_junit_or_sarif(
    tmp_path: Path, fleet: dict[str, Any], policies: dict[str, Any]
) -> None:
    Cluster.objects.create(
        name="dead-1",
        api_url=f"http://127.0.0.1:{free_port()}",
        auth_method="token",
        token="tok-dead-secret",
        labels={"team": "web", "env": "prod"},
    )
    apps, _config = _files(tmp_path)
    base = ["policy_check", "--mapping", "apps/web", "--engine", "regorus", "--file", str(apps)]
    for output in ("junit", "sarif"):
        out = io.StringIO()
        with pytest.raises(SystemExit) as exit_info:
            call_command(*base, "--live-cluster", "dead-1", "--output", output, stdout=out)
        assert exit_info.value.code == 1
        if output == "junit":
            root = ET.fromstring(out.getvalue())  # noqa: S314 - our own output
            suite = next(s for s in root.findall("testsuite") if s.get("name") == "dead-1")
            review = next(c for c in suite.findall("testcase") if c.get("name") == "review")
            error = review.find("error")
            assert error is not None and "could not be read" in (error.get("message") or "")
            others = [c for c in suite.findall("testcase") if c is not review]
            assert others and all(c.find("skipped") is not None for c in others)  # no pass, no verdict
            assert (suite.get("errors"), suite.get("failures")) == ("1", "0")
            assert "tok-dead-secret" not in out.getvalue()
        else:
            log = json.loads(out.getvalue())
            jsonschema.Draft7Validator(SARIF, format_checker=jsonschema.FormatChecker()).validate(log)
            dead = [r for r in log["runs"][0]["results"] if r["properties"].get("cluster") == "dead-1"]
            assert [(r["level"], r["properties"]["errorKind"]) for r in dead] == [("error", "cannot_review")]
