"""The whole product in a real browser (Debian's chromium through Playwright) on real parts: the demo's git
repository, sandbox clusters over HTTP, the regorus engine, the sources, policies and rollouts services.

Sign in, register a cluster, see a commit blocked in prod and read the violation, add a waiver, push a
commit, watch the author's approval refused and two approvers let it through, watch the rollout finish,
export the audit log as CSV, and check that a viewer has no approve button and gets 403 posting anyway.
The screenshots it takes go to docs/screenshots/ (the README and the quickstart show them)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from fleet.demo import repository as demo_repo
from fleet.demo import setup as demo
from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def podinfo_prod(commit_sha: str) -> Rollout:
    return Rollout.objects.get(mapping__name="podinfo-prod", commit__sha=commit_sha)


def test_the_product_in_a_browser(
    page: Any, live_server: Any, login: Any, make_user: Any, make_fleet: Any, tasks: Any, tmp_path: Path
) -> None:
    fleet = make_fleet(
        {
            "dev-eu": {"env": "dev", "region": "eu"},
            "staging-eu": {"env": "staging", "region": "eu"},
            "prod-eu": {"env": "prod", "region": "eu"},
            "prod-us": {"env": "prod", "region": "us"},
        }
    )
    state = demo.setup(tmp_path / "demo-repo")
    repo = state.repository
    assert fetch_repository(repo).ok
    tasks.drain()
    blocked = podinfo_prod(state.new_commits[-1])
    assert blocked.state == "blocked", blocked.reason

    make_user("root", role="admin", superuser=True)
    alice = make_user("alice", role="approver", scope=blocked.mapping.cluster_group)
    bob = make_user("bob", role="approver", scope=blocked.mapping.cluster_group)
    dana = make_user("dana", role="approver", scope=blocked.mapping.cluster_group)
    dana.email = demo_repo.AUTHORS[0].email
    dana.save()
    make_user("vera", role="viewer")
    assert alice and bob

    # Sign in and see the fleet.
    login(page, "root")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator(".tile .count").first.inner_text() == "4"
    assert "podinfo-prod" in page.locator("section.card", has_text="Blocked by policy").inner_text()
    shot(page, "dashboard")

    # Register one more cluster through the form (the sandbox's URL and token).
    extra = fleet.server.add_cluster(f"{fleet.prefix}-extra", token="extra-token-secret")
    page.goto(f"{live_server.url}/clusters/register/")
    page.fill("#id_name", "extra-1")
    page.fill("#id_api_url", extra.url)
    page.fill("#id_token", "extra-token-secret")
    page.fill("#id_labels_text", "env=dev,region=us")
    page.click("form.form button[type=submit]")
    page.wait_for_load_state()
    assert "/register/" not in page.url, page.locator("main").inner_text()[:1500]
    assert "extra-1" in page.locator("h1").inner_text()
    assert "extra-token-secret" not in page.content()

    # The blocked commit and its violation.
    page.goto(f"{live_server.url}/rollouts/{blocked.pk}/")
    assert page.locator("#rollout-state").inner_text() == "Blocked by policy"
    assert "prod needs at least 2" in page.content()
    shot(page, "blocked-commit")

    # A waiver for podinfo in prod, with a justification and an expiry.
    page.goto(f"{live_server.url}/waivers/")
    page.select_option("#id_policy", label="demo-policies")
    page.fill("#id_kind", "Deployment")
    page.fill("#id_name_pattern", "podinfo")
    page.select_option("#id_cluster_group", label="prod")
    page.fill("#id_expires_at", (timezone.localtime() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("#id_justification", "Cost test on one replica until Friday; approved by the SRE lead")
    page.click("#waiver-form button[type=submit]")
    assert "Waiver for demo-policies" in page.content()

    # A new commit (still one replica in prod): the waiver lets it through to approval.
    sha = demo_repo.commit(
        tmp_path / "demo-repo",
        "podinfo: document the cost test",
        {"apps/podinfo/overlays/prod/NOTES.md": "One replica during the cost test.\n"},
    )
    assert sha
    assert fetch_repository(repo).ok
    tasks.drain()
    waiting = podinfo_prod(sha)
    assert waiting.state == "awaiting_approval", waiting.reason

    # The commit's author may not approve; two other approvers do.
    page.context.clear_cookies()
    login(page, "dana")
    response = page.request.post(
        f"{live_server.url}/rollouts/{waiting.pk}/approve/",
        headers={"X-CSRFToken": _csrf(page), "Referer": live_server.url + "/"},
    )
    assert response.status == 403
    for user in ("alice", "bob"):
        page.context.clear_cookies()
        login(page, user)
        page.goto(f"{live_server.url}/rollouts/{waiting.pk}/")
        page.click("#approve")
        page.wait_for_load_state()
    # Watch it: after the first cluster the rollout is in progress, then it finishes.
    tasks.drain(until=lambda: waiting.syncs.filter(state="synced").exists())
    page.goto(f"{live_server.url}/rollouts/{waiting.pk}/")
    shot(page, "rollout-in-progress")
    tasks.drain(include_delayed=True)
    page.reload()
    assert page.locator("#rollout-state").inner_text() == "Synced"
    assert page.locator(".chip.synced").count() == 2

    # The audit log, exported as CSV by the admin (an approver of prod would export prod's events only).
    page.context.clear_cookies()
    login(page, "root")
    page.goto(f"{live_server.url}/audit/")
    shot(page, "audit")
    with page.expect_download() as download:
        page.click("text=Export CSV")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    actions = {row["action"] for row in rows}
    assert {"rollout.approval", "waiver.create", "cluster.create"} <= actions, sorted(actions)
    assert not any("extra-token-secret" in ",".join(row.values()) for row in rows)

    # A viewer sees no approve button, and the server refuses the form anyway.
    other = Rollout.objects.filter(state="awaiting_approval").first()
    assert other is not None
    page.context.clear_cookies()
    login(page, "vera")
    page.goto(f"{live_server.url}/rollouts/{other.pk}/")
    assert page.locator("#approve").count() == 0
    response = page.request.post(
        f"{live_server.url}/rollouts/{other.pk}/approve/",
        headers={"X-CSRFToken": _csrf(page), "Referer": live_server.url + "/"},
    )
    assert response.status == 403


def _csrf(page: Any) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
