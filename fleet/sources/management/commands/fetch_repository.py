"""`manage.py fetch_repository <repo>`: fetch inline, print the new commits and what was rendered."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from fleet.sources.choices import FetchTrigger
from fleet.sources.management.commands._lookup import get_repository
from fleet.sources.services import fetch_repository


class Command(BaseCommand):
    help = "Fetch a repository now: record its new commits, render the mappings they affect, print both."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", help="repository name or id")
        parser.add_argument("--no-render", action="store_true", help="record commits only")

    def handle(self, *args: Any, **options: Any) -> None:
        repo = get_repository(options["repository"])
        with acting(change_context=ChangeContext.COMMAND):
            outcome = fetch_repository(repo, trigger=FetchTrigger.COMMAND, render=not options["no_render"])
        if not outcome.ok:
            error = outcome.error or {}
            raise CommandError(f"fetch of {repo.name} failed ({error.get('code')}): {error.get('message')}",
                               returncode=1)
        head = (outcome.new_head or "")[:10]
        if not outcome.commits:
            self.stdout.write(f"{repo.name}: up to date at {head}")
        else:
            forced = " (force-push)" if outcome.force_push else ""
            more = " (truncated: only the newest were recorded)" if outcome.truncated else ""
            self.stdout.write(f"{repo.name}: {len(outcome.commits)} new commit(s){forced}{more}, head {head}")
            for c in outcome.commits:
                mark = " [forced]" if c.forced else ""
                self.stdout.write(f"  {c.sha[:10]} {c.summary}{mark}")
        for r in outcome.renders:
            line = (f"  render {r.mapping} at {r.commit[:10]}: {r.status} ({r.reason}; "
                    f"{r.clusters} cluster(s), {r.objects} object(s), {r.rendered} rendered, "
                    f"{r.reused} reused)")
            if r.error:
                where = r.error.get("file") or ""
                if where and r.error.get("line"):
                    where += f":{r.error['line']}"
                line += f": {where + ': ' if where else ''}{r.error.get('message')}"
            self.stdout.write(line)
