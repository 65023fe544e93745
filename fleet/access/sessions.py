"""Ending a user's sessions and API tokens at once when they may no longer sign in.

Django already refuses the session of an inactive or deleted user on every request (the auth backend's
``get_user``), and ``APITokenAuthentication`` refuses a token whose user is inactive. The session rows and
tokens are deleted as well (each token revocation audited), so that re-activating an account brings back
neither a session nor a token issued before it was disabled. A deleted user's tokens go with it (cascade).
Role changes need nothing here: bindings are read again on every request (``restrict`` caches them on the
request's user object only).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.db import transaction
from django.utils import timezone

DB_ENGINES = ("django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db")


def end_sessions(user_id: Any) -> int:
    """Delete every session of this user (database-backed sessions); return how many."""
    if settings.SESSION_ENGINE not in DB_ENGINES:
        return 0
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    ended = []
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(session.get_decoded().get(SESSION_KEY)) == str(user_id):
            ended.append(session.session_key)
    for key in ended:
        SessionStore(session_key=key).delete()  # also drops the cached copy (cached_db)
    return len(ended)


def revoke_tokens(user: Any, reason: str) -> int:
    """Delete the user's API tokens, one audit event each; in the caller's transaction."""
    from fleet.access.models import APIToken
    from fleet.audit.services import record

    tokens = list(APIToken.objects.filter(user=user))
    with transaction.atomic():
        for token in tokens:
            record("apitoken.delete", token, message=f"token {token.prefix}… revoked: {reason}")
            token.delete()
    return len(tokens)


def user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created and not instance.is_active:
        revoke_tokens(instance, "the user was disabled")
        user_id = instance.pk
        transaction.on_commit(lambda: end_sessions(user_id))


def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    user_id = instance.pk
    transaction.on_commit(lambda: end_sessions(user_id))
