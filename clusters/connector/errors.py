"""Turning client exceptions into short, secret-free messages, and deciding what is worth retrying."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

RETRIABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class ConnectorError(Exception):
    """A failure talking to a cluster, with the server's Status when there was one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        causes: list[dict[str, Any]] | None = None,
        retriable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.causes = causes or []
        self.retriable = retriable


@dataclass
class FieldConflict:
    manager: str
    field: str
    message: str = ""


@dataclass
class ApiFailure:
    """A failed call described for people: status code, Status reason, message, conflicts."""

    message: str
    status: int | None = None
    reason: str = ""
    conflicts: list[FieldConflict] = field(default_factory=list)
    retriable: bool = False


def _status_body(exc: ApiException) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {"message": str(body)[:500]}
    return data if isinstance(data, dict) else {}


def retry_after(exc: BaseException) -> float | None:
    """The server's Retry-After (seconds) on a 429/503, if any."""
    headers = getattr(exc, "headers", None)
    value = None
    if headers is not None:
        try:
            value = headers.get("Retry-After")
        except AttributeError:
            value = None
    if value is None and isinstance(exc, ApiException):
        details = _status_body(exc).get("details") or {}
        value = details.get("retryAfterSeconds")
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


# kube-apiserver answers a server-side apply whose body does not fit the schema (a string where a number
# belongs, an undeclared field) with 500 and this message: a validation error, not a transient one.
PERMANENT_500 = ("failed to create typed patch object", "field not declared in schema")


def is_retriable(exc: BaseException) -> bool:
    if isinstance(exc, ConnectorError):
        return exc.retriable
    if isinstance(exc, ApiException):
        if exc.status == 500 and any(
            text in str(_status_body(exc).get("message", "")) for text in PERMANENT_500
        ):
            return False
        return exc.status in RETRIABLE_STATUS
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError | socket.timeout)


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
            for line in secret.strip().splitlines():  # PEM keys: never echo a line of one
                if len(line) > 16:
                    text = text.replace(line, "***")
    return text


def describe(exc: BaseException, server: str = "", secrets: list[str] | None = None) -> ApiFailure:
    """A short message for any exception raised while talking to a cluster (never a secret)."""
    secrets = secrets or []
    if isinstance(exc, ConnectorError):
        return ApiFailure(scrub(exc.message, secrets), exc.status, exc.reason, [], exc.retriable)
    if isinstance(exc, ApiException):
        if not exc.status:  # the client's own failures (TLS errors) come as status 0
            return ApiFailure(scrub(f"TLS or transport error: {exc.reason}", secrets)[:500], None, "", [])
        body = _status_body(exc)
        reason = str(body.get("reason") or exc.reason or "")
        message = str(body.get("message") or exc.reason or "").strip()
        conflicts = []
        for cause in (body.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "FieldManagerConflict":
                text = str(cause.get("message", ""))
                manager = text.split('"')[1] if text.count('"') >= 2 else text
                conflicts.append(FieldConflict(manager, str(cause.get("field", "")), text))
        if exc.status == 401:
            message = message or "Unauthorized"
            message = f"{message}: the cluster refused the credentials"
        text = f"HTTP {exc.status} {reason}: {message}" if reason else f"HTTP {exc.status}: {message}"
        return ApiFailure(scrub(text, secrets)[:2000], exc.status, reason, conflicts, is_retriable(exc))
    where = f" ({server})" if server else ""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        text = f"connection refused{where}"
    elif isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        text = f"connect timeout{where}"
    elif isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError | socket.timeout):
        text = f"read timeout{where}"
    elif isinstance(exc, urllib3.exceptions.SSLError):
        text = f"TLS error{where}: {exc}"
    elif isinstance(exc, urllib3.exceptions.ProtocolError | ConnectionError):
        text = f"connection lost{where}: {type(exc).__name__}"
    elif isinstance(exc, urllib3.exceptions.HTTPError):
        text = f"HTTP transport error{where}: {type(exc).__name__}: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return ApiFailure(scrub(text, secrets)[:500], None, "", [], is_retriable(exc))
