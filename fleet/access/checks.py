"""System checks (``manage.py check``) for the sign-in settings: a wrong value fails at start, not at the
first sign-in."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


@register()
def sign_in_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    issuer = settings.FLEETGATE_OIDC_ISSUER
    if issuer:
        if not issuer.startswith(("https://", "http://")):
            errors.append(
                Error(f"FLEETGATE_OIDC_ISSUER must be an http(s):// URL, not {issuer!r}", id="access.E001")
            )
        if not settings.FLEETGATE_OIDC_CLIENT_ID or not settings.FLEETGATE_OIDC_CLIENT_SECRET:
            errors.append(
                Error(
                    "FLEETGATE_OIDC_ISSUER is set: FLEETGATE_OIDC_CLIENT_ID and FLEETGATE_OIDC_CLIENT_SECRET "
                    "are needed",
                    id="access.E002",
                )
            )
        if "openid" not in settings.FLEETGATE_OIDC_SCOPES.split():
            errors.append(Error("FLEETGATE_OIDC_SCOPES must include 'openid'", id="access.E003"))
    if settings.FLEETGATE_OIDC_TOKEN_AUTH not in TOKEN_AUTH_METHODS:
        errors.append(
            Error(
                f"FLEETGATE_OIDC_TOKEN_AUTH must be one of {', '.join(TOKEN_AUTH_METHODS)}, "
                f"not {settings.FLEETGATE_OIDC_TOKEN_AUTH!r}",
                id="access.E004",
            )
        )
    unsupported = [
        alg for alg in settings.FLEETGATE_OIDC_ALGORITHMS if alg.upper().startswith(("HS", "NONE"))
    ]
    if unsupported or not settings.FLEETGATE_OIDC_ALGORITHMS:
        errors.append(
            Error(
                "FLEETGATE_OIDC_ALGORITHMS takes asymmetric algorithms only (e.g. RS256, ES256), "
                f"not {', '.join(unsupported) or 'nothing'}",
                id="access.E005",
            )
        )
    if not settings.FLEETGATE_LOCAL_LOGIN and not issuer:
        errors.append(
            Error(
                "FLEETGATE_LOCAL_LOGIN is off and FLEETGATE_OIDC_ISSUER is empty: nobody could sign in "
                "(except FLEETGATE_BREAK_GLASS_USERS)",
                id="access.E006",
            )
        )
    return errors
