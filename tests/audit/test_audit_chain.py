"""The hash chain: record() builds it, verify() and `manage.py audit_verify` find every kind of tampering."""

from __future__ import annotations

import itertools
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from fleet.audit.chain import GENESIS_HASH, canonical, event_hash
from fleet.audit.models import AuditChainHead, AuditEvent, AuditImmutable
from fleet.audit.services import record, seal, verify
from fleet.core.context import acting
from tests.audit.audit_support import raw_sql, tamper_update
from tests.factories import ClusterFactory, ClusterGroupFactory

pytestmark = pytest.mark.django_db


def _events(n: int) -> list[AuditEvent]:
    """Record n events, then seal them as the on-commit hook does once a real transaction commits (a test runs
    inside one transaction, whose commit hooks never run); the stored events, in the order recorded."""
    group = ClusterGroupFactory(name="staging")
    cluster = ClusterFactory(name="c-1")
    with acting(change_context="command"):
        recorded = [
            record(f"test.step{i}", cluster if i % 2 else group, message=f"step {i}", after={"i": i})
            for i in range(n)
        ]
    assert all(e.sequence is None and e.hash == "" for e in recorded)  # pending until sealed
    assert seal() == n
    stored = AuditEvent.objects.in_bulk([e.pk for e in recorded])
    return [stored[e.pk] for e in recorded]


def _verify_command() -> tuple[bool, str]:
    out = StringIO()
    try:
        call_command("audit_verify", stdout=out)
    except CommandError as exc:
        assert exc.returncode == 1
        return False, str(exc)
    return True, out.getvalue()


def test_record_builds_a_valid_chain() -> None:
    events = _events(5)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    stored = AuditEvent.objects.get(sequence=3)
    assert event_hash(stored.__dict__) == stored.hash
    head = AuditChainHead.objects.get(pk=1)
    assert (head.sequence, head.hash) == (5, events[-1].hash)
    result = verify()
    assert result.ok and result.checked == 5 and result.head_hash == events[-1].hash
    ok, text = _verify_command()
    assert ok
    assert text.strip() == f"OK: 5 events verified; head hash {events[-1].hash}"


def test_canonical_form_is_stable_and_names_every_field() -> None:
    event = _events(1)[0]
    text = canonical(event.__dict__)
    assert text.startswith('{"action":"test.step0","actor_id":null,"actor_name":"system","after":{"i":0}')
    assert '"time":"' in text and text.count("Z") >= 1
    # The same content with the time given as text hashes the same (what the export verifier relies on).
    as_text = {**event.__dict__, "time": event.time.isoformat()}
    assert event_hash(as_text) == event.hash


def test_the_orm_refuses_to_change_or_delete_events() -> None:
    event = _events(2)[0]
    event.message = "rewritten"
    with pytest.raises(AuditImmutable):
        event.save()
    with pytest.raises(AuditImmutable):
        event.delete()
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(message="rewritten")
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).message == "step 0"
    assert verify().ok


def test_an_edited_row_is_named_by_verify_and_audit_verify() -> None:
    events = _events(5)
    tamper_update("UPDATE audit_auditevent SET message = %s WHERE sequence = %s", ["nothing happened", 3])
    result = verify()
    assert not result.ok
    assert (result.first_bad_sequence, result.first_bad_id) == (3, events[2].pk)
    assert result.reason == "content does not match its hash"
    assert result.checked == 2
    ok, text = _verify_command()
    assert not ok
    assert f"BROKEN at event #3 (id {events[2].pk}): content does not match its hash" in text


def test_the_verify_endpoint_names_the_edited_event(admin_client: Any) -> None:
    events = _events(3)
    assert admin_client.get("/api/audit/events/verify/").json()["ok"] is True
    tamper_update("UPDATE audit_auditevent SET target_repr = %s WHERE sequence = %s", ["someone else", 2])
    body = admin_client.get("/api/audit/events/verify/").json()
    assert body == {
        "ok": False,
        "checked": 1,
        "head_hash": events[0].hash,
        "first_bad_sequence": 2,
        "reason": "content does not match its hash",
        "first_bad_id": events[1].pk,
    }


def test_an_edit_that_also_recomputes_the_hash_breaks_the_next_link() -> None:
    events = _events(4)
    forged = AuditEvent.objects.get(sequence=2)
    fields = {**forged.__dict__, "message": "forged"}
    new_hash = event_hash(fields)
    tamper_update(
        "UPDATE audit_auditevent SET message = %s, hash = %s WHERE sequence = %s", ["forged", new_hash, 2]
    )
    result = verify()
    assert not result.ok
    assert (result.first_bad_sequence, result.first_bad_id) == (3, events[2].pk)
    assert "link" in result.reason


def test_a_deleted_middle_event_is_detected() -> None:
    _events(5)
    assert raw_sql("DELETE FROM audit_auditevent WHERE sequence = %s", [3], allow_delete=True) == 1
    result = verify()
    assert not result.ok
    assert result.first_bad_sequence == 3
    assert result.reason == "event #3 is missing (the next event is #4)"
    ok, text = _verify_command()
    assert not ok and "BROKEN at event #3" in text


def test_a_truncated_tail_is_detected() -> None:
    events = _events(5)
    assert raw_sql("DELETE FROM audit_auditevent WHERE sequence >= %s", [4], allow_delete=True) == 2
    result = verify()
    assert not result.ok
    assert result.first_bad_sequence == 4
    assert result.reason == "events #4 to #5 are missing (the chain ends at #3, the chain head records #5)"
    assert result.head_hash == events[2].hash
    ok, text = _verify_command()
    assert not ok and "BROKEN at event #4: events #4 to #5 are missing" in text


def _forge_last(events: list[AuditEvent], message: str) -> str:
    """Edit the last event and recompute its own hash, as someone with write access to the table could."""
    last = AuditEvent.objects.get(sequence=events[-1].sequence)
    new_hash = event_hash({**last.__dict__, "message": message})
    tamper_update(
        "UPDATE audit_auditevent SET message = %s, hash = %s WHERE sequence = %s",
        [message, new_hash, last.sequence],
    )
    return new_hash


def test_an_edited_last_event_with_a_recomputed_hash_is_named_by_verify_and_audit_verify() -> None:
    events = _events(4)
    forged_hash = _forge_last(events, "forged")
    result = verify()
    assert not result.ok
    # The edited event itself, not one after it that does not exist.
    assert (result.first_bad_sequence, result.first_bad_id) == (4, events[3].pk)
    assert result.checked == 3
    assert result.head_hash == events[2].hash
    assert result.reason == (
        "content of the last event #4 was changed and its hash recomputed "
        f"(the chain head records hash {events[3].hash[:12]}…, the event now hashes to {forged_hash[:12]}…)"
    )
    ok, text = _verify_command()
    assert not ok
    assert f"BROKEN at event #4 (id {events[3].pk}): content of the last event #4 was changed" in text
    assert "#5" not in text


def test_the_verify_endpoint_names_an_edited_last_event(admin_client: Any) -> None:
    events = _events(3)
    _forge_last(events, "forged")
    body = admin_client.get("/api/audit/events/verify/").json()
    assert body["ok"] is False
    assert (body["first_bad_sequence"], body["first_bad_id"], body["checked"]) == (3, events[2].pk, 2)
    assert body["head_hash"] == events[1].hash
    assert body["reason"].startswith("content of the last event #3 was changed and its hash recomputed")


def test_an_event_appended_behind_the_head_is_named() -> None:
    events = _events(3)
    fields = {**AuditEvent.objects.get(sequence=3).__dict__}
    fields.update(sequence=4, prev_hash=events[2].hash, message="appended")
    fields["hash"] = event_hash(fields)
    columns = ["sequence", "time", "action", "message", "prev_hash", "hash", "actor_name", "change_context"]
    columns += ["request_id", "source_address", "target_type", "target_id", "target_repr"]
    columns += ["scope_group_id", "scope_group_name", "cluster_name", "repository_name", "before", "after"]
    columns += ["actor_id"]
    AuditEvent.objects.bulk_create([AuditEvent(**{c: fields[c] for c in columns})])
    result = verify()
    assert not result.ok
    assert result.first_bad_sequence == 4
    assert result.first_bad_id == AuditEvent.objects.get(sequence=4).pk
    assert result.reason == (
        "event #4 was added outside the audit log (the chain head records #3, the chain goes on to #4)"
    )
    assert result.checked == 3


def test_request_id_and_actor_from_an_api_call_land_in_the_event(admin_client: Any, admin_user: Any) -> None:
    response = admin_client.post(
        "/api/groups/",
        {"name": "edge", "selector": {"matchLabels": {"env": "edge"}}},
        format="json",
        HTTP_X_REQUEST_ID="req-audit-0001",
    )
    assert response.status_code == 201, response.content
    assert response["X-Request-ID"] == "req-audit-0001"
    event = AuditEvent.objects.get(action="clustergroup.create")
    assert event.request_id == "req-audit-0001"
    assert event.change_context == "api"
    assert (event.actor_id, event.actor_name) == (admin_user.pk, "root")
    assert event.scope_group_name == "edge"
    listed = admin_client.get("/api/audit/events/?request_id=req-audit-0001").json()
    assert [row["action"] for row in listed["results"]] == ["clustergroup.create"]
    assert verify().ok


postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL)")


@pytest.mark.postgres
@postgres
def test_postgres_trigger_refuses_update_and_delete_and_a_superuser_edit_is_still_found() -> None:
    events = _events(4)
    for sql in (
        "UPDATE audit_auditevent SET message = 'x' WHERE sequence = 2",
        "DELETE FROM audit_auditevent WHERE sequence = 2",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            raw_sql(sql)
    assert AuditEvent.objects.get(sequence=2).message == "step 1"
    assert verify().ok

    # A database superuser can switch the trigger off; the chain still names the edited event.
    tamper_update("UPDATE audit_auditevent SET actor_name = %s WHERE sequence = %s", ["someone-else", 2])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw_sql("UPDATE audit_auditevent SET message = 'x' WHERE sequence = 3")  # the trigger is back on
    ok, text = _verify_command()
    assert not ok
    assert f"BROKEN at event #2 (id {events[1].pk}): content does not match its hash" in text


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite has no trigger: raw SQL edits go through")
def test_sqlite_raw_update_goes_through_and_is_detected() -> None:
    _events(3)
    assert raw_sql("UPDATE audit_auditevent SET after = %s WHERE sequence = 1", ['{"i": 42}']) == 1
    result = verify()
    assert not result.ok and result.first_bad_sequence == 1
