"""Domain errors with a kind: what a service refuses, and why, without saying how a caller answers.

A service raises a `DomainError` (or a subclass such as `RolloutError`) with a `kind`; the API maps the kind
to a status code in one place (`fleet/core/api/exceptions.py`), the UI in another (`fleet/web/views/base.py`).
Nobody tells a refusal from a bad request by reading its message."""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    FORBIDDEN = "forbidden"  # the user may not do this (API 403)
    CONFLICT = "conflict"  # the object's state refuses it now (API 409)
    INVALID = "invalid"  # the request itself is wrong (API 400, on ``field`` when given)


class DomainError(Exception):
    """A request a service refuses; ``message`` says why, ``field`` names the input at fault if any."""

    def __init__(
        self, message: str, *, kind: ErrorKind = ErrorKind.INVALID, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.field = field

