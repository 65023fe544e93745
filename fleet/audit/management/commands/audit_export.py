"""`manage.py audit_export --format csv|jsonl|pdf --output FILE [filters]`, run as the system."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from fleet.audit.export import FORMATS, ExportError, filter_events, used_filters, write_export
from fleet.audit.services import record
from fleet.core.context import acting


class Command(BaseCommand):
    help = "Export audit events as CSV, JSON Lines or a PDF report (all events, filtered as on the API)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--format", choices=FORMATS, required=True, dest="fmt")
        parser.add_argument("--output", required=True, help="the file to write ('-' for stdout, not for pdf)")
        parser.add_argument("--since", help="events at or after this ISO 8601 time")
        parser.add_argument("--until", help="events before this ISO 8601 time")
        parser.add_argument("--actor", help="actor user name")
        parser.add_argument("--action", help="action prefix, e.g. 'cluster.' or 'policy.'")
        parser.add_argument("--cluster", help="cluster name")
        parser.add_argument("--group", help="cluster group name")
        parser.add_argument("--repository", help="repository name")
        parser.add_argument(
            "--change-context",
            action="append",
            dest="change_context",
            help="web, api, task, command or webhook (repeatable)",
        )
        parser.add_argument("--request-id", dest="request_id")
        parser.add_argument("--target-type", dest="target_type")
        parser.add_argument("--pdf-max-events", type=int, default=5000, help="rows in the PDF's event table")

    def handle(self, *args: Any, fmt: str, output: str, **options: Any) -> None:
        params = {
            key: options.get(key)
            for key in (
                "since",
                "until",
                "actor",
                "action",
                "cluster",
                "group",
                "repository",
                "change_context",
                "request_id",
                "target_type",
            )
            if options.get(key)
        }
        try:
            queryset = filter_events(params)
        except ExportError as exc:
            raise CommandError(f"Bad filter: {exc}") from exc
        filters = used_filters(params)
        pdf_options = {"max_events": options["pdf_max_events"]} if fmt == "pdf" else {}
        with acting():
            record(
                "audit.export",
                target_type="auditevent",
                after={"format": fmt, "filters": filters},
                message=f"exported audit events as {fmt} to a file",
            )
            if output == "-":
                if fmt == "pdf":
                    raise CommandError("Write the PDF to a file, not to stdout.")
                write_export(queryset, fmt, sys.stdout.buffer, filters=filters)
                return
            path = Path(output)
            if path.parent and not path.parent.exists():
                raise CommandError(f"The directory {path.parent} does not exist.")
            with path.open("wb") as handle:
                write_export(
                    queryset, fmt, handle, filters=filters, requested_by="system (manage.py)", **pdf_options
                )
        self.stderr.write(f"wrote {path}")
