from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from fleet.access.models import RoleBinding
from fleet.access.restrict import has_permission


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"nav_access": has_permission(user, RoleBinding, "view")}
