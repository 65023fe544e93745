"""`manage.py policy_test` on Kyverno CLI test suites written here in kyverno/policies' layout, and the
conformance script over such a checkout."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[2]

POLICY = {
    "apiVersion": "kyverno.io/v1",
    "kind": "ClusterPolicy",
    "metadata": {"name": "require-team"},
    "spec": {
        "validationFailureAction": "Enforce",
        "rules": [
            {
                "name": "check-team",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "exclude": {"any": [{"clusterRoles": ["cluster-admin"]}]},
                "preconditions": {
                    "all": [
                        {"key": "{{ request.operation }}", "operator": "AnyIn", "value": ["CREATE", "UPDATE"]}
                    ]
                },
                "validate": {
                    "message": "team label",
                    "pattern": {"metadata": {"labels": {"team": "{{ allowed }}"}}},
                },
                "context": [{"name": "allowed", "configMap": {"name": "teams", "namespace": "kyverno"}}],
            },
            {
                "name": "add-default",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "mutate": {"patchStrategicMerge": {}},
            },
        ],
    },
}
NS_POLICY = {
    "apiVersion": "kyverno.io/v1",
    "kind": "Policy",
    "metadata": {"name": "no-latest", "namespace": "apps"},
    "spec": {
        "rules": [
            {
                "name": "no-latest",
                "match": {
                    "any": [
                        {
                            "resources": {
                                "kinds": ["Pod"],
                                "namespaceSelector": {"matchLabels": {"tier": "prod"}},
                            }
                        }
                    ]
                },
                "validate": {
                    "deny": {
                        "conditions": {
                            "any": [
                                {
                                    "key": "{{ images.containers.*.tag }}",
                                    "operator": "AnyIn",
                                    "value": ["latest"],
                                }
                            ]
                        }
                    }
                },
            }
        ]
    },
}


def pod(
    name: str, ns: str = "", labels: dict[str, str] | None = None, image: str = "nginx:1.25"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if ns:
        meta["namespace"] = ns
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": image}]},
    }


def write(path: Path, *docs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """kyverno/policies layout: policy at the top, the test under .kyverno-test/."""
    top = tmp_path / "checkout" / "best-practices" / "require-team"
    write(top / "require-team.yaml", POLICY, NS_POLICY)
    test = top / ".kyverno-test"
    write(
        test / "resource.yaml",
        pod("good", labels={"team": "a"}),
        pod("bad"),
        pod("admin-pod"),
        pod("web", "apps", image="web:latest"),
        pod("web2", "apps", image="web:2"),
    )
    write(
        test / "values.yaml",
        {
            "apiVersion": "cli.kyverno.io/v1alpha1",
            "kind": "Value",
            "policies": [
                {
                    "name": "require-team",
                    "rules": [{"name": "check-team", "values": {"allowed": "a | b"}}],
                    "resources": [{"name": "admin-pod", "values": {"request.operation": "DELETE"}}],
                }
            ],
            "namespaceSelector": [{"name": "apps", "labels": {"tier": "prod"}}],
        },
    )
    write(
        test / "kyverno-test.yaml",
        {
            "apiVersion": "cli.kyverno.io/v1alpha1",
            "kind": "Test",
            "metadata": {"name": "require-team"},
            "policies": ["../require-team.yaml"],
            "resources": ["resource.yaml"],
            "variables": "values.yaml",
            "results": [
                {
                    "policy": "require-team",
                    "rule": "check-team",
                    "kind": "Pod",
                    "resources": ["good"],
                    "result": "pass",
                },
                {
                    "policy": "require-team",
                    "rule": "check-team",
                    "kind": "Pod",
                    "resources": ["bad"],
                    "result": "fail",
                },
                {
                    "policy": "require-team",
                    "rule": "check-team",
                    "kind": "Pod",
                    "resources": ["admin-pod"],
                    "result": "skip",
                },
                {
                    "policy": "apps/no-latest",
                    "rule": "no-latest",
                    "kind": "Pod",
                    "resources": ["apps/web"],
                    "result": "fail",
                },
                {
                    "policy": "apps/no-latest",
                    "rule": "no-latest",
                    "kind": "Pod",
                    "resources": ["apps/web2"],
                    "result": "pass",
                },
            ],
        },
    )
    return tmp_path / "checkout"


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("policy_test", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_a_suite_passes_with_values_namespace_labels_and_namespaced_policies(suite: Path) -> None:
    code, out = run(str(suite))
    assert code == 0, out
    assert "Test Summary: 5 tests passed and 0 tests failed" in out
    assert "not applied by the gate: require-team/add-default (mutate)" in out


def test_json_output_and_a_mismatch_exits_1(suite: Path) -> None:
    test = next(suite.rglob("kyverno-test.yaml"))
    doc = yaml.safe_load(test.read_text())
    doc["results"][0]["result"] = "fail"
    test.write_text(yaml.safe_dump(doc))
    code, out = run(str(test), "--output", "json")
    assert code == 1
    data = json.loads(out)
    assert data["failed"] == 1 and data["passed"] == 4
    bad = [r for t in data["tests"] for r in t["rows"] if not r["ok"]]
    assert bad[0]["resource"] == "v1/Pod/default/good" and bad[0]["reason"] == "Want fail, got pass"


def test_userinfo_exceptions_and_the_older_plain_form(tmp_path: Path) -> None:
    write(tmp_path / "policy.yaml", POLICY)
    write(tmp_path / "resources.yaml", pod("bad"), pod("legacy-1"))
    write(
        tmp_path / "user.yaml",
        {
            "apiVersion": "cli.kyverno.io/v1alpha1",
            "kind": "UserInfo",
            "clusterRoles": ["view"],
            "userInfo": {"username": "alice"},
        },
    )
    write(
        tmp_path / "exception.yaml",
        {
            "apiVersion": "kyverno.io/v2",
            "kind": "PolicyException",
            "metadata": {"name": "legacy"},
            "spec": {
                "exceptions": [{"policyName": "require-team", "ruleNames": ["check-team"]}],
                "match": {"any": [{"resources": {"kinds": ["Pod"], "names": ["legacy-*"]}}]},
            },
        },
    )
    write(
        tmp_path / "values.yaml",
        {
            "policies": [
                {"name": "require-team", "rules": [{"name": "check-team", "values": {"allowed": "a"}}]}
            ]
        },
    )
    write(
        tmp_path / "kyverno-test.yaml",
        {
            "name": "plain",
            "policies": ["policy.yaml"],
            "resources": ["resources.yaml"],
            "exceptions": ["exception.yaml"],
            "variables": "values.yaml",
            "userinfo": "user.yaml",
            "results": [
                {
                    "policy": "require-team",
                    "rule": "check-team",
                    "resource": "bad",
                    "kind": "Pod",
                    "status": "fail",
                },
                {
                    "policy": "require-team",
                    "rule": "check-team",
                    "resource": "legacy-1",
                    "kind": "Pod",
                    "status": "skip",
                },
                {
                    "policy": "require-team",
                    "rule": "check-team",
                    "resource": "missing",
                    "kind": "Pod",
                    "status": "pass",
                },
            ],
        },
    )
    code, out = run(str(tmp_path), "--output", "json")
    rows = json.loads(out)["tests"][0]["rows"]
    assert [(r["resource"], r["actual"], r["ok"]) for r in rows] == [
        ("missing", "", False),
        ("v1/Pod/default/bad", "fail", True),
        ("v1/Pod/default/legacy-1", "skip", True),
    ] or sorted((r["resource"], r["ok"]) for r in rows) == [
        ("missing", False),
        ("v1/Pod/default/bad", True),
        ("v1/Pod/default/legacy-1", True),
    ]
    assert code == 1


def test_clear_errors_for_missing_files_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file or directory"):
        run(str(tmp_path / "nope"))
    (tmp_path / "kyverno-test.yaml").write_text("policies: [a.yaml]\nresults: [\n")
    code, out = run(str(tmp_path))
    assert code == 1 and "invalid YAML at line" in out
    (tmp_path / "kyverno-test.yaml").write_text("policies: [a.yaml]\nresources: [r.yaml]\nresults: []\n")
    code, out = run(str(tmp_path))
    assert code == 1 and "a.yaml: no such file" in out


def test_conformance_script_over_a_checkout(suite: Path) -> None:
    vap = suite / "other-vpol" / "x"
    write(
        vap / "x.yaml",
        {
            "apiVersion": "policies.kyverno.io/v1alpha1",
            "kind": "ValidatingPolicy",
            "metadata": {"name": "x"},
            "spec": {},
        },
    )
    write(
        vap / ".kyverno-test" / "kyverno-test.yaml",
        {
            "policies": ["../x.yaml"],
            "resources": [],
            "results": [{"policy": "x", "resources": ["a"], "result": "pass"}],
        },
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/conformance/kyverno_policies.py"), str(suite), "--markdown"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| best-practices/require-team | no | yes | pass |" in proc.stdout
    vpol = "not a kyverno.io policy: policies.kyverno.io/v1alpha1 ValidatingPolicy"
    assert f"| other-vpol/x | no | yes | fail | {vpol}" in proc.stdout
    assert "validate-only and offline: 0, of which 0 pass and 0 fail" in proc.stdout


def test_update_reviews_against_a_copy_and_result_operations(tmp_path: Path) -> None:
    changed = {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "immutable"},
        "spec": {
            "rules": [
                {
                    "name": "same-labels",
                    "match": {"any": [{"resources": {"kinds": ["Pod"], "operations": ["UPDATE"]}}]},
                    "validate": {
                        "message": "labels changed",
                        "deny": {
                            "conditions": {
                                "any": [
                                    {
                                        "key": "{{ request.object.metadata.labels }}",
                                        "operator": "NotEquals",
                                        "value": "{{ request.oldObject.metadata.labels }}",
                                    }
                                ]
                            }
                        },
                    },
                }
            ]
        },
    }
    write(tmp_path / "policy.yaml", changed)
    write(tmp_path / "resources.yaml", pod("a", labels={"x": "1"}), pod("b", labels={"x": "1"}))
    write(
        tmp_path / "values.yaml",
        {
            "policies": [
                {
                    "name": "immutable",
                    "resources": [
                        {
                            "name": "b",
                            "values": {
                                "request.operation": "UPDATE",
                                "request.object.metadata.labels.x": "2",
                            },
                        }
                    ],
                }
            ]
        },
    )
    write(
        tmp_path / "kyverno-test.yaml",
        {
            "apiVersion": "cli.kyverno.io/v1alpha1",
            "kind": "Test",
            "metadata": {"name": "update"},
            "policies": ["policy.yaml"],
            "resources": ["resources.yaml"],
            "variables": "values.yaml",
            "results": [
                {
                    "policy": "immutable",
                    "rule": "same-labels",
                    "resources": ["a"],
                    "result": "pass",
                    "operation": "UPDATE",
                },
                {"policy": "immutable", "rule": "same-labels", "resources": ["b"], "result": "fail"},
            ],
        },
    )
    code, out = run(str(tmp_path), "--output", "json")
    rows = json.loads(out)["tests"][0]["rows"]
    assert [(r["resource"], r["actual"]) for r in rows] == [
        ("v1/Pod/default/a", "pass"),
        ("v1/Pod/default/b", "fail"),
    ]
    assert code == 0


def test_results_of_rules_the_gate_does_not_apply_do_not_pass(suite: Path) -> None:
    test = next(suite.rglob("kyverno-test.yaml"))
    doc = yaml.safe_load(test.read_text())
    doc["results"].append(
        {
            "policy": "require-team",
            "rule": "add-default",
            "kind": "Pod",
            "resources": ["good"],
            "result": "pass",
        }
    )
    test.write_text(yaml.safe_dump(doc))
    code, out = run(str(test), "--output", "json")
    bad = [r for r in json.loads(out)["tests"][0]["rows"] if not r["ok"]]
    assert code == 1
    assert [(r["rule"], r["actual"], r["reason"]) for r in bad] == [
        ("add-default", "not applied", "mutate rules are not applied by the gate")
    ]


def test_unscored_policies_report_warn(tmp_path: Path) -> None:
    pol = {
        **POLICY,
        "metadata": {"name": "require-team", "annotations": {"policies.kyverno.io/scored": "false"}},
    }
    write(tmp_path / "policy.yaml", pol)
    write(tmp_path / "resources.yaml", pod("bad"))
    write(
        tmp_path / "values.yaml",
        {
            "policies": [
                {"name": "require-team", "rules": [{"name": "check-team", "values": {"allowed": "a"}}]}
            ]
        },
    )
    write(
        tmp_path / "kyverno-test.yaml",
        {
            "policies": ["policy.yaml"],
            "resources": ["resources.yaml"],
            "variables": "values.yaml",
            "results": [
                {"policy": "require-team", "rule": "check-team", "resources": ["bad"], "result": "warn"}
            ],
        },
    )
    code, out = run(str(tmp_path))
    assert code == 0, out


def test_cel_params_come_from_the_tests_param_resources(tmp_path: Path) -> None:
    pol = {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "max-replicas"},
        "spec": {
            "rules": [
                {
                    "name": "max",
                    "match": {"any": [{"resources": {"kinds": ["Deployment"]}}]},
                    "validate": {
                        "cel": {
                            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                            "paramRef": {"name": "limits", "namespace": "kyverno"},
                            "expressions": [{"expression": "object.spec.replicas <= int(params.data.max)"}],
                        }
                    },
                }
            ]
        },
    }
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "big"},
        "spec": {"replicas": 9},
    }
    small = {**deploy, "metadata": {"name": "small"}, "spec": {"replicas": 1}}
    write(tmp_path / "policy.yaml", pol)
    write(tmp_path / "resources.yaml", deploy, small)
    write(
        tmp_path / "params.yaml",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "limits", "namespace": "kyverno"},
            "data": {"max": "3"},
        },
    )
    write(
        tmp_path / "kyverno-test.yaml",
        {
            "policies": ["policy.yaml"],
            "resources": ["resources.yaml"],
            "paramResources": ["params.yaml"],
            "results": [
                {"policy": "max-replicas", "rule": "max", "resources": ["big"], "result": "fail"},
                {"policy": "max-replicas", "rule": "max", "resources": ["small"], "result": "pass"},
            ],
        },
    )
    code, out = run(str(tmp_path))
    assert code == 0, out
