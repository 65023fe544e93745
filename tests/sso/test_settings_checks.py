"""`manage.py check` refuses sign-in settings that could not work, before anyone tries to sign in."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.checks import WARNING, CheckMessage, run_checks

from fleet.access.checks import sign_in_settings
from fleet.access.models import RoleBinding
from tests.factories import ClusterGroupFactory, UserFactory


def ids(settings: Any) -> list[str]:
    return [error.id for error in sign_in_settings(None)]


def test_the_defaults_pass(settings: Any) -> None:
    assert ids(settings) == []


def test_an_issuer_needs_a_url_a_client_and_the_openid_scope(settings: Any) -> None:
    settings.FLEETGATE_OIDC_ISSUER = "idp.example.com"
    settings.FLEETGATE_OIDC_SCOPES = "email groups"
    assert ids(settings) == ["access.E001", "access.E002", "access.E003"]
    settings.FLEETGATE_OIDC_ISSUER = "https://idp.example.com"
    settings.FLEETGATE_OIDC_CLIENT_ID, settings.FLEETGATE_OIDC_CLIENT_SECRET = "fleetgate", "s3cret"
    settings.FLEETGATE_OIDC_SCOPES = "openid groups"
    assert ids(settings) == []


def test_token_auth_and_algorithms_are_checked(settings: Any) -> None:
    settings.FLEETGATE_OIDC_TOKEN_AUTH = "private_key_jwt"
    settings.FLEETGATE_OIDC_ALGORITHMS = ["RS256", "HS256"]
    assert ids(settings) == ["access.E004", "access.E005"]
    settings.FLEETGATE_OIDC_ALGORITHMS = []
    assert "access.E005" in ids(settings)


def test_local_accounts_off_needs_an_issuer(settings: Any) -> None:
    settings.FLEETGATE_LOCAL_LOGIN = False
    assert ids(settings) == ["access.E006"]
    settings.FLEETGATE_OIDC_ISSUER = "https://idp.example.com"
    settings.FLEETGATE_OIDC_CLIENT_ID, settings.FLEETGATE_OIDC_CLIENT_SECRET = "fleetgate", "s3cret"
    assert ids(settings) == []


def sso_on(settings: Any) -> None:
    settings.FLEETGATE_OIDC_ISSUER = "https://idp.example.com"
    settings.FLEETGATE_OIDC_CLIENT_ID, settings.FLEETGATE_OIDC_CLIENT_SECRET = "fleetgate", "s3cret"


def database_checks() -> list[CheckMessage]:
    """What `manage.py migrate` and `manage.py check --database default` report (the checks that read the
    database run only then)."""
    return [m for m in run_checks(databases=["default"]) if m.id and m.id.startswith("access.")]


@pytest.mark.django_db
def test_without_a_groups_prefix_bound_groups_are_warned_about(settings: Any) -> None:
    admins = Group.objects.create(name="admins")
    RoleBinding.objects.create(group=admins, role="admin", scope=None)
    RoleBinding.objects.create(
        group=Group.objects.create(name="staging-deployers"), role="deployer", scope=ClusterGroupFactory()
    )
    RoleBinding.objects.create(user=UserFactory(), role="admin", scope=None)
    assert database_checks() == []  # the defaults: single sign-on is off

    sso_on(settings)
    [warning] = database_checks()
    assert (warning.id, warning.level) == ("access.W001", WARNING)
    assert warning.msg == (
        "FLEETGATE_OIDC_GROUPS_PREFIX is empty: every group the OIDC provider names is mapped onto the "
        "Django group of the same name, and role bindings name the groups 'admins' (admin), "
        "'staging-deployers' (deployer); a provider group of one of these names grants its role"
    )
    assert "FLEETGATE_OIDC_GROUPS_PREFIX" in str(warning.hint)
    # a plain `manage.py check` (make check, with --fail-level WARNING) does not read the database
    assert [m.id for m in run_checks() if m.id and m.id.startswith("access.")] == []

    settings.FLEETGATE_OIDC_GROUPS_PREFIX = "fleetgate-"
    assert database_checks() == []


@pytest.mark.django_db
def test_without_a_groups_prefix_and_no_group_bound_there_is_no_warning(settings: Any) -> None:
    sso_on(settings)
    Group.objects.create(name="admins")
    RoleBinding.objects.create(user=UserFactory(), role="admin", scope=None)
    assert database_checks() == []
