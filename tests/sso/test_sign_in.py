"""Signing in through a real OpenID Connect provider (authorization code flow with PKCE), the groups claim
mapped onto Django groups and so onto role bindings, and local accounts switched off.

The provider is tools/oidc-provider on 127.0.0.1 (tests/oidc_provider.py); its login form is filled in by a
plain HTTP user agent here and by chromium in tests/browser/test_browser_sso.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.test import Client, RequestFactory

from fleet.access.models import ExternalIdentity, RoleBinding
from fleet.audit.models import AuditEvent
from tests.factories import ClusterFactory, ClusterGroupFactory, UserFactory
from tests.oidc_provider import OIDCProvider

pytestmark = pytest.mark.django_db


def sso_sign_in(client: Client, idp: OIDCProvider, username: str, password: str, next_url: str = "/") -> Any:
    """Press the sign-in button, sign in at the provider, come back: the callback's response."""
    start = client.get(f"/oidc/authenticate/?next={next_url}")
    assert start.status_code == 302
    back = idp.sign_in(start["Location"], username, password)
    assert back.startswith("http://testserver/oidc/callback/?")
    parts = urlparse(back)
    return client.get(parts.path, parse_qs(parts.query))


@pytest.fixture
def fleet() -> dict[str, Any]:
    """Staging and prod cluster groups; the provider's "staging-deployers" are deployers on staging and
    "everyone" views every cluster, bound before any of them has signed in."""
    staging = ClusterGroupFactory(name="staging", selector={"matchLabels": {"env": "staging"}})
    prod = ClusterGroupFactory(name="prod", selector={"matchLabels": {"env": "prod"}})
    # Port 1 on loopback: a connection test is refused at once (the answer is what the test reads).
    clusters = {
        env: ClusterFactory(name=f"c-{env}", api_url="https://127.0.0.1:1", labels={"env": env})
        for env in ("staging", "prod")
    }
    deployers, everyone = (
        Group.objects.create(name="staging-deployers"),
        Group.objects.create(name="everyone"),
    )
    RoleBinding.objects.create(group=deployers, role="deployer", scope=staging)
    RoleBinding.objects.create(group=everyone, role="viewer", scope=None)
    return {"staging": staging, "prod": prod, "clusters": clusters}


def test_the_authorization_request_uses_pkce_state_and_nonce(sso: OIDCProvider) -> None:
    response = Client().get("/oidc/authenticate/")
    assert response.status_code == 302
    url = urlparse(response["Location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == sso.discovery()["authorization_endpoint"]
    query = parse_qs(url.query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43  # base64url of a SHA-256 digest
    assert query["client_id"] == ["fleetgate"]
    assert query["scope"] == ["openid email profile groups"]
    assert query["state"][0] and query["nonce"][0]


def test_first_sign_in_makes_the_user_and_the_groups_claim_gives_deployer_on_staging_only(
    sso: OIDCProvider, fleet: dict[str, Any]
) -> None:
    client = Client()
    response = sso_sign_in(client, sso, "alice", "alice-Passw0rd", next_url="/clusters/")
    assert response.status_code == 302 and response["Location"] == "/clusters/"

    user = get_user_model().objects.get(username="alice")
    assert (user.email, user.first_name, user.last_name) == ("alice@example.test", "Alice", "Anders")
    assert not user.has_usable_password()
    identity = ExternalIdentity.objects.get(user=user)
    assert (identity.issuer, identity.subject) == (sso.issuer, "sub-alice")
    assert sorted(user.groups.values_list("name", flat=True)) == ["everyone", "staging-deployers"]

    # The session is a normal Fleetgate session: role bindings of the provider's groups apply.
    staging, prod = fleet["clusters"]["staging"], fleet["clusters"]["prod"]
    assert client.get("/clusters/").status_code == 200
    assert client.post(f"/api/clusters/{staging.pk}/test-connection/").status_code == 200
    refused = client.post(f"/api/clusters/{prod.pk}/test-connection/")
    assert refused.status_code == 403, refused.content

    actions = list(
        AuditEvent.objects.filter(target_type="user").values_list("action", "actor_name", "message")
    )
    assert ("user.create", "alice", f"made on the first single sign-on from {sso.issuer}") in actions
    assert ("user.login", "alice", f"signed in with single sign-on ({sso.issuer})") in actions
    for event in AuditEvent.objects.all():  # never a code or a token (JWTs start with eyJ)
        assert "eyJ" not in f"{event.message} {event.before} {event.after}"


def test_groups_are_set_again_on_every_sign_in_joined_and_left(
    sso: OIDCProvider, fleet: dict[str, Any]
) -> None:
    sso_sign_in(Client(), sso, "alice", "alice-Passw0rd")
    user = get_user_model().objects.get(username="alice")
    # Granted by hand (or named by the provider earlier), not named by the provider now.
    user.groups.add(Group.objects.create(name="prod-admins"))
    user.groups.remove(Group.objects.get(name="everyone"))

    sso_sign_in(Client(), sso, "alice", "alice-Passw0rd")
    assert sorted(user.groups.values_list("name", flat=True)) == ["everyone", "staging-deployers"]
    change = AuditEvent.objects.filter(action="user.groups").latest("id")
    assert change.before == {"groups": ["prod-admins", "staging-deployers"]}
    assert change.after == {"groups": ["everyone", "staging-deployers"]}
    assert get_user_model().objects.filter(username__startswith="alice").count() == 1


def test_with_a_groups_prefix_only_those_groups_are_mapped(settings: Any, sso: OIDCProvider) -> None:
    settings.FLEETGATE_OIDC_GROUPS_PREFIX = "staging-"
    local = Group.objects.create(name="release-managers")
    sso_sign_in(Client(), sso, "alice", "alice-Passw0rd")
    user = get_user_model().objects.get(username="alice")
    user.groups.add(local, Group.objects.create(name="staging-old"))
    sso_sign_in(Client(), sso, "alice", "alice-Passw0rd")
    assert sorted(user.groups.values_list("name", flat=True)) == ["release-managers", "staging-deployers"]
    assert not Group.objects.filter(name="everyone").exists()


def test_a_provider_account_never_takes_over_a_local_account_of_the_same_name(sso: OIDCProvider) -> None:
    local_bob = UserFactory(username="bob", email="bob@local.test")
    sso_sign_in(Client(), sso, "bob", "bob-Passw0rd")
    identity = ExternalIdentity.objects.get(subject="sub-bob")
    assert identity.user != local_bob and identity.user.username.startswith("bob-")
    local_bob.refresh_from_db()
    assert local_bob.email == "bob@local.test" and not local_bob.groups.exists()
    sso_sign_in(Client(), sso, "bob", "bob-Passw0rd")  # the second sign-in finds the same user
    assert get_user_model().objects.filter(username__startswith="bob").count() == 2


def test_a_disabled_user_cannot_sign_in_through_the_provider(sso: OIDCProvider) -> None:
    sso_sign_in(Client(), sso, "carol", "carol-Passw0rd")
    get_user_model().objects.filter(username="carol").update(is_active=False)
    client = Client()
    response = sso_sign_in(client, sso, "carol", "carol-Passw0rd")
    assert response.status_code == 302 and response["Location"] == "/login/"
    page = client.get("/login/").content.decode()
    assert "Single sign-on failed: the Fleetgate account &#x27;carol&#x27; is disabled." in page
    failed = AuditEvent.objects.get(action="user.login_failed")
    assert failed.message == "single sign-on refused: the Fleetgate account 'carol' is disabled"
    assert client.get("/").status_code == 302  # not signed in


def test_an_error_from_the_provider_is_shown_and_audited(sso: OIDCProvider) -> None:
    client = Client()
    client.get("/oidc/authenticate/")
    response = client.get("/oidc/callback/", {"error": "access_denied", "state": "x"})
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert (
        "Single sign-on failed: the provider answered &#x27;access_denied&#x27;."
        in client.get("/login/").content.decode()
    )
    assert AuditEvent.objects.filter(action="user.login_failed").count() == 1


def test_the_login_page_offers_single_sign_on_and_the_password_form(sso: OIDCProvider) -> None:
    page = Client().get("/login/").content.decode()
    assert 'id="sso-sign-in"' in page and "Sign in with single sign-on" in page
    assert 'id="id_password"' in page


def test_without_an_issuer_there_is_no_button_and_no_sso_endpoint() -> None:
    page = Client().get("/login/").content.decode()
    assert 'id="sso-sign-in"' not in page and 'id="id_password"' in page
    assert Client().get("/oidc/authenticate/").status_code == 404


class TestLocalAccountsOff:
    @pytest.fixture(autouse=True)
    def local_off(self, settings: Any, sso: OIDCProvider) -> None:
        settings.FLEETGATE_LOCAL_LOGIN = False
        settings.FLEETGATE_BREAK_GLASS_USERS = ["root"]
        UserFactory(username="dave", is_staff=True, is_superuser=True)
        UserFactory(username="root", is_staff=True, is_superuser=True)

    def test_the_login_page_offers_only_single_sign_on(self) -> None:
        page = Client().get("/login/").content.decode()
        assert 'id="sso-sign-in"' in page and 'id="id_password"' not in page

    def test_a_password_sign_in_is_refused_on_the_login_page_the_admin_and_the_api(self) -> None:
        client = Client()
        response = client.post("/login/", {"username": "dave", "password": "pw-Secret-123"})
        assert response.status_code == 200
        assert "Password sign-in is switched off here: use single sign-on." in response.content.decode()
        assert client.get("/").status_code == 302

        admin = client.post("/admin/login/", {"username": "dave", "password": "pw-Secret-123"})
        assert admin.status_code == 302 and admin["Location"].startswith("/login/?")
        assert client.get("/admin/").status_code == 302
        request = RequestFactory().post("/login/")
        assert authenticate(request, username="dave", password="pw-Secret-123") is None
        assert not AuditEvent.objects.filter(action="user.login").exists()

    def test_a_break_glass_user_may_still_sign_in_with_a_password_and_it_is_audited(self) -> None:
        client = Client()
        assert 'id="id_password"' in client.get("/login/?break-glass=1").content.decode()
        response = client.post("/login/", {"username": "root", "password": "pw-Secret-123"})
        assert response.status_code == 302
        assert client.get("/admin/").status_code == 200
        event = AuditEvent.objects.get(action="user.login")
        assert (event.actor_name, event.message) == (
            "root",
            "signed in with a break-glass password (local accounts are off)",
        )

    def test_single_sign_on_still_works(self, sso: OIDCProvider) -> None:
        client = Client()
        assert sso_sign_in(client, sso, "alice", "alice-Passw0rd").status_code == 302
        assert client.get("/").status_code == 200


def test_a_provider_that_cannot_be_reached_is_reported_on_the_sign_in_page(settings: Any) -> None:
    settings.FLEETGATE_OIDC_ISSUER = "http://127.0.0.1:1"  # nothing listens there
    settings.FLEETGATE_OIDC_CLIENT_ID, settings.FLEETGATE_OIDC_CLIENT_SECRET = "fleetgate", "secret"
    client = Client()
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    page = client.get("/login/").content.decode()
    assert "Single sign-on is unavailable: cannot read the OIDC discovery document at " in page
    assert "http://127.0.0.1:1/.well-known/openid-configuration" in page


def test_a_replayed_or_foreign_callback_is_refused(sso: OIDCProvider) -> None:
    client = Client()
    start = client.get("/oidc/authenticate/")
    back = urlparse(sso.sign_in(start["Location"], "alice", "alice-Passw0rd"))
    callback = f"{back.path}?{back.query}"
    stranger = Client()  # another browser presenting the same code and state
    assert stranger.get(callback)["Location"] == "/login/"
    assert (
        "was not started in this browser session, or was already used"
        in stranger.get("/login/").content.decode()
    )
    assert client.get(callback)["Location"] == "/"  # the browser that started it signs in
    assert client.get(callback)["Location"] == "/login/"  # and cannot use it twice (its state is spent)
    assert get_user_model().objects.filter(username="alice").count() == 1
    assert AuditEvent.objects.filter(action="user.login_failed").count() == 2


def test_an_id_token_with_another_sign_ins_nonce_is_refused_and_audited(sso: OIDCProvider) -> None:
    """The provider's ID token carries the nonce of the sign-in it was issued for; a token replayed into
    another sign-in (here: the session's nonce for this state is not the one the provider was sent) is
    refused, whatever else about it is valid."""
    client = Client()
    start = client.get("/oidc/authenticate/")
    state = parse_qs(urlparse(start["Location"]).query)["state"][0]
    back = urlparse(sso.sign_in(start["Location"], "alice", "alice-Passw0rd"))
    session = client.session
    session["oidc_states"][state]["nonce"] = "the-nonce-of-another-sign-in"
    session.save()

    response = client.get(back.path, parse_qs(back.query))
    assert response.status_code == 302 and response["Location"] == "/login/"
    reason = "the ID token&#x27;s nonce does not match this sign-in (a replayed token?)"
    assert f"Single sign-on failed: {reason}." in client.get("/login/").content.decode()
    assert client.get("/").status_code == 302  # not signed in
    failed = AuditEvent.objects.get(action="user.login_failed")
    assert failed.message == (
        "single sign-on refused: the ID token's nonce does not match this sign-in (a replayed token?)"
    )
    assert not get_user_model().objects.filter(username="alice").exists()
    assert not AuditEvent.objects.filter(action="user.login").exists()
