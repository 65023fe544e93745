"""mozilla-django-oidc's authorization code flow, configured from Fleetgate's settings and the discovery
document, with Fleetgate's token validation and user mapping.

mozilla-django-oidc brings the flow: state, nonce and the PKCE code verifier kept in the session, the
redirect to the provider and the code exchange. Fleetgate replaces two parts: the ID token is validated by
``tokens.validate`` (mozilla-django-oidc checks the signature but neither issuer nor audience), and the user
is found or made by ``users.sign_in`` (by issuer and subject, with the groups claim).
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings

from fleet.access.oidc import provider as oidc_provider
from fleet.access.oidc import tokens, users

log = logging.getLogger(__name__)

_PROVIDER_SETTINGS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}


def oidc_setting(attr: str, *default: Any) -> Any:
    """mozilla-django-oidc's settings, answered from FLEETGATE_OIDC_* and the discovery document."""
    if attr in _PROVIDER_SETTINGS:
        return getattr(oidc_provider.get_provider(), _PROVIDER_SETTINGS[attr])
    fixed: dict[str, Any] = {
        "OIDC_RP_CLIENT_ID": settings.FLEETGATE_OIDC_CLIENT_ID,
        "OIDC_RP_CLIENT_SECRET": settings.FLEETGATE_OIDC_CLIENT_SECRET,
        "OIDC_RP_SCOPES": settings.FLEETGATE_OIDC_SCOPES,
        "OIDC_RP_SIGN_ALGO": settings.FLEETGATE_OIDC_ALGORITHMS[0],
        "OIDC_USE_PKCE": True,
        "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
        "OIDC_USE_NONCE": True,
        "OIDC_TOKEN_USE_BASIC_AUTH": settings.FLEETGATE_OIDC_TOKEN_AUTH != "client_secret_post",  # noqa: S105
        "OIDC_TIMEOUT": settings.FLEETGATE_OIDC_TIMEOUT,
        "OIDC_VERIFY_SSL": True,
        # Tokens are never kept: Fleetgate needs them only to learn who signed in.
        "OIDC_STORE_ACCESS_TOKEN": False,
        "OIDC_STORE_ID_TOKEN": False,
        "OIDC_ALLOW_UNSECURED_JWT": False,
        "OIDC_CREATE_USER": True,
        "OIDC_AUTHENTICATION_CALLBACK_URL": "oidc_authentication_callback",
    }
    if attr in fixed:
        return fixed[attr]
    return import_from_settings(attr, *default)


def failure_reason(request: Any) -> str:
    return getattr(request, "_fleetgate_oidc_failure", "")


class OIDCBackend(OIDCAuthenticationBackend):
    """Signs in a provider account after the authorization code flow; off while no issuer is set."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The endpoints are read when a sign-in happens (discovery), not when Django loads the backend
        # for a session or a permission check.
        self.UserModel = get_user_model()

    def authenticate(self, request: Any, **kwargs: Any) -> Any:
        if request is None or not oidc_provider.enabled() or "code" not in request.GET:
            return None
        try:
            provider = oidc_provider.get_provider()
            self.OIDC_OP_TOKEN_ENDPOINT = provider.token_endpoint
            self.OIDC_OP_USER_ENDPOINT = provider.userinfo_endpoint
            self.OIDC_OP_JWKS_ENDPOINT = provider.jwks_uri
            self.OIDC_RP_CLIENT_ID = settings.FLEETGATE_OIDC_CLIENT_ID
            self.OIDC_RP_CLIENT_SECRET = settings.FLEETGATE_OIDC_CLIENT_SECRET
            self.OIDC_RP_SIGN_ALGO = settings.FLEETGATE_OIDC_ALGORITHMS[0]
            self.OIDC_RP_IDP_SIGN_KEY = None
            return super().authenticate(request, **kwargs)
        except (oidc_provider.ProviderUnavailable, tokens.TokenRejected, users.SignInRefused) as exc:
            reason = exc.message if hasattr(exc, "message") else str(exc)
        except requests.RequestException as exc:
            # The provider refused the code exchange or the userinfo request (its answer has no secrets;
            # the request, which carries the client secret and the code, is not logged).
            status = getattr(exc.response, "status_code", None)
            reason = f"the provider refused the sign-in ({status or type(exc).__name__})"
        log.warning("single sign-on refused: %s", reason)
        request._fleetgate_oidc_failure = reason
        return None

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        return tokens.validate(
            token, audiences=[settings.FLEETGATE_OIDC_CLIENT_ID], nonce=kwargs.get("nonce")
        )

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload.get("sub"):
            # OpenID Connect Core 1.0, 5.3.2: the userinfo response must be about the ID token's subject.
            raise users.SignInRefused("the provider's userinfo answer is about another subject")
        claims = {**userinfo, **payload}  # the validated ID token wins where both say something
        return users.sign_in(claims)
