"""API bearer tokens from the OpenID Connect provider.

``Authorization: Bearer <JWT>`` with an ID token (or a JWT access token) issued by FLEETGATE_OIDC_ISSUER for
one of the accepted audiences (FLEETGATE_OIDC_API_AUDIENCES, else the client id) signs the request in as
that provider account's Fleetgate user, made on first use and with its groups set from the token's groups
claim, exactly as a browser sign-in does; role bindings then apply as for anyone. A JWT that fails a check
is refused with 401 and the check's message. Fleetgate's own ``fgt_`` tokens go on to
``APITokenAuthentication``.
"""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from fleet.access.models import TOKEN_PREFIX
from fleet.access.oidc import provider as oidc_provider
from fleet.access.oidc import tokens, users
from fleet.core import context


class OIDCBearerAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[Any, dict[str, Any]] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if len(header) != 2 or header[0].lower() != "bearer" or not oidc_provider.enabled():
            return None
        token = header[1]
        if token.startswith(TOKEN_PREFIX) or not tokens.looks_like_jwt(token):
            return None
        try:
            claims = tokens.validate(token, audiences=tokens.api_audiences())
            user = users.sign_in(claims)
        except tokens.TokenRejected as exc:
            raise exceptions.AuthenticationFailed(f"OIDC token refused: {exc.message}.") from exc
        except users.SignInRefused as exc:
            raise exceptions.AuthenticationFailed(f"OIDC token refused: {exc.message}.") from exc
        except oidc_provider.ProviderUnavailable as exc:
            raise exceptions.AuthenticationFailed(f"OIDC token not checked: {exc}.") from exc
        context.set_user(user)
        return user, claims

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="fleetgate"'
