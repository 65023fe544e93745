"""`manage.py import_policies PATH [--name NAME] [--group GROUP] [--enforcement deny|warn|dryrun]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from clusters.models import ClusterGroup
from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from policies.choices import Enforcement
from policies.services.definitions import EngineUnavailableForSave, PolicyInvalid
from policies.services.importing import ImportError_, import_files, read_directory


class Command(BaseCommand):
    help = (
        "Import policies from a directory as they are: Gatekeeper ConstraintTemplates and Constraints "
        "(YAML), conftest .rego files (one policy; *_test.rego are its tests) and data files "
        "(.json, data/*.yaml). "
        "With --enforcement, each imported policy is bound to --group (default: all clusters)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", help="a directory of policies (or a single YAML/.rego file)")
        parser.add_argument(
            "--name", default="", help="name of the conftest policy (default: directory name)"
        )
        parser.add_argument(
            "--group", default="", help="cluster group name to bind to (default: all clusters)"
        )
        parser.add_argument("--enforcement", choices=Enforcement.values, help="create bindings with this")
        parser.add_argument("--allow-failing-tests", action="store_true")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        if path.is_file():
            files = {path.name: path.read_text(encoding="utf-8")}
            default_name = path.stem
        else:
            try:
                files = read_directory(path)
            except ImportError_ as exc:
                raise CommandError(str(exc)) from None
            default_name = path.resolve().name
        group = None
        if options["group"]:
            group = ClusterGroup.objects.filter(name=options["group"]).first()
            if group is None:
                raise CommandError(f"no cluster group named {options['group']!r}")
        name = options["name"] or default_name.lower().replace(" ", "-")
        with acting(change_context=ChangeContext.COMMAND):
            try:
                result = import_files(
                    files,
                    name=name,
                    group=group,
                    enforcement=options["enforcement"],
                    allow_failing_tests=options["allow_failing_tests"],
                )
            except PolicyInvalid as exc:
                lines = [exc.message]
                for e in exc.errors:  # each error once: the first is usually in the message already
                    where = f"{e.get('path')}:{e.get('line')}:{e.get('column')}"
                    text = str(e.get("message"))
                    text = text if text.startswith(where) else f"{where}: {text}"
                    if text not in exc.message:
                        lines.append(f"  {text}")
                lines += [
                    f"  {t['name']}: {'PASS' if t['passed'] else 'FAIL'} {t['error']}" for t in exc.tests
                ]
                raise CommandError("\n".join(lines)) from None
            except (ImportError_, EngineUnavailableForSave) as exc:
                raise CommandError(str(exc)) from None
        data = result.as_dict()
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
            return
        for p in data["policies"]:
            state = "created" if p["created"] else ("new version" if p["new_version"] else "unchanged")
            tests = (
                f", {sum(t['passed'] for t in p['tests'])}/{len(p['tests'])} tests passed"
                if p["tests"]
                else ""
            )
            self.stdout.write(
                f"{p['name']} ({p['style']}{' ' + p['kind'] if p['kind'] else ''}): "
                f"v{p['version']} {state}{tests}"
            )
        for b in data["bindings"]:
            self.stdout.write(f"bound {b['policy']} to {b['group'] or 'all clusters'} ({b['enforcement']})")
        for ignored in data["ignored"]:
            self.stdout.write(f"ignored: {ignored}")
