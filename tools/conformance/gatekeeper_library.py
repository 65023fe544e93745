#!/usr/bin/env python
"""Conformance run: every case of the OPA Gatekeeper library's test suites through Fleetgate.

    .venv/bin/python tools/conformance/gatekeeper_library.py PATH [--engine regorus|opa|both] [--only NAME]

PATH is a checkout of https://github.com/open-policy-agent/gatekeeper-library (not vendored: fetch it). For
each ``library/**/suite.yaml`` test (a template and a constraint), the two files are imported with
``manage.py import_policies --enforcement deny`` into a throwaway SQLite database (only that policy
bound), then each case runs ``manage.py policy_check --file <object> [--file <inventory> ...] --output
json`` against one cluster. An ``AdmissionReview`` object (the library's UPDATE cases) is read by
``policy_check`` as a review with its ``operation``/``oldObject``. A namespaced object without a namespace
is checked in ``default``, where Kubernetes would create it. The case's findings on its own object are
compared with its assertions the way ``gator verify`` does (``violations: yes|no|N``, default yes;
optional ``message`` regular expression). Prints a table per template and the failing cases with their
reason; exit status 1 when any case fails.

OPA runs from the cached build (scripts/build-opa.sh) on a free 127.0.0.1 port.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CaseResult:
    template: str
    test: str
    case: str
    passed: bool
    reason: str = ""


@dataclass
class Tally:
    cases: int = 0
    passed: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _setup_django(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'conformance.sqlite3'}"
    os.environ["FLEETGATE_VAR_DIR"] = str(workdir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _fleet() -> Any:
    from clusters.models import Cluster, ClusterGroup
    from fleet.sources.models import PathMapping, Repository

    group = ClusterGroup.objects.create(name="conformance", selector={"matchLabels": {"suite": "gatekeeper"}})
    Cluster.objects.create(
        name="conformance-1",
        api_url="https://127.0.0.1:6443",
        auth_method="token",
        token="conformance-token-not-used",  # noqa: S106 - never sent: policy_check reads no cluster
        labels={"suite": "gatekeeper"},
    )
    repo = Repository.objects.create(
        name="library", url="https://git.example.invalid/library.git", branch="main"
    )
    return PathMapping.objects.create(repository=repo, name="cases", path="cases", cluster_group=group)


def _with_namespace(doc: Any) -> Any:
    """A namespaced object without ``metadata.namespace`` is created in ``default`` (kubectl, and the
    namespace gator reviews it in); the library's constraints often match ``namespaces: [default]``."""
    from policies.formats.kube import CLUSTER_SCOPED_KINDS

    if not isinstance(doc, dict):
        return doc
    if doc.get("kind") == "AdmissionReview" and isinstance(doc.get("request"), dict):
        for key in ("object", "oldObject"):
            doc["request"][key] = _with_namespace(doc["request"].get(key))
        return doc
    meta = doc.get("metadata")
    if doc.get("kind") and doc["kind"] not in CLUSTER_SCOPED_KINDS and isinstance(meta, dict):
        meta.setdefault("namespace", "default")
    return doc


def _prepared(path: Path, workdir: Path, index: int) -> Path:
    docs = [_with_namespace(d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    out = workdir / "case" / f"{index}-{path.name}"
    out.parent.mkdir(exist_ok=True)
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return out


def _object_ref(path: Path) -> tuple[str, str, str] | None:
    doc = next((d for d in yaml.safe_load_all(path.read_text()) if d), None)
    if not isinstance(doc, dict):
        return None
    if doc.get("kind") == "AdmissionReview":
        req = doc.get("request") or {}
        doc = req.get("object") or req.get("oldObject") or {}
    from policies.formats.kube import CLUSTER_SCOPED_KINDS

    meta = doc.get("metadata") or {}
    kind = str(doc.get("kind", ""))
    namespace = "" if kind in CLUSTER_SCOPED_KINDS else str(meta.get("namespace") or "")
    return kind, namespace, str(meta.get("name") or "")


def _check(mapping: Any, files: list[Path], engine: str) -> tuple[int, dict[str, Any] | None, str]:
    from django.core.management import call_command

    args = ["policy_check", "--mapping", str(mapping.pk), "--output", "json", "--engine", engine]
    for f in files:
        args += ["--file", str(f)]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        call_command(*args, stdout=out, stderr=err)
    except SystemExit as exc:
        code = int(exc.code or 0)
    text = out.getvalue()
    try:
        return code, json.loads(text), err.getvalue()
    except json.JSONDecodeError:
        return code, None, err.getvalue() or text


def _violations_for(report: dict[str, Any], ref: tuple[str, str, str] | None) -> tuple[list[str], list[str]]:
    """Messages of the deny findings on the case's object, and engine errors."""
    msgs: list[str] = []
    errors: list[str] = []
    want = ""
    if ref is not None:
        kind, ns, name = ref
        want = f"{kind}/{ns + '/' if ns else ''}{name}"
    for cluster in report.get("clusters", []):
        for f in cluster.get("failures", []):
            if f.get("rule") in ("engine", "timeout", "compile", "format", "internal") and not f.get(
                "object"
            ):
                errors.append(f["msg"])
            elif f.get("object") == want:
                msgs.append(f["msg"])
    return msgs, errors


def _assert(assertion: dict[str, Any], msgs: list[str]) -> str:
    pattern = assertion.get("message")
    matching = [m for m in msgs if pattern is None or re.search(str(pattern), m)]
    want = assertion.get("violations", "yes")  # gator: an assertion without a count means "yes"
    if want in ("yes", True):
        return (
            "" if matching else f"expected violations{f' matching {pattern!r}' if pattern else ''}, got none"
        )
    if want in ("no", False):
        return "" if not matching else f"expected no violations, got {len(matching)}: {matching[0][:120]}"
    if int(want) != len(matching):
        return (
            f"expected {want} violation(s){f' matching {pattern!r}' if pattern else ''}, got {len(matching)}"
        )
    return ""


def _reset_policies() -> None:
    from policies.models import Policy, PolicyBinding

    PolicyBinding.objects.all().delete()
    Policy.objects.all().delete()


def run_suite(suite_path: Path, mapping: Any, engine: str, workdir: Path) -> list[CaseResult]:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    base = suite_path.parent
    suite = yaml.safe_load(suite_path.read_text())
    template_name = base.name
    results: list[CaseResult] = []
    for test in suite.get("tests") or []:
        _reset_policies()
        import_dir = workdir / "import"
        shutil.rmtree(import_dir, ignore_errors=True)
        import_dir.mkdir()
        shutil.copy(base / test["template"], import_dir / "template.yaml")
        shutil.copy(base / test["constraint"], import_dir / "constraint.yaml")
        import_error = ""
        try:
            call_command("import_policies", str(import_dir), "--enforcement", "deny", stdout=io.StringIO())
        except CommandError as exc:
            import_error = "refused at import: " + " | ".join(str(exc).splitlines()[:3])
        for case in test.get("cases") or []:
            name = case.get("name", "?")
            if import_error:
                results.append(CaseResult(template_name, test.get("name", ""), name, False, import_error))
                continue
            obj = _prepared(base / case["object"], workdir, 0)
            inventory = [
                _prepared(base / p, workdir, i + 1) for i, p in enumerate(case.get("inventory") or [])
            ]
            _code, report, err = _check(mapping, [obj, *inventory], engine)
            if report is None:
                results.append(
                    CaseResult(template_name, test["name"], name, False, f"check failed: {err[:200]}")
                )
                continue
            msgs, errors = _violations_for(report, _object_ref(obj))
            if errors:
                results.append(CaseResult(template_name, test["name"], name, False, errors[0][:200]))
                continue
            reasons = [r for r in (_assert(a, msgs) for a in case.get("assertions") or []) if r]
            results.append(CaseResult(template_name, test["name"], name, not reasons, "; ".join(reasons)))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path, help="a gatekeeper-library checkout")
    parser.add_argument("--engine", choices=["regorus", "opa", "both"], default="both")
    parser.add_argument("--only", default="", help="run only suites whose directory name contains this")
    args = parser.parse_args(argv)
    suites = sorted((args.path / "library").glob("**/suite.yaml"))
    if args.only:
        suites = [s for s in suites if args.only in s.parent.name]
    if not suites:
        print(f"no library/**/suite.yaml under {args.path}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="fleetgate-gklib-"))
    try:
        _setup_django(workdir)
        from django.conf import settings

        mapping = _fleet()
        engines = ["opa", "regorus"] if args.engine == "both" else [args.engine]
        all_results: dict[str, list[CaseResult]] = {}
        for engine in engines:
            with contextlib.ExitStack() as stack:
                if engine == "opa":
                    from policies.engine.opa_server import OpaServer, build_opa

                    server = stack.enter_context(OpaServer(build_opa()))
                    settings.FLEETGATE_OPA_URL = server.url
                settings.FLEETGATE_REGO_ENGINE = engine
                results: list[CaseResult] = []
                for suite in suites:
                    results += run_suite(suite, mapping, engine, workdir)
                all_results[engine] = results
        _print(all_results, engines)
        return 0 if all(r.passed for rs in all_results.values() for r in rs) else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _print(all_results: dict[str, list[CaseResult]], engines: list[str]) -> None:
    tallies: dict[str, Tally] = {}
    for engine, results in all_results.items():
        for r in results:
            t = tallies.setdefault(r.template, Tally())
            if engine == engines[0]:
                t.cases += 1
            t.passed[engine] = t.passed.get(engine, 0) + int(r.passed)
    header = "| template | cases | " + " | ".join(f"passed on {e}" for e in engines) + " |"
    print(header)
    print("|" + "---|" * (2 + len(engines)))
    for name in sorted(tallies):
        t = tallies[name]
        print(f"| {name} | {t.cases} | " + " | ".join(str(t.passed.get(e, 0)) for e in engines) + " |")
    total = sum(t.cases for t in tallies.values())
    print(
        f"| **total** | **{total}** | "
        + " | ".join(f"**{sum(t.passed.get(e, 0) for t in tallies.values())}**" for e in engines)
        + " |"
    )
    for engine, results in all_results.items():
        failing = [r for r in results if not r.passed]
        print(f"\n{engine}: {len(results) - len(failing)}/{len(results)} cases pass")
        for r in failing:
            print(f"  FAIL {r.template}/{r.test}/{r.case}: {r.reason}")


if __name__ == "__main__":
    raise SystemExit(main())
