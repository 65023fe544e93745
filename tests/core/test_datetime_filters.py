"""Date-time filters accept every valid ISO 8601 offset (±23:59) on every database: PostgreSQL refuses offsets
beyond ±15:59, so the filters query in UTC (found by schemathesis on the PostgreSQL pass)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fleet.audit.services import record

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    [
        "/api/audit/events/?until=0286-06-24T09:31:30.8-17:59",
        "/api/audit/events/?since=2026-01-01T00:00:00%2B23:30",
        "/api/audit/events/export/?format=csv&until=0286-06-24T09:31:30.8-17:59",
        "/api/commits/?since=2026-01-01T00:00:00%2B23:00",
        "/api/audit/events/?since=0001-01-01T00:00:00%2B05:00",
    ],
)
def test_extreme_offsets_are_answered(url: str, admin_client: Any) -> None:
    record("test.event", message="x")
    response = admin_client.get(url)
    assert response.status_code == 200, response.content[:300]


def test_offsets_mean_the_same_instant(admin_client: Any) -> None:
    event = record("test.event", message="x")
    instant = event.time.astimezone().isoformat()
    shifted = event.time.astimezone(ZoneInfo("Pacific/Kiritimati")).isoformat()
    for value in (instant, shifted):
        body = admin_client.get("/api/audit/events/", {"since": value}).json()
        assert [row["id"] for row in body["results"]] == [event.pk]
