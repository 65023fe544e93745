"""`manage.py render <repo> <commit> <mapping> --cluster NAME`: what that cluster would receive."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleet.sources.management.commands._lookup import get_mapping, get_repository
from fleet.sources.services.preview import PreviewError, preview_render


class Command(BaseCommand):
    help = (
        "Render a mapping of a repository at a commit for one cluster and print the multi-document YAML "
        "that cluster would receive (each document preceded by '# Source: <file>'). Nothing is stored. "
        "A render error prints the file and line and exits with code 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", help="repository name or id")
        parser.add_argument("commit", help="commit sha (or unique prefix), or 'head'")
        parser.add_argument("mapping", help="mapping name or id")
        parser.add_argument("--cluster", required=True, help="cluster name (a member of the mapping's group)")

    def handle(self, *args: Any, **options: Any) -> None:
        repo = get_repository(options["repository"])
        mapping = get_mapping(repo, options["mapping"])
        try:
            preview = preview_render(repo, options["commit"], mapping, options["cluster"])
        except PreviewError as exc:
            raise CommandError(str(exc), returncode=1) from None
        if not preview.ok and preview.error is not None:
            err = preview.error
            where = err.file or mapping.path
            if err.line is not None:
                where += f":{err.line}"
            raise CommandError(f"render failed at {where}: {err.message}", returncode=1)
        for warning in preview.warnings:
            self.stderr.write(f"warning: {warning}")
        self.stdout.write(preview.to_yaml(), ending="")
