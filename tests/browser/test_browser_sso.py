"""Single sign-on in chromium: the Fleetgate sign-in page's button, the provider's own login page, and back
signed in, with the provider's groups as Django groups (tools/oidc-provider on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from fleet.access.models import RoleBinding
from fleet.access.oidc import provider as oidc_provider
from fleet.access.oidc import tokens as oidc_tokens
from fleet.audit.models import AuditEvent
from tests.factories import ClusterGroupFactory
from tests.oidc_provider import OIDCProvider, ProviderClient, ProviderUser, build_provider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_in_through_the_identity_providers_login_page(
    page: Any, live_server: Any, settings: Any, tmp_path: Path
) -> None:
    client = ProviderClient("fleetgate", "browser-client-secret", [f"{live_server.url}/oidc/callback/"])
    user = ProviderUser("erin", "erin-Passw0rd", groups=["staging-deployers"], email="erin@example.test")
    staging = ClusterGroupFactory(name="staging", selector={"matchLabels": {"env": "staging"}})
    RoleBinding.objects.create(
        group=Group.objects.create(name="staging-deployers"), role="deployer", scope=staging
    )
    with OIDCProvider(build_provider(), tmp_path, [user], [client]) as idp:
        settings.FLEETGATE_OIDC_ISSUER = idp.issuer
        settings.FLEETGATE_OIDC_CLIENT_ID = client.client_id
        settings.FLEETGATE_OIDC_CLIENT_SECRET = client.secret
        oidc_provider.forget()
        oidc_tokens.forget_keys()

        page.goto(f"{live_server.url}/login/")
        page.click("#sso-sign-in")
        page.wait_for_url(f"{idp.issuer}/login/username*")  # the provider's own page
        page.fill("#username", "erin")
        page.fill("#password", "erin-Passw0rd")
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        assert page.locator(".who").inner_text() == "erin"
        assert page.locator("h1").inner_text() == "Fleet"

    erin = get_user_model().objects.get(username="erin")
    assert list(erin.groups.values_list("name", flat=True)) == ["staging-deployers"]
    assert AuditEvent.objects.filter(action="user.login", actor_name="erin").count() == 1
