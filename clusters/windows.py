"""Sync windows: when a group may (allow) or may not (deny) be synced, as cron schedules with a duration.

Semantics follow Argo CD's sync windows: a window is active from each cron occurrence for `duration`; if any
allow window exists, syncs happen only inside an active allow window; an active deny window always wins.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.core.exceptions import ValidationError

_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?$")


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(text or "")
    if not text or not m or not (m["h"] or m["m"]):
        raise ValidationError(f"Duration {text!r} must look like 1h, 30m or 1h30m.")
    return timedelta(hours=int(m["h"] or 0), minutes=int(m["m"] or 0))


def validate_windows(windows: Any) -> None:
    if not isinstance(windows, list):
        raise ValidationError("Sync windows must be a list.")
    for index, window in enumerate(windows):
        where = f"window {index}"
        if not isinstance(window, dict):
            raise ValidationError(f"{where} must be an object.")
        unknown = set(window) - {"kind", "schedule", "duration", "timezone"}
        if unknown:
            raise ValidationError(f"{where}: unknown fields {', '.join(sorted(unknown))}.")
        if window.get("kind") not in ("allow", "deny"):
            raise ValidationError(f"{where}: kind must be allow or deny.")
        if not isinstance(window.get("schedule"), str) or not croniter.is_valid(window["schedule"]):
            raise ValidationError(f"{where}: schedule must be a cron expression such as '0 22 * * *'.")
        duration = parse_duration(window.get("duration", ""))
        if duration > timedelta(days=7):
            raise ValidationError(f"{where}: duration may not exceed 7 days.")
        try:
            ZoneInfo(window.get("timezone") or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"{where}: unknown time zone {window.get('timezone')!r}.") from None


# What validate_windows accepts, as JSON Schema for the API's schema. A cron expression's validity (croniter)
# and the 7-day limit on durations are checked by the validator only.
WINDOWS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "schedule", "duration"],
        "properties": {
            "kind": {"enum": ["allow", "deny"]},
            "schedule": {"type": "string", "description": "A cron expression, e.g. '0 22 * * *'."},
            "duration": {"type": "string", "pattern": r"^(?=\d)(\d+h)?(\d+m)?$"},
            "timezone": {"type": "string", "description": "An IANA time zone; UTC when omitted."},
        },
    },
}
validate_windows.json_schema = WINDOWS_SCHEMA  # type: ignore[attr-defined]

# A deny window whose occurrences overlap (every minute for two hours) is followed forward to the end of the
# contiguous run, at most this many occurrences; the caller re-checks at the end it is given.
_MAX_CHAINED = 1000


def _latest_start(schedule: str, local: datetime) -> datetime:
    """The latest occurrence at or before ``local`` (exact to the microsecond).

    croniter's ``get_prev`` is strict at an occurrence (from 10:00:00 it answers 09:59) but not a microsecond
    after it, so neither ``get_prev(now)`` nor ``get_prev(now + 1 s)`` is right at every instant: take the
    strict previous occurrence and step forward once; that step lands on ``local`` itself when ``local`` is
    an occurrence."""
    previous = croniter(schedule, local).get_prev(datetime)
    following = croniter(schedule, previous).get_next(datetime)
    return following if following <= local else previous


def _active_until(window: dict[str, Any], now: datetime) -> datetime | None:
    """If the window is active at `now`, when it ends (UTC); else None.

    Occurrences are found in the window's time zone (cron is wall-clock time), but a duration is elapsed time:
    a three-hour window that spans a daylight-saving change lasts three hours."""
    tz = ZoneInfo(window.get("timezone") or "UTC")
    duration = parse_duration(window["duration"])
    now_utc = now.astimezone(UTC)
    start = _latest_start(window["schedule"], now.astimezone(tz)).astimezone(UTC)
    end = start + duration
    if not start <= now_utc < end:
        return None
    upcoming = croniter(window["schedule"], start.astimezone(tz))
    for _ in range(_MAX_CHAINED):  # overlapping or touching occurrences extend the window
        nxt = upcoming.get_next(datetime).astimezone(UTC)
        if nxt > end:
            break
        end = nxt + duration
    return end


def _next_start(window: dict[str, Any], now: datetime) -> datetime:
    tz = ZoneInfo(window.get("timezone") or "UTC")
    return croniter(window["schedule"], now.astimezone(tz)).get_next(datetime).astimezone(UTC)


def sync_allowed(windows: list[dict[str, Any]], now: datetime) -> tuple[bool, datetime | None]:
    """Whether syncing is allowed now, and if not, the earliest time it may become allowed."""
    if not windows:
        return True, None
    denies = [w for w in windows if w["kind"] == "deny"]
    allows = [w for w in windows if w["kind"] == "allow"]
    active_deny_ends = [end for w in denies if (end := _active_until(w, now)) is not None]
    if active_deny_ends:
        return False, max(active_deny_ends)
    if not allows:
        return True, None
    if any(_active_until(w, now) is not None for w in allows):
        return True, None
    return False, min(_next_start(w, now) for w in allows)
