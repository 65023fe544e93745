"""`manage.py import_gitops FILE... [--group NAME] [--dry-run] [--user NAME]`: import Fleet, Argo CD and
Flux configuration as repositories, cluster groups and mappings (docs/sources.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from fleet.core.errors import DomainError
from fleet.sources.gitops_import import import_gitops

SINGULAR = {"repositories": "repository", "groups": "cluster group", "mappings": "mapping"}


class Command(BaseCommand):
    help = (
        "Import Rancher Fleet GitRepo, Argo CD Application/ApplicationSet and Flux GitRepository, "
        "Kustomization and HelmRelease objects from YAML files as repositories, cluster groups and path "
        "mappings. Lists what cannot be expressed and the secrets the sources refer to (never imported). "
        "--dry-run shows what would be created and creates nothing; a second import creates nothing new."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", help="YAML files ('-' for standard input)")
        parser.add_argument("--group", default="", help="target cluster group for Flux objects and Argo CD "
                            "in-cluster destinations")
        parser.add_argument("--repository", default="", help="existing repository for the mappings of charts "
                            "that name no Git repository (Argo CD source.chart, Flux HelmRepository charts)")
        parser.add_argument("--dry-run", action="store_true", help="show what would be created")
        parser.add_argument("--user", default="", help="import as this user (their roles are checked); "
                            "default: as the system")
        parser.add_argument("--json", action="store_true", help="print the whole outcome as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        import sys

        files = []
        for name in options["files"]:
            if name == "-":
                files.append(("<stdin>", sys.stdin.read()))
                continue
            try:
                files.append((name, Path(name).read_bytes()))
            except OSError as exc:
                raise CommandError(f"cannot read {name}: {exc.strerror}") from None
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user named {options['user']!r}")
        try:
            with acting(user=user, change_context=ChangeContext.COMMAND):
                outcome = import_gitops(user, files, target_group=options["group"],
                                        dry_run=options["dry_run"], repository=options["repository"])
        except DomainError as exc:
            raise CommandError(exc.message) from None
        except PermissionDenied as exc:  # OutOfScope, MembershipRefused: the user's roles refuse it
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(outcome.to_dict(), indent=2, default=str))
            return
        self.stdout.write(("DRY RUN: " if outcome.dry_run else "") + outcome.message())
        verb = "would create" if outcome.dry_run else "created"
        for kind, names in outcome.created.items():
            for name in names:
                self.stdout.write(f"  {verb} {SINGULAR[kind]} {name}")
        for kind, names in outcome.existing.items():
            for name in names:
                self.stdout.write(f"  exists: {SINGULAR[kind]} {name}")
        for text in outcome.conflicts:
            self.stdout.write(f"  conflict: {text}")
        plan = outcome.plan
        for title, items in (("not imported", plan.skipped), ("not expressible", plan.unsupported),
                             ("notes", plan.notes)):
            if items:
                self.stdout.write(f"{title}:")
                for f in items:
                    self.stdout.write(f"  {f.source}: {f.setting}: {f.reason}")
        if plan.secrets:
            self.stdout.write("secrets referenced (not imported):")
            for s in plan.secrets:
                self.stdout.write(f"  {s.source}: {s.setting}: {s.name} ({s.use})")
