"""A pull-mode cluster in a real browser (Debian's chromium through Playwright; issue 18): register it through
the form (the API URL and credential fields go away), issue a bootstrap token and see it once, register an
agent with it (the real token service), see the agent connected, revoke it after confirming, edit it.
The cluster page's screenshot goes to docs/screenshots/pull-cluster.png (docs/ui.md shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clusters import agent_tokens
from clusters.models import Cluster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"


def test_a_pull_cluster_in_a_browser(page: Any, live_server: Any, login: Any, make_user: Any) -> None:
    from tests.factories import ClusterGroupFactory

    ClusterGroupFactory(name="edge", selector={"matchLabels": {"site": "edge"}})
    make_user("root", role="admin", superuser=True)
    login(page, "root")
    page.wait_for_url(f"{live_server.url}/")

    # Register in pull mode: no API URL or credential is asked.
    page.goto(f"{live_server.url}/clusters/register/")
    assert page.locator("#id_api_url").is_visible()
    page.check("input[name=connection_mode][value=pull]")
    for field in ("#id_api_url", "#id_token", "#id_kubeconfig_file", "#id_ca_data", "#id_auth_method"):
        assert not page.locator(field).is_visible(), field
    page.fill("#id_name", "edge-7")
    page.fill("#id_labels_text", "site=edge,region=eu")
    page.click("form.form button[type=submit]")
    page.wait_for_selector("#connection-mode")
    assert page.locator("#connection-mode").inner_text() == "pull"
    assert page.locator("#agent-state").inner_text() == "agent never registered"
    cluster = Cluster.objects.get(name="edge-7")
    assert cluster.connection_mode == "pull" and not cluster.api_url and not cluster.token
    detail = page.url

    # The token, once, with its expiry and the install commands.
    page.click("#issue-bootstrap")
    page.wait_for_selector("#bootstrap-token")
    token = page.locator("#bootstrap-token").inner_text().strip()
    assert token.startswith("fga_b_")
    assert "shown only on this page" in page.content()
    assert "python manage.py agent_manifest edge-7" in page.locator("#bootstrap-install").inner_text()
    assert page.locator("#bootstrap-expires").inner_text()

    # Never again: the cluster's page shows its prefix only.
    page.goto(detail)
    assert token not in page.content() and token[:12] in page.locator("#agent-credentials").inner_text()

    # An agent registers with it (the real exchange the agent API calls): connected, with its version.
    agent_plain, _ = agent_tokens.exchange(token, "fleetgate-agent 0.1.0", "v1.30.2")
    page.reload()
    assert page.locator("#agent-state").inner_text() == "agent connected"
    agent_text = page.locator("#agent").inner_text()
    assert "fleetgate-agent 0.1.0" in agent_text and "used" in agent_text and "live" in agent_text
    assert token not in page.content() and agent_plain not in page.content()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("main").screenshot(path=str(SHOTS / "pull-cluster.png"))

    # Revoke: only once the confirmation is ticked.
    page.click("#revoke-agent")  # the browser refuses the unticked form
    assert agent_tokens.authenticate(agent_plain) is not None
    page.check("#revoke-confirm")
    page.click("#revoke-agent")
    page.wait_for_selector(".messages")
    assert "revoked" in page.locator(".messages").inner_text()
    assert page.locator("#agent-state").inner_text() == "no live credential"
    assert agent_tokens.authenticate(agent_plain) is None

    # Editing it asks for no URL or credential, and keeps its mode.
    page.click("#edit-cluster")
    page.wait_for_selector("#id_labels_text")
    assert page.locator("#id_api_url").count() == 0 and page.locator("#id_token").count() == 0
    assert page.locator("input[name=connection_mode][value=pull]").is_checked()
    assert page.locator("input[name=connection_mode][value=pull]").is_disabled()
    page.fill("#id_labels_text", "site=edge,region=us")
    page.click("form.form button[type=submit]")
    page.wait_for_selector("#connection-mode")
    cluster.refresh_from_db()
    assert cluster.labels == {"site": "edge", "region": "us"} and cluster.connection_mode == "pull"

    # The list shows the mode and the agent's state at a glance.
    page.goto(f"{live_server.url}/clusters/")
    row = page.locator("tr", has_text="edge-7")
    assert "pull" in row.inner_text() and "no live credential" in row.inner_text()
