"""Signing in through the real login page in chromium."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_in_shows_the_dashboard_and_a_wrong_password_does_not(
    page: Any, live_server: Any, login: Any, make_user: Any
) -> None:
    make_user("alice", role="viewer")
    login(page, "alice", "wrong-password")
    assert "did not match" in page.content()
    login(page, "alice")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("h1").inner_text() == "Fleet"
    assert page.locator(".who").inner_text() == "alice"


def test_pages_need_a_session(page: Any, live_server: Any) -> None:
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
