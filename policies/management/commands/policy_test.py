"""`manage.py policy_test PATH... [--output text|json] [--detailed]`: run Kyverno CLI test files
(``kyverno-test.yaml``) like ``kyverno test DIR`` does, on Fleetgate's Kyverno evaluator.

Exit status 1 when any expected result differs (or a test cannot be loaded), 0 otherwise."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from policies.services.kyverno_tests import TestFileError, find_tests, run_test


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # reads files only; no database, URLs or models involved
    help = (
        "Run Kyverno test files (kyverno-test.yaml: policies, resources, expected results) through the "
        "gate's Kyverno evaluator. Exit status 1 on any mismatch."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "paths", nargs="+", metavar="PATH", help="a kyverno-test.yaml or a directory to search"
        )
        parser.add_argument("--output", choices=["text", "json"], default="text")
        parser.add_argument("--detailed", action="store_true", help="show each rule's message")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tests = find_tests(options["paths"])
        except TestFileError as exc:
            raise CommandError(str(exc)) from exc
        if not tests:
            raise CommandError(f"no {', '.join(options['paths'])}: no kyverno-test.yaml found")
        outcomes = [run_test(t) for t in tests]
        failed = sum(1 for o in outcomes for r in o.rows if not r.ok)
        passed = sum(1 for o in outcomes for r in o.rows if r.ok)
        errors = [o for o in outcomes if o.error]
        if options["output"] == "json":
            self.stdout.write(
                json.dumps(
                    {
                        "tests": [o.as_dict() for o in outcomes],
                        "passed": passed,
                        "failed": failed,
                        "errors": len(errors),
                    },
                    indent=2,
                )
            )
        else:
            for o in outcomes:
                self._table(o, options["detailed"])
            self.stdout.write(
                f"\nTest Summary: {passed} tests passed and {failed} tests failed"
                + (f"; {len(errors)} test files could not run" if errors else "")
            )
        if failed or errors:
            raise SystemExit(1)

    def _table(self, o: Any, detailed: bool) -> None:
        self.stdout.write(f"Test {o.name} ({o.path})")
        if o.error:
            self.stdout.write(self.style.ERROR(f"  error: {o.error}"))
            return
        for note in o.unsupported:
            self.stdout.write(f"  not evaluated by Fleetgate: {note}")
        for note in o.not_applied:
            self.stdout.write(f"  not applied by the gate: {note}")
        header = f"  {'ID':>3} | {'POLICY':30} | {'RULE':36} | {'RESOURCE':50} | RESULT | REASON"
        self.stdout.write(header)
        for i, r in enumerate(o.rows, 1):
            result = "Pass" if r.ok else "Fail"
            line = f"  {i:>3} | {r.policy:30} | {r.rule:36} | {r.resource:50} | {result:6} | {r.reason}"
            self.stdout.write(line if r.ok else self.style.ERROR(line))
            if detailed and r.message:
                self.stdout.write(f"        {r.message}")
