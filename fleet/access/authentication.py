from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions

from fleet.access.models import APIToken
from fleet.core import context


class APITokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer fgt_…` (or `Token fgt_…`) with a personal, expiring API token."""

    keywords = ("bearer", "token")

    def authenticate(self, request: Any) -> tuple[Any, APIToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header.")
        token = APIToken.authenticate(header[1])
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or expired token.")
        now = timezone.now()
        if token.last_used is None or (now - token.last_used).total_seconds() > 60:
            APIToken.objects.filter(pk=token.pk).update(last_used=now)
        context.set_user(token.user)
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="fleetgate"'
