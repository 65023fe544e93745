"""Dependencies on the rollout page, in chromium: the infra mapping's operator fails on its cluster, so the
app's leg there waits; the app's rollout page says what it waits for and why, and the infra rollout's page
links to the legs waiting for it."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import GitRepo, make_group, make_mapping, make_repository
from tests.rollouts.test_rollout_dependencies import APP_FILES, infra_files

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_rollout_page_shows_what_waits_on_what(
    page: Any, live_server: Any, login: Any, make_user: Any, tasks: Any, make_fleet: Any, tmp_path: Any
) -> None:
    fleet = make_fleet({"c1": {"env": "dep"}})
    group = make_group("dep", "dep", health_timeout_seconds=5)
    git = GitRepo(tmp_path / "repo")
    repo = make_repository(git)
    app = make_mapping(repo, "app", "app", group)
    infra = make_mapping(repo, "infra", "infra", group)
    git.commit({**infra_files(failing=True), **APP_FILES}, "a broken operator")
    assert fetch_repository(repo).ok
    tasks.drain()
    app_rollout, infra_rollout = Rollout.objects.get(mapping=app), Rollout.objects.get(mapping=infra)
    cluster = fleet.clusters["c1"].name
    make_user("vera", role="viewer")
    login(page, "vera")

    page.goto(f"{live_server.url}/rollouts/{infra_rollout.pk}/")
    row = page.locator("#waited-on-by tbody tr")
    assert row.locator("td").all_inner_texts()[1:3] == ["apps/app", cluster]
    row.locator("a").click()
    page.wait_for_url(f"{live_server.url}/rollouts/{app_rollout.pk}/")
    assert page.locator("#depends-on code").all_inner_texts() == ["apps/infra"]
    cells = page.locator("#waiting-here tbody tr td").all_inner_texts()
    assert cells[:2] == [cluster, "apps/infra"]
    assert cells[2].startswith("failed: not healthy")
    assert page.locator(f"a.chip.waiting:has-text('{cluster}')").count() == 1
    assert "waiting for dependencies: apps/infra on" in page.locator("dl").inner_text()
