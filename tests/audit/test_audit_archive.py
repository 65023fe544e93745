"""Retention: `manage.py audit_archive` moves the oldest events to a file; the rest of the chain still
verifies, and the archive files with an export of what remains verify as one chain."""

from __future__ import annotations

import gzip
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from fleet.audit.archive import ArchiveError, archive
from fleet.audit.chain import GENESIS_HASH
from fleet.audit.models import AuditChainHead, AuditEvent
from fleet.audit.services import record, verify
from fleet.audit.verify_export import verify_files
from tests.audit.audit_support import raw_sql, tamper_update

pytestmark = pytest.mark.django_db


def _old_and_new(chain_filler: Any, old: int = 50, new: int = 3) -> None:
    chain_filler(
        old, start=timezone.now() - timedelta(days=400), step=timedelta(minutes=1), action="test.old"
    )
    for i in range(new):
        record("test.new", target_type="thing", target_id=str(i), message=f"new {i}")


def _export_all(path: Path) -> Path:
    call_command("audit_export", "--format", "jsonl", "--output", str(path), stderr=io.StringIO())
    return path


def test_archive_moves_old_events_and_the_rest_still_verifies(chain_filler: Any, tmp_path: Path) -> None:
    _old_and_new(chain_filler)
    last_old_hash = AuditEvent.objects.get(sequence=50).hash
    out = io.StringIO()
    path = tmp_path / "audit-2025.jsonl.gz"
    call_command(
        "audit_archive", "--output", str(path), stdout=out
    )  # default: FLEETGATE_AUDIT_RETENTION_DAYS
    assert f"Archived 50 events (#1 to #50) to {path}" in out.getvalue()
    assert f"the chain continues from {last_old_hash}" in out.getvalue()

    assert list(AuditEvent.objects.order_by("sequence").values_list("action", flat=True)) == [
        "test.new",
        "test.new",
        "test.new",
        "audit.archive",
    ]
    head = AuditChainHead.objects.get(pk=1)
    assert (head.base_sequence, head.base_hash) == (50, last_old_hash)
    result = verify()
    assert result.ok and result.checked == 4
    ok_text = io.StringIO()
    call_command("audit_verify", stdout=ok_text)
    assert ok_text.getvalue().startswith("OK: 4 events verified, continuing from archived #50")

    lines = gzip.open(path, "rt").read().splitlines()
    assert len(lines) == 51
    assert json.loads(lines[0])["prev_hash"] == GENESIS_HASH
    trailer = json.loads(lines[-1])["archive"]
    assert trailer["count"] == 50
    assert (trailer["continues_from_sequence"], trailer["continues_from_hash"]) == (50, last_old_hash)
    assert trailer["starts_from_hash"] == GENESIS_HASH
    report = verify_files([str(path)])
    assert report.ok and report.text.startswith("OK: 50 events verified, up to #50"), report.text

    event = AuditEvent.objects.get(action="audit.archive")
    assert event.after["archived"] == 50
    assert event.after["continues_from_hash"] == last_old_hash
    assert event.after["file"] == "audit-2025.jsonl.gz"
    assert event.actor_name == "system" and event.change_context == "command"

    # The archive and an export of what remains are one chain, up to today's head.
    export = _export_all(tmp_path / "now.jsonl")
    joined = verify_files([str(path), str(export)], expect_head=verify().head_hash)
    assert joined.ok, joined.text
    # The export alone starts where the archive ends.
    assert verify_files([str(export)], start_hash=last_old_hash).ok
    assert not verify_files([str(export)], start_hash=GENESIS_HASH).ok


def test_two_archives_and_the_rest_chain_together(chain_filler: Any, tmp_path: Path) -> None:
    _old_and_new(chain_filler, old=30)
    first = tmp_path / "a1.jsonl"
    cutoff = AuditEvent.objects.get(sequence=11).time
    result = archive(first, before=cutoff)
    assert (result.archived, result.first_sequence, result.last_sequence) == (10, 1, 10)
    second = tmp_path / "a2.jsonl"
    result = archive(second, older_than_days=30)
    assert (result.archived, result.first_sequence, result.last_sequence) == (20, 11, 30)
    assert verify().ok
    export = _export_all(tmp_path / "rest.jsonl")
    assert verify_files([str(first), str(second), str(export)], expect_head=verify().head_hash).ok
    # Out of order, or with an archive missing, the files do not chain.
    assert not verify_files([str(second), str(first)]).ok
    missing = verify_files([str(first), str(export)])
    assert not missing.ok and "event #11 is missing" in missing.text


def test_archive_takes_only_the_prefix_older_than_the_cut_off(chain_filler: Any, tmp_path: Path) -> None:
    now = timezone.now()
    chain_filler(5, start=now - timedelta(days=500), step=timedelta(minutes=1))
    chain_filler(1, start=now - timedelta(days=10))
    chain_filler(5, start=now - timedelta(days=450), step=timedelta(minutes=1))  # old but after a young one
    result = archive(tmp_path / "a.jsonl", older_than_days=365)
    assert (result.archived, result.last_sequence) == (5, 5)
    assert AuditEvent.objects.filter(time__lt=now - timedelta(days=365)).count() == 5
    assert verify().ok


def test_archive_refuses_a_broken_chain_and_deletes_nothing(chain_filler: Any, tmp_path: Path) -> None:
    _old_and_new(chain_filler, old=10)
    tamper_update("UPDATE audit_auditevent SET message = %s WHERE sequence = %s", ["edited", 4])
    path = tmp_path / "a.jsonl"
    with pytest.raises(CommandError, match=r"does not verify \(event #4: content does not match its hash\)"):
        call_command("audit_archive", "--older-than-days", "30", "--output", str(path))
    assert not path.exists()
    assert AuditEvent.objects.count() == 13
    assert AuditChainHead.objects.get(pk=1).base_sequence == 0


def test_archive_refuses_bad_arguments(chain_filler: Any, tmp_path: Path) -> None:
    _old_and_new(chain_filler, old=5)
    existing = tmp_path / "a.jsonl"
    existing.write_text("keep me\n")
    with pytest.raises(ArchiveError, match="exists"):
        archive(existing, older_than_days=30)
    assert existing.read_text() == "keep me\n"
    with pytest.raises(ArchiveError, match=r"\.jsonl"):
        archive(tmp_path / "a.csv", older_than_days=30)
    with pytest.raises(CommandError, match="not a date"):
        call_command("audit_archive", "--before", "soon", "--output", str(tmp_path / "b.jsonl"))
    with pytest.raises(CommandError):
        call_command(
            "audit_archive", "--before", "2020-01-01", "--older-than-days", "3", "--output", "x.jsonl"
        )
    assert AuditEvent.objects.count() == 8


def test_nothing_to_archive(chain_filler: Any, tmp_path: Path) -> None:
    record("test.new", target_type="thing")
    out = io.StringIO()
    call_command("audit_archive", "--before", "2001-01-01", "--output", str(tmp_path / "a.jsonl"), stdout=out)
    assert "Nothing to archive" in out.getvalue()
    assert not (tmp_path / "a.jsonl").exists()
    assert AuditEvent.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL)")
def test_postgres_archive_passes_the_trigger_only_for_itself(chain_filler: Any, tmp_path: Path) -> None:
    _old_and_new(chain_filler, old=10)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw_sql("DELETE FROM audit_auditevent WHERE sequence = 1")
    result = archive(tmp_path / "a.jsonl", older_than_days=30)
    assert result.archived == 10
    # The flag was local to the archive's statement: the trigger refuses deletes again.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw_sql("DELETE FROM audit_auditevent WHERE sequence = 11")
    assert verify().ok
