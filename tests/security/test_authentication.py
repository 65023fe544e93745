"""Authentication: password guessing, and access that outlives its revocation.

Attack classes:
- online brute force of the login form (the web UI's and the admin's), by spraying one user name from many
  addresses or many user names from one address. Argo CD shipped its own login rate limiting after
  advisories about brute force of local accounts and a denial of service through its failed-login cache
  (2022-2024); Rancher and Kargo advisories of the same years concern sessions and tokens that stayed valid
  after the account or its role changed.
- revocation lag: a disabled or deleted user, or one who lost a role binding, keeps working through an open
  session or a personal API token (the next request must be refused or see the reduced scope).

Everything runs through the real login views (django-axes in front of Django's backends), the real session
store and real API tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.test import Client
from rest_framework.test import APIClient

from clusters.membership import refresh_group
from clusters.models import Cluster
from fleet.access.models import APIToken, RoleBinding
from fleet.audit.models import AuditEvent
from tests.factories import ClusterFactory, ClusterGroupFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Secret-123"  # the factories' test password


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 3


def sign_in(client: Client, username: str, password: str, ip: str, path: str = "/login/") -> Any:
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)


def signed_in(client: Client) -> bool:
    return client.get("/").status_code == 200


# --- brute force ----------------------------------------------------------------------------------------


def test_wrong_passwords_under_the_limit_get_the_form_again() -> None:
    UserFactory(username="alice")
    client = Client()
    response = sign_in(client, "alice", "wrong", "10.0.0.1")
    assert response.status_code == 200 and b"did not match" in response.content
    assert sign_in(client, "alice", PASSWORD, "10.0.0.1").status_code == 302
    assert signed_in(client)


def test_one_user_name_is_locked_after_failures_from_many_addresses() -> None:
    UserFactory(username="alice")
    for i in range(3):
        sign_in(Client(), "alice", f"guess-{i}", f"10.0.1.{i}")
    client = Client()
    response = sign_in(client, "alice", PASSWORD, "10.0.1.200")  # right password, fresh address
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert not signed_in(client)
    other = Client()  # another user from the same fresh address is not affected
    UserFactory(username="bob")
    assert sign_in(other, "bob", PASSWORD, "10.0.1.200").status_code == 302


def test_one_address_is_locked_after_failures_on_many_user_names() -> None:
    UserFactory(username="carol")
    for name in ("root", "admin", "operator"):
        sign_in(Client(), name, "guess", "10.0.2.9")
    client = Client()
    assert sign_in(client, "carol", PASSWORD, "10.0.2.9").status_code == 429
    assert not signed_in(client)
    elsewhere = Client()
    assert sign_in(elsewhere, "carol", PASSWORD, "10.0.2.10").status_code == 302
    assert signed_in(elsewhere)


def test_the_admin_login_shares_the_limit() -> None:
    UserFactory(username="root", is_staff=True, is_superuser=True)
    for i in range(3):
        sign_in(Client(), "root", f"guess-{i}", "10.0.3.1", path="/admin/login/")
    client = Client()
    assert sign_in(client, "root", PASSWORD, "10.0.3.2", path="/admin/login/").status_code == 429
    assert client.get("/admin/").status_code == 302  # still sent to the login page
    assert sign_in(Client(), "root", PASSWORD, "10.0.3.3").status_code == 429  # and the UI's login too


def test_a_successful_sign_in_resets_the_count() -> None:
    UserFactory(username="dave")
    for _ in range(2):
        sign_in(Client(), "dave", "wrong", "10.0.4.1")
    assert sign_in(Client(), "dave", PASSWORD, "10.0.4.1").status_code == 302
    for _ in range(2):
        sign_in(Client(), "dave", "wrong", "10.0.4.1")
    assert sign_in(Client(), "dave", PASSWORD, "10.0.4.1").status_code == 302


# --- revocation -----------------------------------------------------------------------------------------


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks: Any) -> Callable[[Callable[[], Any]], None]:
    """Run ``change`` and then the callbacks its transaction queued (the test's transaction never commits)."""

    def run(change: Callable[[], Any]) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            change()

    return run


def test_a_disabled_user_loses_sessions_and_tokens_at_once_for_good(on_commit: Any) -> None:
    user = UserFactory(username="erin")
    RoleBinding.objects.create(user=user, role="viewer")
    browser = Client()
    assert sign_in(browser, "erin", PASSWORD, "10.0.5.1").status_code == 302
    assert signed_in(browser)
    _, key = APIToken.issue(user, description="ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/api/clusters/").status_code == 200
    sessions_before = Session.objects.count()

    user.is_active = False
    on_commit(user.save)

    assert not signed_in(browser)
    assert api.get("/api/clusters/").status_code == 401
    assert Session.objects.count() == sessions_before - 1
    assert not APIToken.objects.filter(user=user).exists()
    revoked = AuditEvent.objects.get(action="apitoken.delete")
    assert "disabled" in revoked.message and key not in revoked.message

    user.is_active = True  # re-enabled: the old session and token stay dead
    on_commit(user.save)
    assert not signed_in(browser)
    assert api.get("/api/clusters/").status_code == 401


def test_a_deleted_user_loses_sessions_and_tokens(on_commit: Any) -> None:
    user = UserFactory(username="frank")
    browser = Client()
    assert sign_in(browser, "frank", PASSWORD, "10.0.6.1").status_code == 302
    _, key = APIToken.issue(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    user_id = user.pk

    on_commit(user.delete)

    assert not signed_in(browser)
    assert api.get("/api/clusters/").status_code == 401
    assert not [s for s in Session.objects.all() if s.get_decoded().get("_auth_user_id") == str(user_id)]


def _visible_clusters(client: Any) -> set[str]:
    response = client.get("/api/clusters/")
    if response.status_code == 403:
        return set()
    assert response.status_code == 200, response.content
    return {c["name"] for c in response.json()["results"]}


def test_losing_a_role_binding_narrows_the_next_request() -> None:
    group = ClusterGroupFactory(name="dev", selector={"matchLabels": {"env": "dev"}})
    ClusterFactory(name="dev-1", api_url="https://10.9.0.1:6443", labels={"env": "dev"})
    ClusterFactory(name="prod-1", api_url="https://10.9.0.2:6443", labels={"env": "prod"})
    refresh_group(group)
    user = UserFactory(username="gina")
    everywhere = RoleBinding.objects.create(user=user, role="viewer")
    in_dev = RoleBinding.objects.create(user=user, role="viewer", scope=group)
    _, key = APIToken.issue(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    browser = Client()
    assert sign_in(browser, "gina", PASSWORD, "10.0.7.1").status_code == 302
    assert _visible_clusters(api) == _visible_clusters(browser) == {"dev-1", "prod-1"}

    everywhere.delete()
    assert _visible_clusters(api) == _visible_clusters(browser) == {"dev-1"}

    in_dev.delete()
    assert _visible_clusters(api) == _visible_clusters(browser) == set()


def test_leaving_a_django_group_drops_its_bindings_on_the_next_request() -> None:
    ClusterFactory(name="any-1", api_url="https://10.9.1.1:6443")
    operators = Group.objects.create(name="operators")
    RoleBinding.objects.create(group=operators, role="cluster-admin")
    user = UserFactory(username="hank")
    user.groups.add(operators)
    _, key = APIToken.issue(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    cluster = Cluster.objects.get(name="any-1")
    response = api.patch(f"/api/clusters/{cluster.pk}/", {"description": "mine"}, format="json")
    assert response.status_code == 200

    user.groups.remove(operators)
    response = api.patch(f"/api/clusters/{cluster.pk}/", {"description": "still mine?"}, format="json")
    assert response.status_code in (403, 404)
    cluster.refresh_from_db()
    assert cluster.description == "mine"
    assert _visible_clusters(api) == set()
