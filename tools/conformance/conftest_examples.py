"""conftest conformance: conftest's acceptance expectations on its Kubernetes examples, through Fleetgate.

Usage (from the project root, with the venv)::

    python tools/conformance/conftest_examples.py PATH-TO-CONFTEST-CHECKOUT [--engine regorus|opa|both]
        [--markdown]

It reads the policies, data and manifests of the examples named below from a conftest checkout (nothing of
conftest is vendored here), builds each as a Fleetgate conftest policy (the same rules as ``import_policies``:
``*.rego`` except ``*_test.rego`` are the modules, ``-d`` directories are data), checks it as a save would
(``check_policy``: compile and the sandbox), parses the manifests as ``policy_check --file`` does and
evaluates them with the gate on each engine. Each case is one ``@test`` of conftest's ``acceptance.bats``
that applies to Kubernetes manifests; its expectation is what that test asserts (exit status, the summary
counts, a line of output). A Fleetgate result matches when the decision agrees with the exit status (1 =
blocked, or the policy refused at save) and the counts and text the test asserts are the same.

Exit status 0 when every case matches on every engine run, 1 otherwise. The OPA engine uses the pinned OPA
built by ``scripts/build-opa.sh`` (cached in ``$FLEETGATE_CACHE_DIR``), started on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    title: str  # the acceptance.bats @test name
    policies: tuple[str, ...]  # -p (directories or files, relative to the checkout)
    inputs: tuple[str, ...]
    status: int  # conftest's exit status the test asserts
    summary: str = ""  # "N tests, N passed, N warnings, N failures, N exceptions" where the test asserts it
    output: str = ""  # a text the test asserts in the output (an EXCP line, a message)
    data: tuple[str, ...] = ()
    combine: bool = False
    all_namespaces: bool = False
    namespaces: tuple[str, ...] = ("main",)


K8S = "examples/kubernetes"
CASES: tuple[Case, ...] = (
    Case("Not fail when testing a service with a warning", (f"{K8S}/policy",), (f"{K8S}/service.yaml",), 0),
    Case(
        "Fail when testing a deployment with root containers",
        (f"{K8S}/policy",),
        (f"{K8S}/deployment.yaml",),
        1,
    ),
    Case(
        "Multi-file tests correctly fail when last file is fine",
        (f"{K8S}/policy",),
        (f"{K8S}/deployment.yaml", f"{K8S}/service.yaml"),
        1,
    ),
    Case(
        "The number of tests run is accurate",
        (f"{K8S}/policy",),
        (f"{K8S}/service.yaml",),
        0,
        summary="5 tests, 4 passed, 1 warning, 0 failures, 0 exceptions",
    ),
    Case(
        "Should show output because of failure",
        (f"{K8S}/policy",),
        (f"{K8S}/deployment.yaml",),
        1,
        summary="5 tests, 1 passed, 0 warnings, 4 failures, 0 exceptions",
        all_namespaces=True,
    ),
    Case(
        "Should not show any output with quiet flag and all tests succeeds",
        (f"{K8S}/policy/deny.rego",),
        (f"{K8S}/deployment.yaml",),
        0,
    ),
    Case(
        "Can load data along with rego policies",
        ("examples/data/policy",),
        ("examples/data/service.yaml",),
        1,
        output="Cannot expose port",
        data=("examples/data/exclusions",),
    ),
    Case(
        "Exceptions reported correctly",
        ("examples/exceptions/policy",),
        ("examples/exceptions/deployments.yaml",),
        1,
        summary="2 tests, 0 passed, 0 warnings, 1 failure, 1 exception",
    ),
    Case(
        "Exceptions output",
        ("examples/exceptions/policy",),
        ("examples/exceptions/deployments.yaml",),
        1,
        output="EXCP - examples/exceptions/deployments.yaml - main - "
        'data.main.exception[_][_] == "run_as_root"',
    ),
    Case(
        "Can combine yaml files",
        ("examples/combine/policy",),
        ("examples/combine/team.yaml", "examples/combine/user1.yaml", "examples/combine/user2.yaml"),
        1,
        summary="2 tests, 1 passed, 0 warnings, 1 failure",
        combine=True,
    ),
    Case(
        "Combining multi-document yaml file has same result",
        ("examples/combine/policy",),
        ("examples/combine/team.yaml", "examples/combine/users.yaml"),
        1,
        summary="2 tests, 1 passed, 0 warnings, 1 failure",
        combine=True,
    ),
    Case(
        "Should fail evaluation if a builtin function returns error",
        ("examples/builtin-errors/invalid-dns.rego",),
        (f"{K8S}/deployment.yaml",),
        1,
    ),
    Case(
        "Should fail if an opa function is not defined given capabilities file",
        (f"{K8S}/policy", "examples/capabilities/malicious.rego"),
        (f"{K8S}/deployment.yaml",),
        1,
    ),
)

# acceptance.bats tests on these examples that do not apply, and why (printed with --markdown).
NOT_APPLICABLE = (
    (
        "Fail when testing a service with warnings (--fail-on-warn)",
        "a CLI exit-status option: Fleetgate "
        "reports such a cluster as warned; a binding with enforcement warn never blocks",
    ),
    (
        "Pass when testing a blank namespace (--namespace notpresent)",
        "a policy whose namespaces hold no "
        "deny/warn/violation rule is refused at save (fail closed), where conftest runs 0 tests and passes",
    ),
    (
        "stdin, blank file name, --no-color, Output results only once, --trace, -o tap/table/json/junit",
        "command-line input and text layout; `policy_check --output` has its own formats",
    ),
    (
        "Can verify rego tests (conftest verify)",
        "Fleetgate runs `test_*` rules when a policy is saved "
        "(stored as test_results), not as a separate check",
    ),
    ("--strict (unused variables)", "a compile option Fleetgate does not expose"),
    ("policy_print (print statements)", "print output is not part of a gate decision"),
    (
        "docker, compose, hcl, toml, ini, xml, cue, jsonnet, spdx, cyclonedx, textproto, ...",
        "not Kubernetes manifests: Fleetgate evaluates rendered Kubernetes objects only",
    ),
)


@dataclass
class Result:
    status: int | None = None
    summary: str = ""
    lines: list[str] = field(default_factory=list)
    refused: str = ""
    error: str = ""


def _counts(summary: str) -> dict[str, int]:
    return {m.group(2).rstrip("s"): int(m.group(1)) for m in re.finditer(r"(\d+) (\w+)", summary)}


def matches(case: Case, result: Result) -> bool:
    if result.error or result.status != case.status:
        return False
    if case.summary:
        expected = _counts(case.summary)
        got = _counts(result.summary)
        if any(got.get(k) != v for k, v in expected.items()):
            return False
    return not case.output or any(case.output in line for line in result.lines)


def _rego_files(checkout: Path, path: str) -> dict[str, str]:
    p = checkout / path
    files = [p] if p.is_file() else sorted(p.rglob("*.rego"))
    return {
        f.relative_to(checkout).as_posix(): f.read_text(encoding="utf-8")
        for f in files
        if not f.name.endswith("_test.rego")
    }


def _data(checkout: Path, paths: Sequence[str]) -> dict[str, Any]:
    import json

    import yaml

    out: dict[str, Any] = {}
    for path in paths:
        for f in sorted((checkout / path).rglob("*")):
            if f.suffix in (".yaml", ".yml"):
                docs = [d for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d is not None]
            elif f.suffix == ".json":
                docs = [json.loads(f.read_text(encoding="utf-8"))]
            else:
                continue
            for doc in docs:
                out.update(doc)
    return out


def run_case(case: Case, checkout: Path, engine: Any) -> Result:
    from policies import gate
    from policies.services.checking import CheckInputError, parse_manifests
    from policies.services.evaluation import summary_line

    modules: dict[str, str] = {}
    for p in case.policies:
        modules.update(_rego_files(checkout, p))
    try:
        policy = gate.BoundPolicy.conftest(
            1,
            "conformance",
            modules,
            namespaces=case.namespaces,
            all_namespaces=case.all_namespaces,
            combine=case.combine,
            data=_data(checkout, case.data),
        )
        refused = gate.check_policy(policy, engine)
    except Exception as exc:  # a format error at build time is a refusal too
        return Result(status=1, refused=str(exc))
    if refused:
        first = refused[0]
        return Result(status=1, refused=f"{first['path']}:{first['line']}: {first['message']}")
    objects = []
    try:
        for name in case.inputs:
            objects.extend(parse_manifests((checkout / name).read_text(encoding="utf-8"), name))
    except CheckInputError as exc:
        return Result(error=exc.message)
    decision = gate.evaluate_target(objects, [policy], engine=engine)
    lines = []
    for v in decision.violations:
        label = "WARN" if v.enforcement is gate.Enforcement.WARN else "FAIL"
        lines.append(f"{label} - {v.object.source_file if v.object else 'Combined'} - main - {v.message}")
    for v in decision.exceptions:
        lines.append(f"EXCP - {v.object.source_file if v.object else 'Combined'} - main - {v.message}")
    lines.extend(f"ERROR - {e.message}" for e in decision.errors)
    status = 1 if decision.outcome is gate.Outcome.BLOCKED else 0
    return Result(status=status, summary=summary_line(decision), lines=lines)


@contextmanager
def engines(names: Sequence[str]) -> Iterator[dict[str, Any]]:
    from policies.engine.opa_engine import OpaEngine
    from policies.engine.opa_server import OpaServer, build_opa
    from policies.engine.regorus_engine import RegorusEngine

    with ExitStack() as stack:
        out: dict[str, Any] = {}
        for name in names:
            if name == "opa":
                server = stack.enter_context(OpaServer(build_opa()))
                engine = OpaEngine(server.url, timeout=30)
                stack.callback(engine.close)
                out[name] = engine
            else:
                out[name] = RegorusEngine()
        yield out


def _describe(case: Case) -> str:
    parts = [f"status {case.status}"]
    if case.summary:
        parts.append(f"`{case.summary}`")
    if case.output:
        parts.append(f"output `{case.output}`")
    return ", ".join(parts)


def _cell(case: Case, result: Result) -> str:
    mark = "✓" if matches(case, result) else "✗"
    if result.error:
        return f"{mark} error: {result.error}"
    if result.refused:
        return f"{mark} refused at save ({result.refused})"
    text = f"{mark} status {result.status}"
    if case.summary:
        text += f", `{result.summary}`"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a conftest git checkout")
    parser.add_argument("--engine", choices=["regorus", "opa", "both"], default="both")
    parser.add_argument("--markdown", action="store_true", help="print the table for docs/policies.md")
    args = parser.parse_args(argv)
    checkout: Path = args.checkout.resolve()
    if not (checkout / "acceptance.bats").is_file():
        parser.error(f"{checkout}: not a conftest checkout (no acceptance.bats)")
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django

    django.setup()
    names = ["regorus", "opa"] if args.engine == "both" else [args.engine]
    bats = (checkout / "acceptance.bats").read_text(encoding="utf-8")
    results: dict[str, list[Result]] = {}
    with engines(names) as running:
        for name in names:
            results[name] = [run_case(case, checkout, running[name]) for case in CASES]
    commit = ""
    if (checkout / ".git").exists():
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    totals = {name: sum(matches(c, r) for c, r in zip(CASES, results[name], strict=True)) for name in names}
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    print(
        f"conftest {commit or '(commit unknown)'}, run {when}: "
        + ", ".join(f"{name} {totals[name]}/{len(CASES)}" for name in names)
    )
    if args.markdown:
        print()
        print("| acceptance.bats test | conftest expects | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
    for i, case in enumerate(CASES):
        missing = "" if f'@test "{case.title}"' in bats else " (not in this checkout)"
        cells = [_cell(case, results[name][i]) for name in names]
        if args.markdown:
            print(f"| {case.title}{missing} | {_describe(case)} | " + " | ".join(cells) + " |")
        else:
            print(f"- {case.title}{missing}\n    expects {_describe(case)}")
            for name, cell in zip(names, cells, strict=True):
                print(f"    {name}: {cell}")
                if not matches(case, results[name][i]):
                    for line in results[name][i].lines:
                        print(f"      {line}")
    if args.markdown:
        print()
        print("Not applicable:")
        print()
        for title, why in NOT_APPLICABLE:
            print(f"* {title}: {why}.")
    return 0 if all(totals[n] == len(CASES) for n in names) else 1


if __name__ == "__main__":
    sys.exit(main())
