"""Fixtures for single sign-on: a real OIDC provider (tests/oidc_provider.py) and Fleetgate pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fleet.access.oidc import provider as oidc_provider
from fleet.access.oidc import tokens as oidc_tokens
from tests.oidc_provider import OIDCProvider, ProviderClient, ProviderUser, build_provider

CALLBACK = "http://testserver/oidc/callback/"
FLEETGATE = ProviderClient("fleetgate", "fleetgate-client-secret", [CALLBACK])
OTHER_APP = ProviderClient("other-app", "other-app-secret", ["http://127.0.0.1:9/other/callback"])
SHORT_LIVED = ProviderClient("short-lived", "short-lived-secret", [CALLBACK], id_token_lifetime_seconds=1)
USERS = [
    ProviderUser(
        "alice",
        "alice-Passw0rd",
        groups=["staging-deployers", "everyone"],
        email="alice@example.test",
        first_name="Alice",
        last_name="Anders",
    ),
    ProviderUser("bob", "bob-Passw0rd", groups=["everyone"], email="bob@example.test"),
    ProviderUser("carol", "carol-Passw0rd", groups=[], email="carol@example.test"),
]


@pytest.fixture(scope="session")
def provider_binary() -> str:
    return build_provider()


@pytest.fixture(scope="session")
def idp(provider_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """The identity provider Fleetgate trusts (its users may be changed by a test: see ``idp_user``)."""
    with OIDCProvider(
        provider_binary, tmp_path_factory.mktemp("idp"), USERS, [FLEETGATE, OTHER_APP, SHORT_LIVED]
    ) as provider:
        yield provider


@pytest.fixture(scope="session")
def foreign_idp(provider_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """Another provider (own issuer and key) with the same client and users: Fleetgate does not trust it."""
    with OIDCProvider(provider_binary, tmp_path_factory.mktemp("foreign"), USERS, [FLEETGATE]) as provider:
        yield provider


@pytest.fixture
def sso(settings: Any, idp: OIDCProvider) -> Iterator[OIDCProvider]:
    """Fleetgate configured for single sign-on with ``idp``."""
    settings.FLEETGATE_OIDC_ISSUER = idp.issuer
    settings.FLEETGATE_OIDC_CLIENT_ID = FLEETGATE.client_id
    settings.FLEETGATE_OIDC_CLIENT_SECRET = FLEETGATE.secret
    settings.FLEETGATE_OIDC_API_AUDIENCES = []
    oidc_provider.forget()
    oidc_tokens.forget_keys()
    yield idp
    oidc_provider.forget()
    oidc_tokens.forget_keys()
