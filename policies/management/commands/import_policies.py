"""`manage.py import_policies PATH [--name NAME] [--group GROUP] [--enforcement deny|warn|dryrun]`, and with
`--preview` the impact of the import, printed, nothing stored (docs/policies.md#impact-preview)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from clusters.models import ClusterGroup
from fleet.audit.services import record
from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from policies.choices import Enforcement
from policies.gate import language_of
from policies.models import MAX_WAIVER_DAYS, Policy, PolicyBinding
from policies.services import preview
from policies.services.admission_import import DEFAULT_EXCEPTION_DAYS, EXPIRES_ANNOTATION
from policies.services.definitions import EngineUnavailableForSave, PolicyInvalid, validate_definition
from policies.services.importing import ImportError_, import_files, plan_import, read_directory


class Command(BaseCommand):
    help = (
        "Import policies from a directory as they are: Gatekeeper ConstraintTemplates and Constraints "
        "(YAML), conftest .rego files (one policy; *_test.rego are its tests) and data files "
        "(.json, data/*.yaml), ValidatingAdmissionPolicies with their bindings (one policy per binding), "
        "Kyverno ClusterPolicies/Policies and PolicyExceptions (waivers). "
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
        parser.add_argument(
            "--exception-days",
            type=int,
            default=DEFAULT_EXCEPTION_DAYS,
            help="Kyverno PolicyExceptions: days their waivers last unless the exception's "
            f"{EXPIRES_ANNOTATION} annotation says (at most {MAX_WAIVER_DAYS})",
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument(
            "--preview",
            action="store_true",
            help="change nothing: print the impact of the import (new policies with --enforcement, new "
            "versions, bindings) on what every cluster in scope runs now",
        )
        parser.add_argument(
            "--no-live", action="store_true", help="with --preview: do not read the clusters' live objects"
        )

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
        if not 1 <= options["exception_days"] <= MAX_WAIVER_DAYS:
            raise CommandError(f"--exception-days must be between 1 and {MAX_WAIVER_DAYS}")
        if options["preview"]:
            self._preview(files, name, group, options)
            return
        with acting(change_context=ChangeContext.COMMAND):
            try:
                result = import_files(
                    files,
                    name=name,
                    group=group,
                    enforcement=options["enforcement"],
                    allow_failing_tests=options["allow_failing_tests"],
                    exception_days=options["exception_days"],
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
                f"{p['name']} ({language_of(p['style'])}{' ' + p['kind'] if p['kind'] else ''}): "
                f"v{p['version']} {state}{tests}"
            )
        for b in data["bindings"]:
            self.stdout.write(f"bound {b['policy']} to {b['group'] or 'all clusters'} ({b['enforcement']})")
        for w in data["waivers"]:
            what = "/".join(x for x in (w["kind"], w["namespace"], w["name_pattern"]) if x) or "any object"
            labels = "".join(f" {k}={v}" for k, v in sorted(w["labels"].items()))
            self.stdout.write(
                f"waiver #{w['id']} of {w['policy']} rule {w['rule']} for {what}{labels} until "
                f"{w['expires_at']} ({w['origin']})"
            )
        for line in data["reported"]:
            self.stdout.write(f"reported: {line}")
        for ignored in data["ignored"]:
            self.stdout.write(f"ignored: {ignored}")

    def _preview(
        self, files: dict[str, str], name: str, group: ClusterGroup | None, options: dict[str, Any]
    ) -> None:
        """The impact of importing ``files``, computed and printed; nothing is stored (the run is audited)."""
        try:
            plans, _ignored = plan_import(files, name=name)
            for _policy_name, definition in plans:
                validate_definition(definition, allow_failing_tests=options["allow_failing_tests"])
        except PolicyInvalid as exc:
            raise CommandError(exc.message) from None
        except (ImportError_, EngineUnavailableForSave) as exc:
            raise CommandError(str(exc)) from None
        reports = []
        enforcement = options["enforcement"]
        with acting(change_context=ChangeContext.COMMAND):
            for policy_name, definition in plans:
                policy = Policy.objects.filter(name=policy_name).first()
                binding = None
                if enforcement is not None:
                    existing = (
                        PolicyBinding.objects.filter(policy=policy, cluster_group=group).first()
                        if policy is not None
                        else None
                    )
                    binding = preview.BindingChange(
                        existing.pk if existing is not None else None,
                        group.pk if group is not None else None,
                        enforcement,
                        existing.pinned_version_id if existing is not None else None,
                    )
                elif policy is None:
                    raise CommandError(f"{policy_name} is a new policy: give --enforcement to preview it")
                proposal = preview.Proposal(
                    policy.pk if policy is not None else None, policy_name, definition.as_content(), binding
                )
                try:
                    preview.validate(proposal)
                except preview.PreviewError as exc:
                    raise CommandError(exc.message) from None
                report = preview.compute(proposal, live=not options["no_live"])
                record(
                    "policypreview.run",
                    policy,
                    target_type="policy",
                    scope=group,
                    after={"policy": policy_name, "counts": report["counts"]},
                    message=f"import_policies --preview of {policy_name}: "
                    f"{preview.summary_text(report['counts'])}",
                )
                reports.append(report)
        if options["json"]:
            self.stdout.write(json.dumps(reports, indent=2))
            return
        for report in reports:
            for line in preview.report_lines(report):
                self.stdout.write(line)
