"""`manage.py audit_archive [--before DATE | --older-than-days N] --output FILE.jsonl[.gz]`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from fleet.audit.archive import ArchiveError, archive
from fleet.core.context import acting


def _parse_when(text: str) -> datetime:
    when = parse_datetime(text)
    if when is None:
        day = parse_date(text)
        if day is not None:
            when = datetime(day.year, day.month, day.day)
    if when is None:
        raise CommandError(f"--before: {text!r} is not a date (YYYY-MM-DD) or ISO 8601 time.")
    return when


class Command(BaseCommand):
    help = (
        "Write audit events older than the retention period (FLEETGATE_AUDIT_RETENTION_DAYS, or --before / "
        "--older-than-days) to a JSON Lines file, then delete them; the remaining chain still verifies."
    )

    def add_arguments(self, parser: Any) -> None:
        when = parser.add_mutually_exclusive_group()
        when.add_argument(
            "--before", help="archive events before this date or time (server time zone if naive)"
        )
        when.add_argument("--older-than-days", type=int, dest="older_than_days")
        parser.add_argument("--output", required=True, help="a new file ending in .jsonl or .jsonl.gz")

    def handle(
        self, *args: Any, output: str, before: str | None, older_than_days: int | None, **opts: Any
    ) -> None:
        cutoff = _parse_when(before) if before else None
        try:
            with acting():
                result = archive(Path(output), before=cutoff, older_than_days=older_than_days)
        except ArchiveError as exc:
            raise CommandError(str(exc)) from exc
        if not result.archived:
            self.stdout.write("Nothing to archive: no event is older than the cut-off.")
            return
        self.stdout.write(
            f"Archived {result.archived} events (#{result.first_sequence} to #{result.last_sequence}) to "
            f"{result.output} (sha256 {result.file_sha256}); the chain continues from "
            f"{result.continues_from_hash}; {result.remaining} events remain."
        )
