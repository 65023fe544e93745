"""Label selectors (structured and kubectl form) and sync windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from clusters.selectors import matches, parse_selector_string, selector_to_string, validate_labels
from clusters.windows import sync_allowed, validate_windows

LABELS = {"env": "prod", "region": "eu", "tier": "gold"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("env=prod", True),
        ("env==prod", True),
        ("env!=prod", False),
        ("region in (eu,us)", True),
        ("region notin (eu)", False),
        ("tier", True),
        ("!tier", False),
        ("!legacy", True),
        ("env=prod,region in (us)", False),
        ("env=prod, region in (eu, us), !legacy", True),
    ],
)
def test_kubectl_selector_strings(text: str, expected: bool) -> None:
    selector = parse_selector_string(text)
    assert matches(selector, LABELS) is expected
    assert parse_selector_string(selector_to_string(selector)) == selector


@pytest.mark.parametrize("text", ["region in us", "x y", "bad key!=x", "a in ()"])
def test_malformed_selector_strings_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_selector_string(text)


def test_empty_selector_matches_nothing() -> None:
    assert matches({}, LABELS) is False
    assert matches({"matchLabels": {}}, LABELS) is False


def test_label_validation() -> None:
    validate_labels({"app.kubernetes.io/name": "web", "env": ""})
    with pytest.raises(ValidationError):
        validate_labels({"env": "a" * 64})
    with pytest.raises(ValidationError):
        validate_labels(["env"])


def test_deny_window_wins_and_says_until_when() -> None:
    windows = [
        {"kind": "allow", "schedule": "0 * * * *", "duration": "1h"},
        {"kind": "deny", "schedule": "0 22 * * *", "duration": "2h", "timezone": "UTC"},
    ]
    validate_windows(windows)
    allowed, until = sync_allowed(windows, datetime(2026, 11, 26, 22, 30, tzinfo=UTC))
    assert not allowed and until == datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    assert sync_allowed(windows, datetime(2026, 11, 26, 12, 30, tzinfo=UTC)) == (True, None)


def test_outside_every_allow_window_waits_for_the_next_one() -> None:
    windows = [{"kind": "allow", "schedule": "0 9 * * 1-5", "duration": "8h", "timezone": "Europe/Berlin"}]
    allowed, until = sync_allowed(windows, datetime(2026, 11, 28, 12, 0, tzinfo=UTC))  # a Saturday
    assert not allowed
    assert until is not None and until.astimezone(UTC) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert sync_allowed(windows, datetime(2026, 11, 26, 10, 0, tzinfo=UTC))[0] is True


@pytest.mark.parametrize(
    "window",
    [
        {"kind": "maybe", "schedule": "* * * * *", "duration": "1h"},
        {"kind": "allow", "schedule": "not cron", "duration": "1h"},
        {"kind": "allow", "schedule": "* * * * *", "duration": "forever"},
        {"kind": "allow", "schedule": "* * * * *", "duration": "1h", "timezone": "Mars/Olympus"},
    ],
)
def test_invalid_windows_are_refused(window: dict) -> None:
    with pytest.raises(ValidationError):
        validate_windows([window])
