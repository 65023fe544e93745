"""Sync windows are exact at every instant: just before, at and just after each start and each end, with
overlapping occurrences, and across daylight-saving changes (durations are elapsed time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clusters.windows import sync_allowed

TICK = timedelta(microseconds=1)
HOURLY_DENY = [{"kind": "deny", "schedule": "0 * * * *", "duration": "30m"}]
DAILY_ALLOW = [{"kind": "allow", "schedule": "0 22 * * *", "duration": "2h"}]


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (datetime(2026, 12, 2, 9, 59, 59, 999999, tzinfo=UTC), True),  # the last microsecond before a start
        (datetime(2026, 12, 2, 9, 59, 59, tzinfo=UTC), True),  # the last second before a start
        (datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC), False),  # at the start
        (datetime(2026, 12, 2, 10, 0, 0, 1, tzinfo=UTC), False),  # just after the start
        (datetime(2026, 12, 2, 10, 29, 59, 999999, tzinfo=UTC), False),  # just before the end
        (datetime(2026, 12, 2, 10, 30, 0, tzinfo=UTC), True),  # at the end
        (datetime(2026, 12, 2, 10, 30, 0, 1, tzinfo=UTC), True),  # just after the end
    ],
)
def test_deny_window_edges(now: datetime, allowed: bool) -> None:
    assert sync_allowed(HOURLY_DENY, now)[0] is allowed


def test_deny_window_says_when_it_ends_at_its_first_instant() -> None:
    assert sync_allowed(HOURLY_DENY, datetime(2026, 12, 2, 10, 0, tzinfo=UTC)) == (
        False,
        datetime(2026, 12, 2, 10, 30, tzinfo=UTC),
    )


def test_every_minute_deny_window_holds_in_the_last_second_of_each_minute() -> None:
    """The defect behind this module: a `* * * * *` deny let syncs through in each minute's last second."""
    windows = [{"kind": "deny", "schedule": "* * * * *", "duration": "1m"}]
    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    for offset in (timedelta(0), timedelta(seconds=30), timedelta(seconds=59), timedelta(minutes=1) - TICK):
        assert sync_allowed(windows, start + offset)[0] is False, offset


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (datetime(2026, 12, 2, 21, 59, 59, 999999, tzinfo=UTC), False),
        (datetime(2026, 12, 2, 22, 0, tzinfo=UTC), True),
        (datetime(2026, 12, 2, 23, 59, 59, 999999, tzinfo=UTC), True),
        (datetime(2026, 12, 3, 0, 0, tzinfo=UTC), False),
    ],
)
def test_allow_window_edges(now: datetime, allowed: bool) -> None:
    result, until = sync_allowed(DAILY_ALLOW, now)
    assert result is allowed
    if not allowed:  # told when the next allow window opens
        assert until is not None and until > now and until.astimezone(UTC).hour == 22


def test_overlapping_deny_occurrences_chain_to_the_end_of_the_last() -> None:
    # Every 30 minutes for 45 minutes between 10:00 and 11:30: denied from 10:00 to 12:15 without a gap.
    windows = [{"kind": "deny", "schedule": "0,30 10,11 * * *", "duration": "45m"}]
    for now in (
        datetime(2026, 12, 2, 10, 40, tzinfo=UTC),
        datetime(2026, 12, 2, 11, 14, 59, tzinfo=UTC),
        datetime(2026, 12, 2, 12, 14, 59, 999999, tzinfo=UTC),
    ):
        allowed, until = sync_allowed(windows, now)
        assert not allowed and until == datetime(2026, 12, 2, 12, 15, tzinfo=UTC), now
    assert sync_allowed(windows, datetime(2026, 12, 2, 12, 15, tzinfo=UTC)) == (True, None)


def test_duration_is_elapsed_time_across_spring_forward() -> None:
    # Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST. A 3 h window from 01:00 CET (00:00 UTC) ends at
    # 03:00 UTC (05:00 CEST), not at 04:00 wall-clock time.
    windows = [{"kind": "deny", "schedule": "0 1 * * *", "duration": "3h", "timezone": "Europe/Berlin"}]
    allowed, until = sync_allowed(windows, datetime(2026, 3, 29, 2, 30, tzinfo=UTC))
    assert not allowed and until == datetime(2026, 3, 29, 3, 0, tzinfo=UTC)
    assert sync_allowed(windows, datetime(2026, 3, 29, 3, 0, tzinfo=UTC))[0] is True
    assert sync_allowed(windows, datetime(2026, 3, 28, 23, 59, 59, 999999, tzinfo=UTC))[0] is True


def test_duration_is_elapsed_time_across_fall_back() -> None:
    # Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET. A 3 h window from 01:00 CEST (23:00 UTC the day
    # before) ends at 02:00 UTC (03:00 CET).
    windows = [{"kind": "deny", "schedule": "0 1 * * *", "duration": "3h", "timezone": "Europe/Berlin"}]
    allowed, until = sync_allowed(windows, datetime(2026, 10, 25, 1, 30, tzinfo=UTC))
    assert not allowed and until == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)
    assert sync_allowed(windows, datetime(2026, 10, 25, 2, 0, tzinfo=UTC))[0] is True


def test_window_in_a_time_zone_starts_at_local_wall_clock_time() -> None:
    windows = [{"kind": "allow", "schedule": "0 9 * * *", "duration": "1h", "timezone": "America/New_York"}]
    # 09:00 EST is 14:00 UTC in December.
    assert sync_allowed(windows, datetime(2026, 12, 2, 13, 59, 59, 999999, tzinfo=UTC))[0] is False
    assert sync_allowed(windows, datetime(2026, 12, 2, 14, 0, tzinfo=UTC)) == (True, None)
