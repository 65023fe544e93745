#!/usr/bin/env python
"""Conformance run: every Kyverno sample policy test (``kyverno-test.yaml``) through
``manage.py policy_test``.

    .venv/bin/python tools/conformance/kyverno_policies.py PATH [--markdown] [--only SUBSTRING]

PATH is a checkout of https://github.com/kyverno/policies (not vendored: fetch it). Each directory with a
``kyverno-test.yaml`` (also under ``.kyverno-test/``) runs through ``policy_test --output json``. The
table has one row per test: the policy, whether all its rules are validate rules Fleetgate evaluates
(``validate-only``: no mutate/generate/verifyImages/podSecurity rules and no non-``kyverno.io`` policy
kinds such as ``ValidatingPolicy``), whether it runs offline (no ``apiCall``/``configMap`` context entry
without a value in the test), pass/fail, and why. Exit status 1 when a validate-only offline test fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def run(path: Path) -> dict[str, Any]:
    from django.core.management import call_command

    out = io.StringIO()
    with contextlib.suppress(SystemExit):
        call_command("policy_test", str(path), "--output", "json", stdout=out)
    return json.loads(out.getvalue())["tests"][0]


def classify(test: dict[str, Any]) -> tuple[bool, bool, str]:
    validate_only = not test["unsupported"] and not test["not_applied"]
    failing = [r for r in test["rows"] if not r["ok"]]
    offline = (
        not test["needs_cluster"]
        or not any(
            "apiCall" in n or "configMap" in n or "imageRegistry" in n or "globalReference" in n
            for n in test["needs_cluster"]
        )
        or not failing
    )
    why = ""
    if test["error"]:
        why = test["error"]
    elif test["unsupported"]:
        why = "not a kyverno.io policy: " + "; ".join(
            sorted(set(u.rsplit(" ", 1)[0] for u in test["unsupported"]))
        )
    elif test["not_applied"]:
        why = "not applied by the gate: " + "; ".join(test["not_applied"])
    if failing:
        first = failing[0]
        detail = f"{first['rule']} on {first['resource']}: {first['reason']}"
        if first.get("message"):
            detail += f" ({first['message'][:160]})"
        why = (why + "; " if why else "") + f"{len(failing)} result(s) differ, e.g. {detail}"
        if not offline:
            why += "; needs the cluster: " + "; ".join(test["needs_cluster"])
    return validate_only, offline, why


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--only")
    args = parser.parse_args()
    if not args.path.is_dir():
        parser.error(f"{args.path} is not a directory (a checkout of kyverno/policies)")
    _setup_django()
    tests = sorted(p for p in args.path.rglob("kyverno-test.yaml"))
    if args.only:
        tests = [t for t in tests if args.only in str(t)]
    rows = []
    for t in tests:
        test = run(t)
        validate_only, offline, why = classify(test)
        rel = t.parent.relative_to(args.path)
        name = str(rel.parent if rel.name == ".kyverno-test" else rel)
        ok = test["passed"]
        rows.append((name, validate_only, offline, ok, why))
    in_goal = [r for r in rows if r[1] and r[2]]
    goal_fail = [r for r in in_goal if not r[3]]
    if args.markdown:
        print("| policy | validate-only | offline | result | why |")
        print("|---|---|---|---|---|")
        for name, vo, off, ok, why in rows:
            cells = [
                name,
                "yes" if vo else "no",
                "yes" if off else "no",
                "pass" if ok else "fail",
                why.replace("|", "/"),
            ]
            print("| " + " | ".join(cells) + " |")
    else:
        for name, vo, off, ok, why in rows:
            flags = f"validate-only={'y' if vo else 'n'} offline={'y' if off else 'n'}"
            print(f"{'PASS' if ok else 'FAIL'}  {name:70} {flags}  {why}")
    print(
        f"\n{len(rows)} tests; {sum(1 for r in rows if r[3])} pass; "
        f"validate-only and offline: {len(in_goal)}, "
        f"of which {len(in_goal) - len(goal_fail)} pass and {len(goal_fail)} fail"
    )
    return 1 if goal_fail else 0


if __name__ == "__main__":
    sys.exit(main())
