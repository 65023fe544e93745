"""Exports through the API and `manage.py audit_export`: formats, filters, restriction, streaming and
re-verification of the file."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.http import StreamingHttpResponse
from django.utils import timezone

from fleet.audit.export import EXPORT_FIELDS, write_pdf
from fleet.audit.models import AuditEvent
from fleet.audit.services import record, seal, verify
from fleet.audit.verify_export import verify_files
from fleet.core.context import acting
from tests.factories import ClusterFactory, ClusterGroupFactory, RepositoryFactory

pytestmark = pytest.mark.django_db

EXPORT = "/api/audit/events/export/"


@pytest.fixture
def world(make_user: Any) -> dict[str, Any]:
    """Events in two cluster groups, by two actors, on two clusters and a repository."""
    staging = ClusterGroupFactory(name="staging", selector={"matchLabels": {"env": "staging"}})
    prod = ClusterGroupFactory(name="prod", selector={"matchLabels": {"env": "prod"}})
    c_staging = ClusterFactory(name="c-staging", labels={"env": "staging"})
    c_prod = ClusterFactory(name="c-prod", labels={"env": "prod"})
    repo = RepositoryFactory(name="platform")
    alice = make_user("alice")
    bob = make_user("bob")
    with acting(user=alice, change_context="api"):
        record("cluster.update", c_staging, scope=staging, message="labels changed on staging")
        record(
            "policy.evaluate.deny",
            c_staging,
            scope=staging,
            repository=repo,
            after={"decision": "blocked"},
            message="policy no-latest-tag blocked web",
        )
        record("rollout.approve", c_staging, scope=staging, repository=repo, message="approved by alice")
    with acting(user=bob, change_context="api"):
        record("cluster.update", c_prod, scope=prod, message="labels changed on prod")
        record(
            "policy.evaluate.deny",
            c_prod,
            scope=prod,
            repository=repo,
            after={"decision": "deny"},
            message="policy no-root blocked api on prod",
        )
        record("repository.fetch", repo, scope=prod, message="fetched platform")
    seal()  # what the on-commit hook does once these commit (a test's transaction never commits)
    return {"staging": staging, "prod": prod, "alice": alice, "bob": bob}


def _body(response: Any) -> bytes:
    assert isinstance(response, StreamingHttpResponse), type(response)
    return b"".join(response.streaming_content)


def _jsonl(response: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _body(response).decode().splitlines()]


def test_csv_export_has_a_header_one_row_per_event_and_json_columns(world: Any, admin_client: Any) -> None:
    response = admin_client.get(EXPORT, {"format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="fleetgate-audit-') and disposition.endswith('.csv"')
    rows = list(csv.reader(io.StringIO(_body(response).decode())))
    assert tuple(rows[0]) == EXPORT_FIELDS
    records = [dict(zip(EXPORT_FIELDS, row, strict=True)) for row in rows[1:]]
    # Six events of the world, then the export's own audit record.
    assert [r["action"] for r in records][-1] == "audit.export"
    assert len(records) == AuditEvent.objects.count() == 7
    deny = next(r for r in records if r["message"] == "policy no-latest-tag blocked web")
    assert json.loads(deny["after"]) == {"decision": "blocked"}
    assert deny["before"] == ""
    assert (deny["cluster_name"], deny["repository_name"], deny["actor_name"]) == (
        "c-staging",
        "platform",
        "alice",
    )
    assert deny["hash"] == AuditEvent.objects.get(pk=int(deny["id"])).hash


def test_jsonl_export_reverifies_with_the_standalone_verifier(
    world: Any, admin_client: Any, tmp_path: Path
) -> None:
    response = admin_client.get(EXPORT, {"format": "jsonl"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/jsonl")
    assert response["Content-Disposition"].endswith('.jsonl"')
    body = _body(response)
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert set(lines[0]) == set(EXPORT_FIELDS)
    assert [line["sequence"] for line in lines] == list(range(1, 8))
    path = tmp_path / "export.jsonl"
    path.write_bytes(body)
    head = verify().head_hash

    # A separate interpreter without Django settings or a database: only the file.
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    run = subprocess.run(
        [sys.executable, "-m", "fleet.audit.verify_export", str(path), "--expect-head", head],
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == f"OK: 7 events verified, up to #7; last hash {head}"

    # Change one field of one line: the verifier names that event and exits 1.
    lines[3]["message"] = "nothing to see"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = subprocess.run(
        [sys.executable, "-m", "fleet.audit.verify_export", str(path)],
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        env=env,
        check=False,
    )
    assert run.returncode == 1
    expected = f"BROKEN at event #4 (id {lines[3]['id']}), {path}:4: content does not match"
    assert run.stdout.startswith(expected)


def test_verifier_reports_a_dropped_line_a_wrong_head_and_garbage(
    world: Any, admin_client: Any, tmp_path: Path
) -> None:
    lines = _body(admin_client.get(EXPORT, {"format": "jsonl"})).decode().splitlines(keepends=True)
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("".join(lines[:2] + lines[3:]))
    report = verify_files([str(dropped)])
    assert report.status == 1 and "event #3 is missing" in report.text
    whole = tmp_path / "whole.jsonl"
    whole.write_text("".join(lines))
    assert verify_files([str(whole)]).ok
    assert "not the expected" in verify_files([str(whole)], expect_head="f" * 64).text
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text(lines[0] + "{not json\n")
    report = verify_files([str(garbage)])
    assert report.status == 2 and f"{garbage}:2: not JSON" in report.text
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("".join(lines[:-1]))
    # A shorter file is a valid prefix, unless the head hash is known.
    assert verify_files([str(truncated)]).ok
    assert not verify_files([str(truncated)], expect_head=verify().head_hash).ok


FILTER_CASES = [
    ({"actor": "alice"}, 3),
    ({"action": "policy."}, 2),
    ({"action": "cluster"}, 2),
    ({"cluster": "c-prod"}, 2),
    ({"group": "staging"}, 3),
    ({"repository": "platform"}, 4),
    ({"group": "prod", "action": "policy."}, 1),
]


@pytest.mark.parametrize(("filters", "count"), FILTER_CASES, ids=[str(f) for f, _ in FILTER_CASES])
def test_export_filters_match_the_list_filters(
    world: Any, admin_client: Any, filters: dict[str, str], count: int
) -> None:
    listed = admin_client.get("/api/audit/events/", {**filters, "limit": 1000}).json()["results"]
    exported = _jsonl(admin_client.get(EXPORT, {"format": "jsonl", **filters}))
    assert len(exported) == count
    assert sorted(row["sequence"] for row in exported) == sorted(row["sequence"] for row in listed)


def test_a_filtered_export_verifies_event_by_event_with_gaps_counted(
    world: Any, admin_client: Any, tmp_path: Path
) -> None:
    path = tmp_path / "policy.jsonl"
    path.write_bytes(_body(admin_client.get(EXPORT, {"format": "jsonl", "action": "policy."})))
    strict = verify_files([str(path)])
    assert not strict.ok and "event #3 is missing (the next event is #5)" in strict.text
    report = verify_files([str(path)], allow_gaps=True)
    assert report.ok and report.check is not None and report.check.gaps == 1, report.text


def test_export_time_range(world: Any, admin_client: Any) -> None:
    events = list(AuditEvent.objects.order_by("sequence"))
    since = events[2].time.isoformat()
    until = events[4].time.isoformat()
    exported = _jsonl(admin_client.get(EXPORT, {"format": "jsonl", "since": since, "until": until}))
    assert [row["sequence"] for row in exported] == [3, 4]
    later = (timezone.now() + timedelta(days=1)).isoformat()
    assert _jsonl(admin_client.get(EXPORT, {"format": "jsonl", "since": later})) == []


def test_a_staging_viewer_exports_no_prod_event(
    world: Any, make_user: Any, token_client: Any, tmp_path: Path
) -> None:
    viewer = make_user("stella", role="viewer", scope=world["staging"])
    client = token_client(viewer)
    rows = _jsonl(client.get(EXPORT, {"format": "jsonl"}))
    assert {row["scope_group_name"] for row in rows} == {"staging"}
    assert [row["message"] for row in rows] == [
        "labels changed on staging",
        "policy no-latest-tag blocked web",
        "approved by alice",
    ]
    csv_text = _body(client.get(EXPORT, {"format": "csv"})).decode()
    assert "c-staging" in csv_text
    assert "prod" not in csv_text
    pdf = client.get(EXPORT, {"format": "pdf"})
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    path = tmp_path / "staging.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert verify_files([str(path)], allow_gaps=True).ok
    # Asking for prod explicitly gives nothing rather than an error.
    assert _jsonl(client.get(EXPORT, {"format": "jsonl", "group": "prod"})) == []


def test_export_is_audited_with_the_request_id(world: Any, admin_client: Any) -> None:
    response = admin_client.get(EXPORT, {"format": "csv", "actor": "bob"}, HTTP_X_REQUEST_ID="export-req-42")
    _body(response)
    event = AuditEvent.objects.get(action="audit.export")
    assert event.request_id == "export-req-42"
    assert event.actor_name == "root"
    assert event.after == {"format": "csv", "filters": {"actor": "bob"}}


def test_bad_format_and_bad_filters_are_400_with_field_messages(world: Any, admin_client: Any) -> None:
    response = admin_client.get(EXPORT, {"format": "xml"})
    assert response.status_code == 400
    assert "format" in response.json()
    response = admin_client.get(EXPORT)
    assert response.status_code == 400 and "format" in response.json()
    response = admin_client.get(EXPORT, {"format": "csv", "since": "last tuesday"})
    assert response.status_code == 400
    assert "since" in response.json()
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_unauthenticated_export_is_refused(world: Any, client: Any) -> None:
    assert client.get(EXPORT, {"format": "csv"}).status_code in (401, 403)


def test_export_of_20000_events_streams(chain_filler: Any, admin_client: Any) -> None:
    chain_filler(20_000)
    response = admin_client.get(EXPORT, {"format": "jsonl"})
    assert isinstance(response, StreamingHttpResponse)
    chunks = 0
    lines = 0
    last = b""
    for chunk in response.streaming_content:
        chunks += 1
        lines += chunk.count(b"\n")
        last = chunk
    assert lines == 20_001  # and the export's own event
    assert chunks > 10  # it left in pieces, not as one body
    assert json.loads(last.splitlines()[-1])["action"] == "audit.export"
    response = admin_client.get(EXPORT, {"format": "csv", "action": "test.bulk"})
    assert isinstance(response, StreamingHttpResponse)
    assert sum(chunk.count(b"\r\n") for chunk in response.streaming_content) == 20_001  # header + rows


def _pdf_text(queryset: Any, **options: Any) -> bytes:
    out = io.BytesIO()
    write_pdf(queryset, out, compress=False, invariant=True, **options)
    data = out.getvalue()
    assert data.startswith(b"%PDF-")
    return data


def test_pdf_report_has_summaries_decisions_events_and_verification(world: Any, chain_filler: Any) -> None:
    # A denial told by the recorded decision rather than the action name, and a non-denial.
    record("policy.evaluate", after={"decision": "blocked"}, message="decision says blocked")
    record("policy.evaluate", after={"decision": "allow"}, message="decision says allow")
    chain_filler(30, cluster_name="c-bulk")
    data = _pdf_text(
        AuditEvent.objects.all(), filters={"action": "(all)"}, requested_by="auditor", max_events=10
    )
    for text in (
        b"Fleetgate audit report",
        b"for auditor",
        b"Filters: action=\\(all\\)",
        b"Matching events: 38 \\(sequence #1 to #38\\)",
        b"Summary by action",
        b"Summary by actor",
        b"Summary by cluster",
        b"(test.bulk)",
        b"(30)",  # every bulk event is counted although the table lists only ten
        b"(c-bulk)",
        b"Policy denials: 3. Approvals: 1.",
        b"decision says blocked",
        b"policy no-root blocked api on prod",
        b"approved by alice",
        b"The table lists the last 10 of 38 matching events",
        b"bulk event 29",
        f"OK: 38 events verified; head hash {verify().head_hash}".encode(),
    ):
        assert text in data, text
    assert b"bulk event 19" not in data  # outside the table's cap
    assert b"decision says allow" not in data  # neither a denial nor in the last ten


def test_pdf_report_says_when_the_chain_is_broken(world: Any) -> None:
    from tests.audit.audit_support import tamper_update

    tamper_update("UPDATE audit_auditevent SET message = %s WHERE sequence = %s", ["edited", 2])
    data = _pdf_text(AuditEvent.objects.all())
    assert b"FAILED at event #2" in data


def test_audit_export_command_writes_each_format(world: Any, tmp_path: Path) -> None:
    jsonl = tmp_path / "out.jsonl"
    call_command(
        "audit_export", "--format", "jsonl", "--output", str(jsonl), "--group", "prod", stderr=io.StringIO()
    )
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [row["message"] for row in rows] == [
        "labels changed on prod",
        "policy no-root blocked api on prod",
        "fetched platform",
    ]
    assert verify_files([str(jsonl)], allow_gaps=True).ok
    everything = tmp_path / "all.jsonl"
    call_command("audit_export", "--format", "jsonl", "--output", str(everything), stderr=io.StringIO())
    # The command's own audit record comes first and is part of the file.
    report = verify_files([str(everything)], expect_head=verify().head_hash)
    assert report.ok, report.text
    assert (
        AuditEvent.objects.filter(
            action="audit.export", actor_name="system", change_context="command"
        ).count()
        == 2
    )

    out_csv = tmp_path / "out.csv"
    call_command(
        "audit_export", "--format", "csv", "--output", str(out_csv), "--actor", "alice", stderr=io.StringIO()
    )
    assert len(list(csv.reader(out_csv.open()))) == 4
    out_pdf = tmp_path / "out.pdf"
    call_command("audit_export", "--format", "pdf", "--output", str(out_pdf), stderr=io.StringIO())
    assert out_pdf.read_bytes().startswith(b"%PDF-")
    with pytest.raises(CommandError, match="since"):
        call_command("audit_export", "--format", "csv", "--output", str(out_csv), "--since", "yesterday-ish")
