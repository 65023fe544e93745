"""Fixtures shared by the whole suite: users with roles, API clients authenticated by real tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from fleet.access.models import APIToken, RoleBinding
from tests.factories import UserFactory


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's test database, and before it is dropped, the audit background sealer stopped: its
    connection (PostgreSQL) would keep the test database from being dropped."""
    yield
    from fleet.audit.sealing import BackgroundSealer

    BackgroundSealer.stop()


@pytest.fixture(autouse=True)
def _audit_sealing_in_the_test_thread(settings: Any) -> Iterator[None]:
    """In the test process, commit hooks seal audit events synchronously (FLEETGATE_AUDIT_SEAL_BACKGROUND off)
    as on SQLite: a background sealer thread still sealing when a transactional test ends would hold the
    chain head while pytest-django truncates the tables (PostgreSQL then aborts one of the two as a deadlock,
    and a failed flush leaves rows behind for the next test). Tests of the background sealer turn it on; it is
    stopped here, after its last round, before the database is flushed (this fixture is torn down first).
    Worker and web processes the tests start keep the default (the background sealer), as deployed."""
    settings.FLEETGATE_AUDIT_SEAL_BACKGROUND = False
    yield
    from fleet.audit.sealing import BackgroundSealer

    BackgroundSealer.stop()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    def make(username: str, role: str | None = None, scope: Any = None, superuser: bool = False) -> Any:
        user = UserFactory(username=username, is_superuser=superuser, is_staff=superuser)
        if role:
            RoleBinding.objects.create(user=user, role=role, scope=scope)
        return user

    return make


@pytest.fixture
def token_client() -> Callable[[Any], APIClient]:
    """An API client that authenticates with a real API token of the given user."""

    def make(user: Any) -> APIClient:
        _, key = APIToken.issue(user, description="test")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client

    return make


@pytest.fixture
def admin_user(make_user: Callable[..., Any]) -> Any:
    return make_user("root", role="admin")


@pytest.fixture
def admin_client(admin_user: Any, token_client: Callable[[Any], APIClient]) -> APIClient:
    return token_client(admin_user)
