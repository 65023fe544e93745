"""System checks (``manage.py check``) for the sign-in settings: a wrong value fails at start, not at the
first sign-in. One check needs the database (the role bindings): Django runs it at ``manage.py migrate`` and
``manage.py check --database default``, not at a plain ``check``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import DatabaseError

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


@register(Tags.database)
def groups_prefix(app_configs: Any, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Single sign-on without ``FLEETGATE_OIDC_GROUPS_PREFIX`` while role bindings name groups: whoever may
    make or rename a group at the provider may give anyone those roles, by naming the group the same."""
    if not databases or not settings.FLEETGATE_OIDC_ISSUER or settings.FLEETGATE_OIDC_GROUPS_PREFIX:
        return []
    from fleet.access.models import RoleBinding  # the app registry is ready when checks run

    bound: dict[str, set[str]] = {}
    for database in databases:
        try:
            rows = list(
                RoleBinding.objects.using(database)
                .filter(group__isnull=False)
                .values_list("group__name", "role")
                .order_by()
                .distinct()
            )
        except DatabaseError:  # not migrated yet: nothing is bound
            continue
        for name, role in rows:
            bound.setdefault(name, set()).add(role)
    if not bound:
        return []
    named = ", ".join(f"{name!r} ({', '.join(sorted(roles))})" for name, roles in sorted(bound.items())[:10])
    more = f" and {len(bound) - 10} more" if len(bound) > 10 else ""
    return [
        CheckWarning(
            "FLEETGATE_OIDC_GROUPS_PREFIX is empty: every group the OIDC provider names is mapped onto the "
            f"Django group of the same name, and role bindings name the groups {named}{more}; a provider "
            "group of one of these names grants its role",
            hint=(
                "Set FLEETGATE_OIDC_GROUPS_PREFIX to a prefix under which only the provider's administrators "
                "make groups (e.g. 'fleetgate-') and bind roles to groups with that prefix "
                "(docs/operations.md, Single sign-on, Groups and roles)"
            ),
            id="access.W001",
        )
    ]
