"""Notifications in chromium: subscribe through the page (only visible groups offered, the signing secret
shown once), then a waiver about to expire reaches the receiver and shows in the delivery log."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from clusters.models import ClusterGroup
from fleet.notifications import services
from fleet.notifications.models import Subscription
from policies.models import Waiver
from policies.services.definitions import PolicyDefinition, save_policy
from tests.notifications.conftest import _notification_runners, receiver  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

POLICY = 'package main\n\nimport rego.v1\n\ndeny contains "no" if input.kind == "Forbidden"\n'


def test_subscribe_in_the_browser_and_read_the_delivery_log(
    page: Any, live_server: Any, login: Any, make_user: Any, tasks: Any, receiver: Any  # noqa: F811
) -> None:
    staging = ClusterGroup.objects.create(name="staging", selector={"matchLabels": {"env": "staging"}})
    ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})
    make_user("alice", role="viewer", scope=staging)
    login(page, "alice")
    page.click("nav >> text=Notifications")
    page.wait_for_url(f"{live_server.url}/notifications/")
    offered = page.locator("#id_cluster_group option").all_inner_texts()
    assert "staging" in offered and "prod" not in offered

    page.fill("#id_name", "staging waivers")
    page.check("input[name=events][value=waiver_expiring]")
    page.select_option("#id_cluster_group", label="staging")
    page.select_option("#id_channel", value="webhook")
    page.fill("#id_target", receiver.url)
    page.click("#subscription-form button[type=submit]")
    secret = page.locator("#new-secret code").inner_text().strip()
    subscription = Subscription.objects.get(name="staging waivers")
    assert secret == subscription.secret
    receiver.secret = secret

    policy = save_policy("p", PolicyDefinition(style="conftest", modules=(("p.rego", POLICY),))).policy
    Waiver.objects.create(
        policy=policy, cluster_group=staging, justification="migration",
        expires_at=timezone.now() + timedelta(hours=3),
    )
    assert services.scan()["waivers_expiring"] == 1
    tasks.drain(include_delayed=True)
    assert [r.signature_ok for r in receiver.received] == [True]

    page.click("table a:has-text('staging waivers')")
    page.wait_for_url(f"{live_server.url}/notifications/{subscription.pk}/")
    assert secret not in page.content()
    row = page.locator("#deliveries tbody tr").first
    assert "Waiver expiring" in row.inner_text() and "delivered" in row.inner_text()
    assert "200" in row.inner_text()
