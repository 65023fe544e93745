"""Retention: move the oldest audit events to a JSON Lines file, then delete them from the database.

The archived run is always a prefix of the chain (every event up to the last one older than the cut-off), so
what stays in the database is still one unbroken chain. `AuditChainHead.base_sequence/base_hash` then name the
last archived event, which is where `verify()` starts; the archive file ends with a trailer line recording the
same sequence and hash, so that the files and the database can be checked as one chain:

    python -m fleet.audit.verify_export archive-1.jsonl.gz archive-2.jsonl.gz current-export.jsonl

Deleting is the one thing the database otherwise refuses: the ORM raises `AuditImmutable`, and on PostgreSQL
the append-only trigger lets a DELETE through only in a transaction that set `fleetgate.audit_archive = 'on'`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from fleet.audit.chain import time_text
from fleet.audit.export import export_rows, jsonl_line
from fleet.audit.models import AuditChainHead, AuditEvent
from fleet.audit.services import record, verify
from fleet.audit.verify_export import verify_files


class ArchiveError(Exception):
    """Archiving was refused; nothing was deleted."""


@dataclass
class ArchiveResult:
    archived: int
    first_sequence: int | None
    last_sequence: int | None
    continues_from_hash: str
    output: Path | None
    file_sha256: str = ""
    remaining: int = 0


def cutoff_for(*, before: datetime | None = None, older_than_days: int | None = None) -> datetime:
    """The cut-off time: `before`, or now minus N days (default FLEETGATE_AUDIT_RETENTION_DAYS)."""
    if before is not None:
        if timezone.is_naive(before):
            before = timezone.make_aware(before, timezone.get_default_timezone())
        return before
    days = settings.FLEETGATE_AUDIT_RETENTION_DAYS if older_than_days is None else older_than_days
    if days < 0:
        raise ArchiveError("The number of days must not be negative.")
    return timezone.now() - timedelta(days=days)


def _last_archivable_sequence(head: AuditChainHead, cutoff: datetime) -> int:
    """The end of the longest run of events from the chain's start that are all older than the cut-off."""
    first_young = (
        AuditEvent.objects.filter(sequence__gt=head.base_sequence, time__gte=cutoff)
        .order_by(F("sequence").asc())
        .values_list("sequence", flat=True)
        .first()
    )
    if first_young is not None:
        return first_young - 1
    last = AuditEvent.objects.sealed().aggregate(last=Max("sequence"))["last"]
    return last if last is not None else head.base_sequence


def _open_output(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "wb")  # type: ignore[return-value]
    return path.open("wb")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _delete_range(first: int, last: int) -> int:
    """Delete events first..last with SQL, past the ORM's refusal and (on PostgreSQL) the trigger's."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    column = connection.ops.quote_name("sequence")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL fleetgate.audit_archive = 'on'")
        cursor.execute(
            f"DELETE FROM {table} WHERE {column} >= %s AND {column} <= %s",  # noqa: S608 (quoted names only)
            [first, last],
        )
        deleted = cursor.rowcount
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL fleetgate.audit_archive = 'off'")
    return deleted


def archive(
    output: Path,
    *,
    before: datetime | None = None,
    older_than_days: int | None = None,
) -> ArchiveResult:
    """Write every event older than the cut-off to `output` (JSON Lines, gzip if it ends in .gz), delete them.

    Refuses (ArchiveError, nothing deleted) when the chain does not verify, when `output` exists, or when the
    written file does not verify. Records an `audit.archive` event with the counts.
    """
    cutoff = cutoff_for(before=before, older_than_days=older_than_days)
    output = Path(output)
    if output.exists():
        raise ArchiveError(f"{output} exists; choose a new file name.")
    if not output.name.endswith((".jsonl", ".jsonl.gz")):
        raise ArchiveError("The archive file name must end in .jsonl or .jsonl.gz.")

    checked = verify()
    if not checked.ok:
        raise ArchiveError(
            f"The audit chain does not verify (event #{checked.first_bad_sequence}: {checked.reason}); "
            "refusing to archive. Run `manage.py audit_verify` and investigate first."
        )
    head = AuditChainHead.objects.get_or_create(pk=1)[0]
    base_sequence, base_hash = head.base_sequence, head.base_hash
    last = _last_archivable_sequence(head, cutoff)
    if last <= base_sequence:
        return ArchiveResult(0, None, None, base_hash, None, remaining=checked.checked)

    first = base_sequence + 1
    events = AuditEvent.objects.filter(sequence__gte=first, sequence__lte=last)
    last_hash = AuditEvent.objects.values_list("hash", flat=True).get(sequence=last)
    partial = output.with_name(".partial-" + output.name)
    count = 0
    try:
        with _open_output(partial) as handle:
            for row in export_rows(events):
                handle.write(jsonl_line(row).encode())
                count += 1
            trailer = {
                "archive": {
                    "format": "fleetgate-audit-archive/1",
                    "created": time_text(timezone.now()),
                    "cutoff": time_text(cutoff),
                    "first_sequence": first,
                    "last_sequence": last,
                    "count": count,
                    "starts_from_hash": base_hash,
                    "continues_from_sequence": last,
                    "continues_from_hash": last_hash,
                }
            }
            handle.write((json.dumps(trailer, separators=(",", ":")) + "\n").encode())
            handle.flush()
        with partial.open("rb") as raw:
            os.fsync(raw.fileno())
        report = verify_files(
            [str(partial)], start_sequence=base_sequence, start_hash=base_hash, expect_head=last_hash
        )
        if not report.ok or count != last - base_sequence:
            raise ArchiveError(f"The archive file did not verify ({report.text}); nothing was deleted.")
        partial.rename(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    file_sha256 = _sha256(output)

    with transaction.atomic():
        head = AuditChainHead.objects.select_for_update().get(pk=1)
        if head.base_sequence != base_sequence:
            raise ArchiveError("Another archive ran at the same time; nothing was deleted. Try again.")
        deleted = _delete_range(first, last)
        if deleted != count:
            raise ArchiveError(f"Expected to delete {count} events but {deleted} matched; rolled back.")
        AuditChainHead.objects.filter(pk=1).update(base_sequence=last, base_hash=last_hash)
        remaining = AuditEvent.objects.count()
        record(
            "audit.archive",
            target_type="auditevent",
            target_repr=f"events #{first} to #{last}",
            after={
                "archived": count,
                "first_sequence": first,
                "last_sequence": last,
                "continues_from_hash": last_hash,
                "cutoff": time_text(cutoff),
                "file": output.name,
                "file_sha256": file_sha256,
                "remaining": remaining,
            },
            message=(
                f"archived {count} events (#{first} to #{last}) older than {time_text(cutoff)} "
                f"to {output.name}"
            ),
        )
    return ArchiveResult(count, first, last, last_hash, output, file_sha256, remaining + 1)
