"""The Fleetgate user of a provider account, and its Django groups from the provider's groups claim.

A provider account is found by (issuer, subject) in ``ExternalIdentity``, never by user name or e-mail. On
the first sign-in the user is made, named after ``FLEETGATE_OIDC_USERNAME_CLAIM`` (then ``email``, then the
subject), with a short suffix when a local account already has that name. On every sign-in (and every API
bearer token) the user's Django groups are set to the groups claim: groups it names are joined (and made
when missing), groups it no longer names are left. With ``FLEETGATE_OIDC_GROUPS_PREFIX`` only groups whose
names start with the prefix are mapped, and the user's other groups (managed in Fleetgate) are not touched.
A token without the groups claim means no groups (fail closed). Role bindings on the Django groups then give
the provider's groups their roles (``RoleBinding.group``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from fleet.access.models import ExternalIdentity
from fleet.audit.services import record
from fleet.core import context

USERNAME_CHARS = re.compile(r"[^\w.@+-]")
GROUP_NAME_MAX = 150
LAST_LOGIN_EVERY = 60  # seconds: how fresh ExternalIdentity.last_login is kept


class SignInRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def groups_from_claims(claims: dict[str, Any]) -> list[str]:
    """The Django group names the claims map to (sorted, without duplicates)."""
    raw = claims.get(settings.FLEETGATE_OIDC_GROUPS_CLAIM)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return []
    prefix = settings.FLEETGATE_OIDC_GROUPS_PREFIX
    names = {
        item.strip()
        for item in raw
        if isinstance(item, str) and item.strip() and len(item.strip()) <= GROUP_NAME_MAX
    }
    return sorted(name for name in names if name.startswith(prefix))


def _username(claims: dict[str, Any], issuer: str, subject: str) -> str:
    user_model = get_user_model()
    wanted = ""
    for claim in (settings.FLEETGATE_OIDC_USERNAME_CLAIM, "email", "sub"):
        value = claims.get(claim)
        if isinstance(value, str) and value.strip():
            wanted = USERNAME_CHARS.sub("-", value.strip())[:120]
            break
    if not user_model.objects.filter(username=wanted).exists():
        return wanted
    suffix = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:8]
    candidate = f"{wanted}-{suffix}"
    counter = 1
    while user_model.objects.filter(username=candidate).exists():
        counter += 1
        candidate = f"{wanted}-{suffix}-{counter}"
    return candidate


def _profile(claims: dict[str, Any]) -> dict[str, str]:
    def text(name: str, limit: int) -> str:
        value = claims.get(name)
        return value.strip()[:limit] if isinstance(value, str) else ""

    return {
        "email": text("email", 254),
        "first_name": text("given_name", 150),
        "last_name": text("family_name", 150),
    }


def _set_groups(user: Any, names: list[str]) -> tuple[list[str], list[str]]:
    """Make the user's (mapped) groups exactly ``names``; return the groups joined and left."""
    prefix = settings.FLEETGATE_OIDC_GROUPS_PREFIX
    current = {group.name: group for group in user.groups.all() if group.name.startswith(prefix)}
    joined = [name for name in names if name not in current]
    left = sorted(name for name in current if name not in names)
    for name in joined:
        group, created = Group.objects.get_or_create(name=name)
        if created:
            record("group.create", group, message="made for the identity provider's group of this name")
        user.groups.add(group)
    if left:
        user.groups.remove(*[current[name] for name in left])
    return joined, left


def sign_in(claims: dict[str, Any]) -> Any:
    """The user of these (validated) claims, made on first sign-in, with groups from the claims."""
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer, str) or not isinstance(subject, str) or not subject:
        raise SignInRefused("the provider's claims lack iss or sub")
    names = groups_from_claims(claims)
    profile = _profile(claims)
    with transaction.atomic():
        identity = (
            ExternalIdentity.objects.select_for_update()
            .select_related("user")
            .filter(issuer=issuer, subject=subject)
            .first()
        )
        if identity is None:
            user = get_user_model().objects.create_user(_username(claims, issuer, subject), **profile)
            user.set_unusable_password()  # signs in through the provider only
            user.save(update_fields=["password"])
            identity = ExternalIdentity.objects.create(user=user, issuer=issuer, subject=subject)
            with context.acting(user=user):
                record(
                    "user.create",
                    user,
                    after={"username": user.username, **profile},
                    message=f"made on the first single sign-on from {issuer}",
                )
        else:
            user = identity.user
            if not user.is_active:
                raise SignInRefused(f"the Fleetgate account {user.username!r} is disabled")
            changed = {key: value for key, value in profile.items() if value and getattr(user, key) != value}
            if changed:
                before = {key: getattr(user, key) for key in changed}
                for key, value in changed.items():
                    setattr(user, key, value)
                user.save(update_fields=list(changed))
                with context.acting(user=user):
                    record(
                        "user.update", user, before=before, after=changed, message="profile from the provider"
                    )
        with context.acting(user=user):
            joined, left = _set_groups(user, names)
            if joined or left:
                record(
                    "user.groups",
                    user,
                    before={"groups": sorted((set(names) - set(joined)) | set(left))},
                    after={"groups": names},
                    message=f"groups from the provider: joined {joined or 'none'}, left {left or 'none'}",
                )
        now = timezone.now()
        stale = identity.last_login is None or (now - identity.last_login).total_seconds() > LAST_LOGIN_EVERY
        if identity.groups != names or stale:  # an API client's every request need not write
            identity.groups = names
            identity.last_login = now
            identity.save(update_fields=["groups", "last_login"])
    return user
