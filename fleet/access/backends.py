"""Password sign-in, which the platform can switch off once single sign-on is in place.

``LocalPasswordBackend`` is Django's ``ModelBackend`` (user name and password, permissions) with one
refusal: while ``FLEETGATE_LOCAL_LOGIN`` is off, a password sign-in is refused for everyone except the
break-glass users named in ``FLEETGATE_BREAK_GLASS_USERS`` (for when the identity provider is down). The
refusal covers every password form: the web sign-in page, the admin's and DRF's session login alike.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend


def local_login_enabled() -> bool:
    return bool(settings.FLEETGATE_LOCAL_LOGIN)


def is_break_glass(username: str | None) -> bool:
    return bool(username) and username in settings.FLEETGATE_BREAK_GLASS_USERS


class LocalPasswordBackend(ModelBackend):
    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if username is None:
            username = kwargs.get(self._username_field())
        if not local_login_enabled() and not is_break_glass(username):
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)

    @staticmethod
    def _username_field() -> str:
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD
