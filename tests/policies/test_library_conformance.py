"""Gatekeeper-library-style suites (written here, in the library's layout and shapes) through
``import_policies`` and ``policy_check`` on both engines, with the conformance script
(tools/conformance/gatekeeper_library.py) that runs the real library the same way.

The shapes are the ones where regorus was measured to differ from OPA: v0 functions whose value is an object
literal (k8spspseccomp), a body line that starts with ``(`` and a ``sprintf`` with fewer arguments than verbs
(horizontalpodautoscaler), ``not`` of a call with an undefined argument (users), an UPDATE given as an
AdmissionReview with ``oldObject``, and a case with inventory."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[2]


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (``rego: |``), as the library writes its templates."""


_LiteralDumper.add_representer(
    str,
    lambda dumper, data: dumper.represent_scalar(
        "tag:yaml.org,2002:str", data, style="|" if "\n" in data else None
    ),
)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_LiteralDumper, sort_keys=False)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gatekeeper_library", ROOT / "tools" / "conformance" / "gatekeeper_library.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _template(name: str, kind: str, rego: str, libs: tuple[str, ...] = ()) -> dict[str, Any]:
    target: dict[str, Any] = {"target": "admission.k8s.gatekeeper.sh", "rego": textwrap.dedent(rego)}
    if libs:
        target["libs"] = [textwrap.dedent(lib) for lib in libs]
    return {
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": name},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}, "validation": {"openAPIV3Schema": {"type": "object"}}}},
            "targets": [target],
        },
    }


def _constraint(kind: str, kinds: list[str], params: dict[str, Any], group: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": kind.lower() + "-sample"},
        "spec": {"match": {"kinds": [{"apiGroups": [group], "kinds": kinds}]}, "parameters": params},
    }


def _pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"containers": containers, **spec},
    }


SECCOMP = """\
    package k8sseccompprofiles

    violation[{"msg": msg}] {
        c := input.review.object.spec.containers[_]
        result := get_profile(c)
        not allowed(result.profile)
        msg := sprintf("Seccomp profile '%v' is not allowed for container '%v'. Found at: %v", [result.profile, c.name, result.location])
    }

    allowed(p) {
        p == input.parameters.allowedProfiles[_]
    }

    # Container profile as defined in the container's securityContext
    get_profile(c) = {"profile": p, "location": "container securityContext"} {
        p := c.securityContext.seccompProfile.type
    }

    # Container profile missing
    get_profile(c) = {"profile": "not configured", "location": "no explicit profile found"} {
        not c.securityContext.seccompProfile
    }
"""  # noqa: E501 - the library's own line lengths

SPREAD = """\
    package k8sreplicaspread

    violation[{"msg": msg}] {
      input.review.kind.kind == "HorizontalPodAutoscaler"
      hpa := input.review.object
      not spread_ok(hpa)
      msg := sprintf("The %v <%v> has minReplicas %v and maxReplicas %v, a spread below %v: %v", [hpa.kind, hpa.metadata.name, hpa.spec.minReplicas, hpa.spec.maxReplicas, input.parameters.minimumReplicaSpread])
    }

    spread_ok(hpa) {
        input.parameters.minimumReplicaSpread
        (hpa.spec.maxReplicas - hpa.spec.minReplicas) >= input.parameters.minimumReplicaSpread
    }
"""  # noqa: E501 - the library's own line lengths

GROUPS = """\
    package k8srunasranges

    import data.lib.exclude_update.is_update

    violation[{"msg": msg}] {
      not is_update(input.review)
      field := ["runAsUser", "runAsGroup"][_]
      c := input.review.object.spec.containers[_]
      params := input.parameters[field]
      value := c.securityContext[field]
      not accept(params.rule, value, params.ranges)
      msg := sprintf("Container %v runs with disallowed %v %v. Allowed: %v", [c.name, field, value, params])
    }

    accept("RunAsAny", _, _)

    accept("MustRunAs", value, ranges) {
      value >= ranges[_].min
    }
"""

EXCLUDE_UPDATE = """\
    package lib.exclude_update

    is_update(review) {
        review.operation == "UPDATE"
    }
"""

IMMUTABLE = """\
    package k8simmutablestorageclass

    violation[{"msg": msg}] {
      input.review.operation == "UPDATE"
      old := input.review.oldObject.spec.storageClassName
      new := input.review.object.spec.storageClassName
      old != new
      name := input.review.object.metadata.name
      msg := sprintf("storageClassName of %v cannot change from %v to %v", [name, old, new])
    }
"""

UNIQUE = """\
    package k8suniqueapplabel

    violation[{"msg": msg}] {
      value := input.review.object.metadata.labels.app
      other := data.inventory.namespace[ns][_][kind][name]
      other.metadata.labels.app == value
      name != input.review.object.metadata.name
      msg := sprintf("label app=%v is already used by %v %v/%v", [value, kind, ns, name])
    }
"""


def _pvc(name: str, storage_class: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"storageClassName": storage_class, "accessModes": ["ReadWriteOnce"]},
    }


def _review(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"operation": operation, "object": obj}
    if old is not None:
        request["oldObject"] = old
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}


def _deployment(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "apps", "labels": {"app": app}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
    }


def _hpa(name: str, lo: int, hi: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"minReplicas": lo, "maxReplicas": hi},
    }


def seccomp(rt: str | None) -> dict[str, Any]:
    sc = {"seccompProfile": {"type": rt}} if rt else {}
    return {"name": "nginx", "image": "nginx", "securityContext": sc}


# name -> (template, constraint, {case: (object, inventory, assertions)})
SUITES: dict[
    str, tuple[dict[str, Any], dict[str, Any], dict[str, tuple[Any, list[Any], list[dict[str, Any]]]]]
] = {
    "seccompprofiles": (
        _template("k8sseccompprofiles", "K8sSeccompProfiles", SECCOMP),
        _constraint("K8sSeccompProfiles", ["Pod"], {"allowedProfiles": ["RuntimeDefault"]}),
        {
            "allowed": (_pod("ok", [seccomp("RuntimeDefault")]), [], [{"violations": "no"}]),
            "disallowed": (
                _pod("bad", [seccomp("Unconfined")]),
                [],
                [{"violations": 1, "message": "Seccomp profile 'Unconfined' is not allowed"}],
            ),
            "missing": (
                _pod("none", [seccomp(None)]),
                [],
                [{"violations": 1, "message": "'not configured' .* no explicit profile found"}],
            ),
        },
    ),
    "replicaspread": (
        _template("k8sreplicaspread", "K8sReplicaSpread", SPREAD),
        _constraint(
            "K8sReplicaSpread", ["HorizontalPodAutoscaler"], {"minimumReplicaSpread": 2}, "autoscaling"
        ),
        {
            "allowed": (_hpa("wide", 1, 5), [], [{"violations": "no"}]),
            "disallowed": (
                _hpa("narrow", 2, 3),
                [],
                [{"violations": "yes", "message": r"a spread below 2: %!v\(MISSING\)$"}],
            ),
        },
    ),
    "runasranges": (
        _template("k8srunasranges", "K8sRunAsRanges", GROUPS, (EXCLUDE_UPDATE,)),
        _constraint(
            "K8sRunAsRanges",
            ["Pod"],
            {
                "runAsUser": {"rule": "MustRunAs", "ranges": [{"min": 1000}]},
                "runAsGroup": {"rule": "RunAsAny"},
            },
        ),
        {
            "users-and-groups-allowed": (
                _pod(
                    "ok",
                    [{"name": "c", "image": "i", "securityContext": {"runAsUser": 1000, "runAsGroup": 5}}],
                ),
                [],
                [{"violations": "no"}],
            ),
            "root-disallowed": (
                _pod(
                    "root",
                    [{"name": "c", "image": "i", "securityContext": {"runAsUser": 0, "runAsGroup": 5}}],
                ),
                [],
                [{"violations": 1, "message": "disallowed runAsUser 0"}],
            ),
            "update": (
                _review(
                    "UPDATE",
                    _pod("root", [{"name": "c", "image": "i", "securityContext": {"runAsUser": 0}}]),
                ),
                [],
                [{"violations": "no"}],
            ),
        },
    ),
    "immutablestorageclass": (
        _template("k8simmutablestorageclass", "K8sImmutableStorageClass", IMMUTABLE),
        _constraint("K8sImmutableStorageClass", ["PersistentVolumeClaim"], {}),
        {
            "create": (_pvc("data", "fast"), [], [{"violations": "no"}]),
            "update-unchanged": (
                _review("UPDATE", _pvc("data", "fast"), _pvc("data", "fast")),
                [],
                [{"violations": "no"}],
            ),
            "update-changed": (
                _review("UPDATE", _pvc("data", "slow"), _pvc("data", "fast")),
                [],
                [{"violations": 1, "message": "cannot change from fast to slow"}],
            ),
        },
    ),
    "uniqueapplabel": (
        _template("k8suniqueapplabel", "K8sUniqueAppLabel", UNIQUE),
        _constraint("K8sUniqueAppLabel", ["Deployment"], {}, "apps"),
        {
            "unique": (_deployment("web", "web"), [_deployment("api", "api")], [{"violations": "no"}]),
            "taken": (
                _deployment("web2", "web"),
                [_deployment("web", "web")],
                [{"violations": 1, "message": "already used by Deployment apps/web"}],
            ),
        },
    ),
}


def _write_library(root: Path) -> int:
    count = 0
    for name, (template, constraint, cases) in SUITES.items():
        base = root / "library" / "general" / name
        (base / "samples").mkdir(parents=True)
        (base / "template.yaml").write_text(_dump(template))
        (base / "samples" / "constraint.yaml").write_text(yaml.safe_dump(constraint))
        suite_cases = []
        for case, (obj, inventory, assertions) in cases.items():
            (base / "samples" / f"{case}.yaml").write_text(yaml.safe_dump(obj))
            entry: dict[str, Any] = {
                "name": case,
                "object": f"samples/{case}.yaml",
                "assertions": assertions,
            }
            if inventory:
                (base / "samples" / f"{case}_inventory.yaml").write_text(yaml.safe_dump_all(inventory))
                entry["inventory"] = [f"samples/{case}_inventory.yaml"]
            suite_cases.append(entry)
            count += 1
        suite = {
            "kind": "Suite",
            "apiVersion": "test.gatekeeper.sh/v1alpha1",
            "metadata": {"name": name},
            "tests": [
                {
                    "name": name,
                    "template": "template.yaml",
                    "constraint": "samples/constraint.yaml",
                    "cases": suite_cases,
                }
            ],
        }
        (base / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return count


@pytest.fixture(params=["regorus", "opa"])
def engine_name(request: pytest.FixtureRequest, settings: Any) -> str:
    if request.param == "opa":
        settings.FLEETGATE_OPA_URL = request.getfixturevalue("opa_server").url
    settings.FLEETGATE_REGO_ENGINE = request.param
    return str(request.param)


def test_library_style_suites_pass_on_both_engines(tmp_path: Path, db: Any, engine_name: str) -> None:
    script = _script()
    expected = _write_library(tmp_path / "lib")
    mapping = script._fleet()
    results = []
    for suite in sorted((tmp_path / "lib" / "library").glob("**/suite.yaml")):
        results += script.run_suite(suite, mapping, engine_name, tmp_path)
    assert len(results) == expected
    failing = [f"{r.template}/{r.case}: {r.reason}" for r in results if not r.passed]
    assert failing == []


def test_a_case_that_does_not_hold_is_reported(tmp_path: Path, db: Any, engine_name: str) -> None:
    script = _script()
    template, constraint, _ = SUITES["seccompprofiles"]
    SUITES_WRONG = {
        "seccompprofiles": (
            template,
            constraint,
            {"wrong": (_pod("ok", [seccomp("Unconfined")]), [], [{"violations": "no"}])},
        )
    }
    original = dict(SUITES)
    SUITES.clear()
    SUITES.update(SUITES_WRONG)
    try:
        _write_library(tmp_path / "lib")
    finally:
        SUITES.clear()
        SUITES.update(original)
    suite = tmp_path / "lib" / "library" / "general" / "seccompprofiles" / "suite.yaml"
    (result,) = script.run_suite(suite, script._fleet(), engine_name, tmp_path)
    assert not result.passed
    assert result.reason.startswith("expected no violations, got 1: Seccomp profile 'Unconfined'")


# A template that compiles but raises whenever it evaluates on regorus: a computed sprintf format with more
# verbs than arguments (OPA prints %!v(MISSING)).
RAISES_ON_REGORUS = """\
    package k8scomputedformat

    violation[{"msg": msg}] {
      name := input.review.object.metadata.name
      format := concat(" ", ["%v", "has", "%v"])
      msg := sprintf(format, [name])
    }
"""


def test_a_policy_that_fails_at_evaluation_is_refused_at_import(
    tmp_path: Path, db: Any, engine_name: str
) -> None:
    root = tmp_path / "policies"
    root.mkdir()
    (root / "template.yaml").write_text(
        yaml.safe_dump(_template("k8scomputedformat", "K8sComputedFormat", RAISES_ON_REGORUS))
        + "---\n"
        + yaml.safe_dump(_constraint("K8sComputedFormat", ["ConfigMap"], {}))
    )
    if engine_name == "opa":  # OPA evaluates it (the message ends in %!v(MISSING)): accepted
        call_command("import_policies", str(root), stdout=io.StringIO())
        return
    with pytest.raises(CommandError) as info:
        call_command("import_policies", str(root), stdout=io.StringIO())
    text = str(info.value)
    assert "the policy fails when evaluated on regorus" in text
    assert "k8scomputedformat/template.rego:6:" in text
    assert text.count("k8scomputedformat/template.rego:6:") == 1  # the line is named once
    from policies.models import Policy

    assert not Policy.objects.exists()


def test_a_template_error_names_the_line_of_the_yaml_file_once(
    tmp_path: Path, db: Any, engine_name: str
) -> None:
    broken = SECCOMP.replace("allowed(p) {\n", "allowed(p) {\n        x := )\n", 1)
    root = tmp_path / "policies"
    root.mkdir()
    text = _dump(_template("k8sseccompprofiles", "K8sSeccompProfiles", broken))
    assert "rego: |" in text
    (root / "template.yaml").write_text(text)
    with pytest.raises(CommandError) as info:
        call_command("import_policies", str(root), stdout=io.StringIO())
    message = str(info.value)
    yaml_lines = text.splitlines()
    broken_line = next(i for i, line in enumerate(yaml_lines, 1) if line.strip() == "x := )")
    # OPA names the broken line, regorus the brace of the rule it breaks (the line before); either way the
    # line is the YAML file's.
    found = re.findall(r"template\.yaml:(\d+):\d+", message)
    assert found, message
    assert int(found[0]) in (broken_line - 1, broken_line)
    assert message.count(f"template.yaml:{found[0]}:") == 1
    assert "template.rego" not in message
