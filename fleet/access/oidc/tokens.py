"""Validating a JWT from the OpenID Connect provider against the issuer's published keys (JWKS).

One validation for the browser sign-in's ID token and for API bearer tokens: the algorithm must be one of
``FLEETGATE_OIDC_ALGORITHMS`` and asymmetric (``none`` and HMACs, which a client could forge, are refused
here even when the setting names them), the issuer must be
``FLEETGATE_OIDC_ISSUER`` (checked before any key is fetched, so that a foreign issuer's token costs
nothing), the signature must verify with a key from the issuer's JWKS, the audience must include one of the
accepted audiences, and ``exp``/``iat`` must hold (with ``FLEETGATE_OIDC_LEEWAY`` seconds of clock skew).
Every refusal says which of these failed; the token itself is never logged or echoed.
"""

from __future__ import annotations

import threading
from typing import Any

import jwt
from django.conf import settings

from fleet.access.oidc.provider import get_provider

# The only algorithms a token may name, whatever FLEETGATE_OIDC_ALGORITHMS says. An HMAC (HS*) would be
# verified with the issuer's *public* key as its secret, which anyone can read from the JWKS (the
# key-confusion forgery), and ``none`` is no signature at all.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)
JWKS_LIFESPAN = 300  # seconds a fetched JWKS is reused; an unknown key id fetches it again


class TokenRejected(Exception):
    """The token is not acceptable; the message says why, for the 401 answer and the audit."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_lock = threading.Lock()
_jwks_clients: dict[str, jwt.PyJWKClient] = {}


def _jwks_client(uri: str) -> jwt.PyJWKClient:
    with _lock:
        client = _jwks_clients.get(uri)
        if client is None:
            client = jwt.PyJWKClient(
                uri, cache_keys=True, lifespan=JWKS_LIFESPAN, timeout=settings.FLEETGATE_OIDC_TIMEOUT
            )
            _jwks_clients[uri] = client
        return client


def forget_keys() -> None:
    with _lock:
        _jwks_clients.clear()


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and len(token) < 16384


def api_audiences() -> list[str]:
    """The audiences a bearer token may be issued for: FLEETGATE_OIDC_API_AUDIENCES, else the client id."""
    return list(settings.FLEETGATE_OIDC_API_AUDIENCES) or [settings.FLEETGATE_OIDC_CLIENT_ID]


def accepted_algorithms() -> list[str]:
    """FLEETGATE_OIDC_ALGORITHMS without anything outside ``ASYMMETRIC_ALGORITHMS``: the system check
    access.E005 refuses such a setting, but gunicorn and Celery run no system checks."""
    return [alg for alg in settings.FLEETGATE_OIDC_ALGORITHMS if alg in ASYMMETRIC_ALGORITHMS]


def validate(token: str, *, audiences: list[str], nonce: str | None = None) -> dict[str, Any]:
    """Return the token's claims, or raise ``TokenRejected`` naming the check that failed."""
    if not looks_like_jwt(token):
        raise TokenRejected("the token is not a JWT (header.payload.signature)")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(f"the token is not a well-formed JWT: {exc}") from exc
    algorithm = header.get("alg")
    allowed = accepted_algorithms()
    if not isinstance(algorithm, str) or algorithm not in ASYMMETRIC_ALGORITHMS:
        raise TokenRejected(
            f"the token is signed with {algorithm!r}, which is never accepted (only asymmetric signatures "
            f"verify against the issuer's published keys); accepted: {', '.join(allowed) or 'nothing'}"
        )
    if algorithm not in allowed:
        raise TokenRejected(f"the token is signed with {algorithm!r}; accepted: {', '.join(allowed)}")
    issuer = settings.FLEETGATE_OIDC_ISSUER
    if unverified.get("iss") != issuer:
        raise TokenRejected(f"the token's issuer {unverified.get('iss')!r} is unknown (accepted: {issuer!r})")
    provider = get_provider()
    try:
        key = _jwks_client(provider.jwks_uri).get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as exc:
        raise TokenRejected(f"the issuer's keys could not be fetched from {provider.jwks_uri}") from exc
    except jwt.PyJWKClientError as exc:
        raise TokenRejected(f"no key in the issuer's JWKS matches the token's key id: {exc}") from exc
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=audiences,
            issuer=issuer,
            leeway=settings.FLEETGATE_OIDC_LEEWAY,
            options={"require": ["exp", "iat", "iss", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected("the token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenRejected(
            f"the token is for audience {unverified.get('aud')!r}, not for Fleetgate (accepted: "
            f"{', '.join(audiences)})"
        ) from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenRejected("the token's signature does not verify with the issuer's keys") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenRejected("the token is not valid yet (iat or nbf in the future)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"the token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(f"the token is invalid: {exc}") from exc
    if nonce is not None and claims.get("nonce") != nonce:
        raise TokenRejected("the ID token's nonce does not match this sign-in (a replayed token?)")
    return claims
