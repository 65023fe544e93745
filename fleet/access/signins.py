"""Sign-ins in the audit log: who, how (password, break-glass password, single sign-on) and from where.

Never a password, code or token: the method and, for a refusal, the reason the check gave.
"""

from __future__ import annotations

from typing import Any

from fleet.audit.services import record
from fleet.core import context


def record_sign_in(request: Any, user: Any, *, method: str) -> None:
    with context.acting(user=user):
        record("user.login", user, message=f"signed in with {method}")


def record_sign_in_failure(request: Any, *, method: str, reason: str) -> None:
    record("user.login_failed", target_type="user", message=f"{method} refused: {reason}"[:1000])
