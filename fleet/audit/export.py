"""Exporting audit events: CSV, JSON Lines and a PDF report.

CSV and JSON Lines stream in constant memory: rows come from `values().iterator(chunk_size)` and leave as
byte chunks from a generator, whatever the number of events. The PDF report holds at most `max_events` rows in
its event table (the newest ones, and it says so), but its summary counts are aggregate queries over every
matching event.

The JSON Lines form is the one a third party re-verifies (`python -m fleet.audit.verify_export`): one event
per line with every hashed field, `prev_hash` and `hash`, times in the canonical text form.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any
from xml.sax.saxutils import escape

from django.db.models import Count, F, Max, Min, Q, QuerySet
from django.http import QueryDict
from django.utils import timezone

from fleet.audit.chain import HASHED_FIELDS, time_text
from fleet.audit.filtersets import AuditEventFilterSet
from fleet.audit.models import AuditEvent
from fleet.audit.sealing import seal

FORMATS = ("csv", "jsonl", "pdf")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/jsonl; charset=utf-8",
    "pdf": "application/pdf",
}
EXPORT_FIELDS = ("id", *HASHED_FIELDS, "hash")  # every hashed field, so an export re-verifies
# The filters an export accepts: the list endpoint's AuditEventFilterSet.
FILTERS = (
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
CHUNK_SIZE = 2000
FLUSH_BYTES = 256 * 1024
PDF_MAX_EVENTS = 5000
# Cells a spreadsheet would run as a formula start with one of these; such text cells get a leading quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TEXT_COLUMNS = {
    "actor_name",
    "target_id",
    "target_repr",
    "scope_group_name",
    "cluster_name",
    "repository_name",
    "message",
    "action",
    "target_type",
    "request_id",
    "source_address",
}


class ExportError(ValueError):
    """Bad export parameters; `errors` maps a parameter to its messages."""

    def __init__(self, errors: Mapping[str, Any]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{key}: {value}" for key, value in self.errors.items()))


def filter_events(params: Mapping[str, Any], queryset: QuerySet | None = None) -> QuerySet:
    """Apply the list filters (since, until, actor, action prefix, cluster, group, repository, ...)."""
    data: Any
    if hasattr(
        params, "getlist"
    ):  # a QueryDict: keep repeated parameters (change_context=api&change_context=web)
        data = QueryDict(mutable=True)
        for key in FILTERS:
            values = [v for v in params.getlist(key) if v not in (None, "")]
            if values:
                data.setlist(key, values)
    else:
        data = {key: value for key, value in params.items() if key in FILTERS and value not in (None, "")}
    filterset = AuditEventFilterSet(
        data=data, queryset=queryset if queryset is not None else AuditEvent.objects.all()
    )
    if not filterset.is_valid():
        raise ExportError({key: [str(m) for m in messages] for key, messages in filterset.errors.items()})
    return filterset.qs


def used_filters(params: Mapping[str, Any]) -> dict[str, str]:
    """The filters that were given, as text, for a report's header."""
    found: dict[str, str] = {}
    getlist = getattr(params, "getlist", None)
    for key in FILTERS:
        if key not in params or params[key] in (None, ""):
            continue
        value = getlist(key) if getlist else params[key]
        found[key] = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return found


def sealed(queryset: QuerySet) -> QuerySet:
    """Seal every event committed so far (waiting for a sealer that holds the head), then the matching sealed
    events: an export holds chained events only, so that it re-verifies."""
    seal(wait=True)
    return queryset.filter(sequence__isnull=False)


def export_rows(queryset: QuerySet, chunk_size: int = CHUNK_SIZE) -> Iterator[dict[str, Any]]:
    """Matching events as dicts in chain order, fetched `chunk_size` at a time (sealed first)."""
    rows = sealed(queryset).order_by(F("sequence").asc()).values(*EXPORT_FIELDS)
    return rows.iterator(chunk_size=chunk_size)


def jsonl_line(row: Mapping[str, Any]) -> str:
    data = dict(row)
    data["time"] = time_text(data["time"])
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


def _batched(pieces: Iterable[str], flush: int = FLUSH_BYTES) -> Iterator[bytes]:
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= flush:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


def iter_jsonl(queryset: QuerySet, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The JSON Lines export as byte chunks of about 256 KiB."""
    return _batched(jsonl_line(row) for row in export_rows(queryset, chunk_size))


_TIME_INDEX = EXPORT_FIELDS.index("time")
_JSON_INDEXES = (EXPORT_FIELDS.index("before"), EXPORT_FIELDS.index("after"))
_TEXT_INDEXES = tuple(i for i, name in enumerate(EXPORT_FIELDS) if name in _TEXT_COLUMNS)
_FORMULA_CHARS = frozenset("".join(_FORMULA_START))


def csv_cells(row: Iterable[Any]) -> list[Any]:
    """One event (a values_list tuple in EXPORT_FIELDS order) as CSV cells."""
    cells = list(row)
    cells[_TIME_INDEX] = time_text(cells[_TIME_INDEX])
    for i in _JSON_INDEXES:
        value = cells[i]
        cells[i] = "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    for i in _TEXT_INDEXES:
        value = cells[i]
        if value and value[0] in _FORMULA_CHARS:
            cells[i] = "'" + value
    return cells


def _csv_lines(rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    for row in rows:
        writer.writerow(csv_cells(row))
        if out.tell() >= FLUSH_BYTES:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def iter_csv(queryset: QuerySet, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The CSV export (header row, one row per event, before/after as JSON text) as byte chunks."""
    ordered = sealed(queryset).order_by(F("sequence").asc()).values_list(*EXPORT_FIELDS)
    return _batched(_csv_lines(ordered.iterator(chunk_size=chunk_size)))


def export_filename(fmt: str, now: datetime | None = None) -> str:
    stamp = (now or timezone.now()).strftime("%Y%m%dT%H%M%SZ")
    return f"fleetgate-audit-{stamp}.{fmt}"


# --- PDF report ---

POLICY_DECISIONS = ("blocked", "block", "deny", "denied")


def denial_q() -> Q:
    """Policy denials: `policy.*` events whose action or recorded decision says blocked/deny."""
    return Q(action__startswith="policy.") & (
        Q(action__icontains="deny")
        | Q(action__icontains="denied")
        | Q(action__icontains="block")
        | Q(after__decision__in=POLICY_DECISIONS)
    )


def approval_q() -> Q:
    return Q(action__startswith="rollout.approve") | Q(action__startswith="approval.")


@dataclass
class ReportSummary:
    total: int
    first_sequence: int | None
    last_sequence: int | None
    by_action: list[tuple[str, int]]
    by_actor: list[tuple[str, int]]
    by_cluster: list[tuple[str, int]]
    denials: int
    approvals: int
    extra: dict[str, Any] = field(default_factory=dict)


def _counts(queryset: QuerySet, name: str) -> list[tuple[str, int]]:
    rows = queryset.order_by().values(name).annotate(n=Count("id")).order_by("-n", name)
    return [(row[name] or "", row["n"]) for row in rows]


def summarize(queryset: QuerySet) -> ReportSummary:
    """Counts over every matching event, by aggregate queries (no rows are loaded)."""
    agg = queryset.order_by().aggregate(total=Count("id"), first=Min("sequence"), last=Max("sequence"))
    return ReportSummary(
        total=agg["total"],
        first_sequence=agg["first"],
        last_sequence=agg["last"],
        by_action=_counts(queryset, "action"),
        by_actor=_counts(queryset, "actor_name"),
        by_cluster=_counts(queryset, "cluster_name"),
        denials=queryset.filter(denial_q()).count(),
        approvals=queryset.filter(approval_q()).count(),
    )


def write_pdf(
    queryset: QuerySet,
    out: IO[bytes],
    *,
    filters: Mapping[str, str] | None = None,
    requested_by: str = "system",
    max_events: int = PDF_MAX_EVENTS,
    max_summary_rows: int = 40,
    verify_chain: bool = True,
    compress: bool = True,
    invariant: bool = False,
) -> ReportSummary:
    """Write the PDF report of the matching events to `out`; return its summary.

    `compress=False, invariant=True` give a PDF whose text can be read in the raw bytes (used by tests).
    """
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    from fleet.audit.services import verify

    styles = getSampleStyleSheet()
    small = ParagraphStyle("small", parent=styles["BodyText"], fontSize=7, leading=8.5)
    body = styles["BodyText"]
    queryset = sealed(queryset)
    summary = summarize(queryset)
    now = timezone.now()

    def para(text: Any, style: ParagraphStyle = small) -> Paragraph:
        return Paragraph(escape(str(text)), style)

    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
            ("FONTSIZE", (0, 0), (-1, -1), 7),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )

    def count_table(title: str, rows: list[tuple[str, int]], empty_label: str) -> list[Any]:
        shown = rows[:max_summary_rows]
        data: list[list[Any]] = [[title, "events"]]
        data += [[para(name or empty_label), count] for name, count in shown]
        if len(rows) > len(shown):
            rest = sum(count for _, count in rows[len(shown) :])
            data.append([para(f"… {len(rows) - len(shown)} more", small), rest])
        table = Table(data, colWidths=[110 * mm, 25 * mm], hAlign="LEFT")
        table.setStyle(grid)
        return [table, Spacer(1, 4 * mm)]

    story: list[Any] = [
        Paragraph("Fleetgate audit report", styles["Title"]),
        para(f"Generated {time_text(now)} for {requested_by}.", body),
        para(
            "Filters: "
            + (
                ", ".join(f"{k}={v}" for k, v in (filters or {}).items())
                or "none (every event the requester may view)"
            ),
            body,
        ),
        para(
            f"Matching events: {summary.total}"
            + (f" (sequence #{summary.first_sequence} to #{summary.last_sequence})" if summary.total else ""),
            body,
        ),
        Spacer(1, 4 * mm),
        Paragraph("Summary by action", styles["Heading2"]),
        *count_table("action", summary.by_action, "(none)"),
        Paragraph("Summary by actor", styles["Heading2"]),
        *count_table("actor", summary.by_actor, "(none)"),
        Paragraph("Summary by cluster", styles["Heading2"]),
        *count_table("cluster", summary.by_cluster, "(no cluster)"),
    ]

    def event_rows(qs: QuerySet, limit: int) -> list[dict[str, Any]]:
        fields = (
            "sequence",
            "time",
            "actor_name",
            "action",
            "target_type",
            "target_repr",
            "cluster_name",
            "message",
        )
        rows = list(qs.order_by("-sequence").values(*fields)[:limit])
        rows.reverse()
        return rows

    def event_tables(rows: list[dict[str, Any]]) -> list[Any]:
        header = ["#", "time (UTC)", "actor", "action", "target", "message"]
        widths = [14 * mm, 34 * mm, 30 * mm, 38 * mm, 60 * mm, 101 * mm]
        flow: list[Any] = []
        for start in range(0, len(rows), 200):
            data: list[list[Any]] = [header]
            for row in rows[start : start + 200]:
                target = f"{row['target_type']} {row['target_repr']}".strip()
                if row["cluster_name"]:
                    target += f" @ {row['cluster_name']}"
                data.append(
                    [
                        row["sequence"],
                        time_text(row["time"])[:19].replace("T", " "),
                        para(row["actor_name"]),
                        para(row["action"]),
                        para(target[:200]),
                        para((row["message"] or "")[:300]),
                    ]
                )
            table = Table(data, colWidths=widths, repeatRows=1, hAlign="LEFT")
            table.setStyle(grid)
            flow.append(table)
        return flow

    story.append(Paragraph("Policy denials and approvals", styles["Heading2"]))
    story.append(para(f"Policy denials: {summary.denials}. Approvals: {summary.approvals}.", body))
    decisions = queryset.filter(denial_q() | approval_q())
    decision_rows = event_rows(decisions, max_events)
    if len(decision_rows) < summary.denials + summary.approvals:
        story.append(para(f"Showing the last {len(decision_rows)} of them.", body))
    story += event_tables(decision_rows)
    story.append(Spacer(1, 4 * mm))

    story.append(Paragraph("Events", styles["Heading2"]))
    rows = event_rows(queryset, max_events)
    if summary.total > len(rows):
        story.append(
            para(
                f"The table lists the last {len(rows)} of {summary.total} matching events; "
                "the counts above cover all of them. Export CSV or JSON Lines for every event.",
                body,
            )
        )
    story += event_tables(rows)
    story.append(Spacer(1, 4 * mm))

    story.append(Paragraph("Chain verification", styles["Heading2"]))
    if verify_chain:
        result = verify()
        if result.ok:
            text = f"OK: {result.checked} events verified; head hash {result.head_hash}."
        else:
            text = (
                f"FAILED at event #{result.first_bad_sequence} (id {result.first_bad_id}): {result.reason}. "
                f"{result.checked} events verified before it; last good hash {result.head_hash}."
            )
        summary.extra["verify"] = result
    else:
        text = "Not run for this report."
    story.append(para(text, body))

    doc = SimpleDocTemplate(
        out,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title="Fleetgate audit report",
        author="Fleetgate",
        invariant=1 if invariant else 0,
        pageCompression=1 if compress else 0,
    )
    stamp = time_text(now)[:19].replace("T", " ") + " UTC"

    def footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawRightString(
            document.pagesize[0] - 12 * mm, 6 * mm, f"Fleetgate audit report - {stamp} - page {document.page}"
        )
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return summary


def write_export(
    queryset: QuerySet,
    fmt: str,
    out: IO[bytes],
    *,
    filters: Mapping[str, str] | None = None,
    requested_by: str = "system",
    **pdf_options: Any,
) -> None:
    """Write an export in `fmt` (csv, jsonl, pdf) to a binary file."""
    if fmt == "csv":
        chunks: Iterable[bytes] = iter_csv(queryset)
    elif fmt == "jsonl":
        chunks = iter_jsonl(queryset)
    elif fmt == "pdf":
        write_pdf(queryset, out, filters=filters, requested_by=requested_by, **pdf_options)
        return
    else:
        raise ExportError({"format": [f"Choose one of {', '.join(FORMATS)}."]})
    for chunk in chunks:
        out.write(chunk)
