"""API requests with the provider's tokens: `Authorization: Bearer <ID token>`, validated against the
issuer's JWKS (signature, algorithm, issuer, audience, expiry); refusals are 401 with the reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from jwt.algorithms import RSAAlgorithm
from rest_framework.test import APIClient

from fleet.access.models import APIToken, RoleBinding
from fleet.access.oidc import provider as oidc_provider
from fleet.access.oidc import tokens as oidc_tokens
from tests.factories import ClusterFactory, ClusterGroupFactory, UserFactory
from tests.oidc_provider import OIDCProvider
from tests.sso.conftest import FLEETGATE, OTHER_APP, SHORT_LIVED, USERS

pytestmark = pytest.mark.django_db


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def id_token(idp: OIDCProvider, username: str = "alice", client: Any = FLEETGATE) -> str:
    return str(idp.tokens(username, f"{username}-Passw0rd", client)["id_token"])


def refused(response: Any) -> str:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == 'Bearer realm="fleetgate"'
    return str(response.json()["detail"])


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unverified_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_an_id_token_signs_in_as_the_provider_account_with_its_groups_roles(sso: OIDCProvider) -> None:
    staging = ClusterGroupFactory(name="staging", selector={"matchLabels": {"env": "staging"}})
    ClusterGroupFactory(name="prod", selector={"matchLabels": {"env": "prod"}})
    in_staging = ClusterFactory(name="c-staging", api_url="https://127.0.0.1:1", labels={"env": "staging"})
    in_prod = ClusterFactory(name="c-prod", api_url="https://127.0.0.1:1", labels={"env": "prod"})
    RoleBinding.objects.create(
        group=Group.objects.create(name="staging-deployers"), role="deployer", scope=staging
    )
    RoleBinding.objects.create(group=Group.objects.create(name="everyone"), role="viewer", scope=None)

    client = bearer(id_token(sso, "alice"))
    listed = client.get("/api/clusters/")
    assert listed.status_code == 200
    assert {row["name"] for row in listed.json()["results"]} == {"c-staging", "c-prod"}
    assert client.post(f"/api/clusters/{in_staging.pk}/test-connection/").status_code == 200
    assert client.post(f"/api/clusters/{in_prod.pk}/test-connection/").status_code == 403

    user = get_user_model().objects.get(username="alice")
    assert sorted(user.groups.values_list("name", flat=True)) == ["everyone", "staging-deployers"]

    # bob's groups give him viewer only; carol's none, so she sees nothing.
    bob = bearer(id_token(sso, "bob"))
    assert bob.get("/api/clusters/").json()["count"] == 2
    assert bob.post(f"/api/clusters/{in_staging.pk}/test-connection/").status_code == 403
    assert bearer(id_token(sso, "carol")).get("/api/clusters/").json()["count"] == 0


def test_a_token_for_another_audience_is_refused(sso: OIDCProvider) -> None:
    detail = refused(bearer(id_token(sso, "alice", OTHER_APP)).get("/api/clusters/"))
    assert detail == (
        "OIDC token refused: the token is for audience ['other-app'], not for Fleetgate "
        "(accepted: fleetgate)."
    )
    assert not get_user_model().objects.filter(username="alice").exists()


def test_extra_audiences_may_be_accepted(settings: Any, sso: OIDCProvider) -> None:
    settings.FLEETGATE_OIDC_API_AUDIENCES = ["fleetgate", "other-app"]
    assert bearer(id_token(sso, "alice", OTHER_APP)).get("/api/clusters/").status_code == 200


def test_an_expired_token_is_refused(settings: Any, sso: OIDCProvider) -> None:
    settings.FLEETGATE_OIDC_API_AUDIENCES = ["fleetgate", "short-lived"]
    settings.FLEETGATE_OIDC_LEEWAY = 0
    token = id_token(sso, "alice", SHORT_LIVED)  # valid for one second
    expiry = unverified_claims(token)["exp"]
    while time.time() <= expiry + 1:
        time.sleep(0.2)
    assert refused(bearer(token).get("/api/clusters/")) == "OIDC token refused: the token has expired."


def test_a_token_from_an_unknown_issuer_is_refused(sso: OIDCProvider, foreign_idp: OIDCProvider) -> None:
    token = id_token(foreign_idp, "alice")  # same client id and user, another issuer and key
    assert refused(bearer(token).get("/api/clusters/")) == (
        f"OIDC token refused: the token's issuer '{foreign_idp.issuer}' is unknown "
        f"(accepted: '{sso.issuer}')."
    )


def test_a_foreign_token_claiming_the_trusted_issuer_fails_the_signature(
    sso: OIDCProvider, foreign_idp: OIDCProvider
) -> None:
    header, _, signature = id_token(foreign_idp, "alice").split(".")
    claims = unverified_claims(id_token(sso, "alice"))
    forged = f"{header}.{b64(claims)}.{signature}"
    detail = refused(bearer(forged).get("/api/clusters/"))
    assert detail.startswith("OIDC token refused: ")
    assert "signature does not verify" in detail or "no key in the issuer's JWKS" in detail


def test_a_tampered_token_is_refused(sso: OIDCProvider) -> None:
    header, payload, signature = id_token(sso, "bob").split(".")
    claims = unverified_claims(f"{header}.{payload}.{signature}")
    claims["groups"] = ["staging-deployers", "admins"]
    tampered = f"{header}.{b64(claims)}.{signature}"
    assert refused(bearer(tampered).get("/api/clusters/")) == (
        "OIDC token refused: the token's signature does not verify with the issuer's keys."
    )
    assert not Group.objects.filter(name="admins").exists()


def test_an_unsigned_token_is_refused(sso: OIDCProvider) -> None:
    claims = unverified_claims(id_token(sso, "alice"))
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    assert refused(bearer(unsigned).get("/api/clusters/")) == (
        "OIDC token refused: the token is signed with 'none', which is never accepted (only asymmetric "
        "signatures verify against the issuer's published keys); accepted: RS256, ES256."
    )


def test_an_asymmetric_algorithm_left_out_of_the_setting_is_refused(settings: Any, sso: OIDCProvider) -> None:
    settings.FLEETGATE_OIDC_ALGORITHMS = ["ES256"]
    assert refused(bearer(id_token(sso, "alice")).get("/api/clusters/")) == (
        "OIDC token refused: the token is signed with 'RS256'; accepted: ES256."
    )


def test_fleetgate_api_tokens_still_work_beside_provider_tokens(sso: OIDCProvider) -> None:
    _, key = APIToken.issue(UserFactory(username="ops"), description="ci")
    assert bearer(key).get("/api/clusters/").status_code == 200
    assert refused(bearer("fgt_not-a-real-token").get("/api/clusters/")) == "Invalid or expired token."


def test_without_single_sign_on_a_provider_token_is_just_an_invalid_token(idp: OIDCProvider) -> None:
    token = id_token(idp, "alice")
    assert refused(bearer(token).get("/api/clusters/")) == "Invalid or expired token."
    assert not get_user_model().objects.filter(username="alice").exists()


def test_a_token_is_refused_when_its_issuer_cannot_be_reached(
    settings: Any, provider_binary: str, tmp_path: Any
) -> None:
    """Fail closed: without the issuer's keys no token is accepted (the discovery document is not cached
    yet in this process for this issuer)."""
    with OIDCProvider(provider_binary, tmp_path, [USERS[0]], [FLEETGATE]) as gone:
        token = id_token(gone, "alice")
        issuer = gone.issuer
    settings.FLEETGATE_OIDC_ISSUER = issuer
    settings.FLEETGATE_OIDC_CLIENT_ID, settings.FLEETGATE_OIDC_CLIENT_SECRET = (
        FLEETGATE.client_id,
        FLEETGATE.secret,
    )
    oidc_provider.forget()
    oidc_tokens.forget_keys()
    detail = refused(bearer(token).get("/api/clusters/"))
    discovery = f"{issuer}/.well-known/openid-configuration"
    # the reason follows (the connection refused), as requests words it
    expected = f"OIDC token not checked: cannot read the OIDC discovery document at {discovery}:"
    assert detail.startswith(expected)
    assert not get_user_model().objects.filter(username="alice").exists()


def test_a_provider_token_is_exchanged_for_a_fleetgate_api_token(sso: OIDCProvider) -> None:
    """CI signs in with a short-lived provider token once and keeps a Fleetgate token of its own user."""
    created = bearer(id_token(sso, "alice")).post("/api/access/tokens/", {"description": "ci", "days": 7})
    assert created.status_code == 201, created.content
    key = created.json()["key"]
    assert key.startswith("fgt_")
    alice = get_user_model().objects.get(username="alice")
    assert APIToken.objects.get(user=alice).description == "ci"
    me = bearer(key).get("/api/access/me/")
    assert me.status_code == 200 and me.json()["username"] == "alice"


def key_confusion_token(idp: OIDCProvider, claims: dict[str, Any]) -> str:
    """The classic key-confusion forgery: an HS256 token whose HMAC secret is the issuer's *public* key,
    taken from its real JWKS and written as PEM (what a verifier that lets the token pick the algorithm
    would use as the HMAC secret)."""
    jwks = requests.get(idp.discovery()["jwks_uri"], timeout=5).json()
    jwk = jwks["keys"][0]
    public_key = RSAAlgorithm.from_jwk(jwk)
    assert isinstance(public_key, rsa.RSAPublicKey)
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': jwk['kid']})}.{b64(claims)}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@pytest.mark.parametrize("configured", [["RS256", "HS256"], ["HS256"], ["HS256", "RS256", "none"]])
def test_hmac_signed_with_the_public_key_is_refused_whatever_the_algorithm_setting(
    settings: Any, sso: OIDCProvider, configured: list[str]
) -> None:
    """gunicorn runs no system checks, so access.E005 alone would not stop a misconfigured HS256."""
    settings.FLEETGATE_OIDC_ALGORITHMS = configured
    claims = unverified_claims(id_token(sso, "bob"))
    claims["groups"] = ["admins"]
    detail = refused(bearer(key_confusion_token(sso, claims)).get("/api/clusters/"))
    accepted = ", ".join(alg for alg in configured if alg == "RS256") or "nothing"
    assert detail == (
        "OIDC token refused: the token is signed with 'HS256', which is never accepted (only asymmetric "
        f"signatures verify against the issuer's published keys); accepted: {accepted}."
    )
    assert not get_user_model().objects.filter(username="bob").exists()
    assert not Group.objects.filter(name="admins").exists()


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_token_is_refused_even_when_none_is_configured(
    settings: Any, sso: OIDCProvider, alg: str
) -> None:
    settings.FLEETGATE_OIDC_ALGORITHMS = ["RS256", alg]
    claims = unverified_claims(id_token(sso, "alice"))
    unsigned = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims)}."
    assert refused(bearer(unsigned).get("/api/clusters/")) == (
        f"OIDC token refused: the token is signed with {alg!r}, which is never accepted (only asymmetric "
        "signatures verify against the issuer's published keys); accepted: RS256."
    )
    assert not get_user_model().objects.filter(username="alice").exists()
