"""`manage.py check` refuses sign-in settings that could not work, before anyone tries to sign in."""

from __future__ import annotations

from typing import Any

from fleet.access.checks import sign_in_settings


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
