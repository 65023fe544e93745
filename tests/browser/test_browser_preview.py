"""Impact preview in chromium: a policy admin opens a policy, previews binding it as deny on prod, watches
the job's progress page, and reads the report: which clusters and objects it would newly block, coloured."""

from __future__ import annotations

from typing import Any

import pytest

from clusters.models import ClusterGroup
from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from policies import tasks as policy_tasks
from policies.models import PolicyBinding, PolicyPreview
from policies.services import preview as pv
from tests.policies.test_policy_preview import NO_LATEST, conftest_policy
from tests.rollouts.conftest import NAMESPACE, RUNNERS, GitRepo, deployment, make_mapping, make_repository

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_policy_admin_previews_a_deny_binding_in_the_browser(
    page: Any,
    live_server: Any,
    login: Any,
    make_user: Any,
    tasks: Any,
    make_fleet: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(RUNNERS, policy_tasks.RUN_PREVIEW, pv.run)
    fleet = make_fleet({"p1": {"env": "prod"}, "p2": {"env": "prod"}})
    prod = ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})
    git = GitRepo(tmp_path / "repo")
    repo = make_repository(git)
    mapping = make_mapping(repo, "web", "apps/web", prod)
    git.commit({"apps/web/ns.yaml": NAMESPACE, "apps/web/web.yaml": deployment("web", "nginx:latest")}, "web")
    assert fetch_repository(repo).ok
    tasks.drain()
    assert Rollout.objects.get(mapping=mapping).state == "synced"
    policy = conftest_policy("no-latest", NO_LATEST)
    make_user("pat", role="policy-admin")
    login(page, "pat")

    page.goto(f"{live_server.url}/policies/{policy.pk}/")
    form = page.locator("#preview-form")
    form.locator("select[name=enforcement]").select_option("deny")
    form.locator("select[name=cluster_group]").select_option(str(prod.pk))
    form.locator("button[type=submit]").click()
    preview = PolicyPreview.objects.get()
    page.wait_for_url(f"{live_server.url}/policies/previews/{preview.pk}/")
    assert "pending" in page.locator("h1").inner_text()

    tasks.drain()  # the job, as a worker runs it
    page.reload()
    assert "done" in page.locator("h1").inner_text()
    assert "0 today" in page.locator("#preview-counts").inner_text()
    assert "2 proposed" in page.locator("#preview-counts").inner_text()
    rows = page.locator("#preview-targets tbody tr")
    assert rows.count() == 2
    clusters = sorted(rows.nth(i).locator("td").first.inner_text() for i in range(2))
    assert clusters == sorted(c.name for c in fleet.clusters.values())
    badge = rows.first.locator("span.badge.bad", has_text="new block")
    assert badge.count() == 1
    # a red badge: the colour says it is new
    colour = badge.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour not in ("rgba(0, 0, 0, 0)", "transparent")
    assert "Deployment apps/web" in rows.first.inner_text()
    assert PolicyBinding.objects.count() == 0  # nothing was bound
