"""`manage.py policy_check --mapping ID (--branch B | --commit SHA | --file manifests.yaml ...)`
[--operation CREATE|UPDATE|DELETE [--old old.yaml ...] | --live-cluster NAME].

Prints conftest-like output per cluster and exits 1 when any cluster is blocked (for CI before merge)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from fleet.sources.models import PathMapping
from policies.engine import create_engine
from policies.services import reports
from policies.services.checking import CheckInputError, check_mapping, live_cluster_for


class Command(BaseCommand):
    help = (
        "Evaluate the policies bound to a mapping's clusters on a branch, a commit or manifest files, "
        "without storing anything. Exit status 1 when any cluster is blocked, 2 when the check cannot run."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--mapping", required=True, help="mapping id or repository/name")
        ref = parser.add_mutually_exclusive_group(required=True)
        ref.add_argument("--branch")
        ref.add_argument("--commit")
        ref.add_argument("--file", action="append", help="a multi-document YAML file (repeatable)")
        parser.add_argument("--engine", choices=["regorus", "opa"], help="default: FLEETGATE_REGO_ENGINE")
        review = parser.add_mutually_exclusive_group()
        review.add_argument(
            "--operation",
            choices=["CREATE", "UPDATE", "DELETE"],
            help="review every object as this admission operation (default: CREATE)",
        )
        review.add_argument(
            "--live-cluster",
            metavar="NAME",
            help="review against the live state of this member cluster: CREATE/UPDATE by what it runs now, "
            "DELETE for what a sync would prune",
        )
        parser.add_argument(
            "--old",
            action="append",
            metavar="FILE",
            help="the old objects for --operation UPDATE (or DELETE), matched by kind/namespace/name",
        )
        parser.add_argument(
            "--output",
            choices=reports.FORMATS,
            default="text",
            help="text (conftest-like), json, junit (JUnit XML) or sarif (SARIF 2.1.0)",
        )

    def _mapping(self, ref: str) -> PathMapping:
        qs = PathMapping.objects.select_related("repository", "cluster_group")
        if ref.isdigit():
            mapping = qs.filter(pk=int(ref)).first()
        elif "/" in ref:
            repo, name = ref.split("/", 1)
            mapping = qs.filter(repository__name=repo, name=name).first()
        else:
            mapping = None
        if mapping is None:
            raise CommandError(f"no mapping {ref!r} (give its id or repository/name)")
        return mapping

    def handle(self, *args: Any, **options: Any) -> None:
        mapping = self._mapping(options["mapping"])
        files = []
        for name in options["file"] or []:
            path = Path(name)
            if not path.is_file():
                raise CommandError(f"{name}: no such file")
            files.append((path.name, path.read_text(encoding="utf-8")))
        engine = create_engine(options["engine"]) if options["engine"] else None
        old = []
        for name in options["old"] or []:
            path = Path(name)
            if not path.is_file():
                raise CommandError(f"{name}: no such file")
            old.append((path.name, path.read_text(encoding="utf-8")))
        with acting(change_context=ChangeContext.COMMAND):
            try:
                live = live_cluster_for(options["live_cluster"]) if options["live_cluster"] else None
                report = check_mapping(
                    mapping,
                    commit=options["commit"] or "",
                    branch=options["branch"] or "",
                    files=files,
                    engine=engine,
                    operation=options["operation"] or "",
                    old=old,
                    live_cluster=live,
                )
            except CheckInputError as exc:
                where = f" ({exc.file}:{exc.line})" if exc.file and exc.line else ""
                self.stderr.write(f"error: {exc.message}{where}")
                sys.exit(2)
        lines = reports.report_lines(report) if options["output"] == "sarif" else None
        self.stdout.write(reports.render(report, options["output"], lines=lines), ending="")
        if report.blocked:
            sys.exit(1)
