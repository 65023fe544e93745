"""API errors keep DRF's shape; model validation errors become 400s with field messages, a body over the
size limit a 413, and a service's `DomainError` the status of its kind (`api_error`)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from rest_framework import status
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from fleet.audit.models import AuditImmutable
from fleet.core.errors import DomainError, ErrorKind
from fleet.core.request_body import request_body_limit


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def api_error(exc: DomainError) -> APIException:
    """The one mapping of a domain error's kind to an API answer: forbidden 403 ``{detail}``, conflict 409
    ``{detail}``, invalid 400 with the message on its field (``non_field_errors`` without one)."""
    if exc.kind is ErrorKind.FORBIDDEN:
        return PermissionDenied(exc.message)
    if exc.kind is ErrorKind.CONFLICT:
        return Conflict(exc.message)
    return ValidationError({exc.field or "non_field_errors": [exc.message]})


def _is_duplicate(exc: ValidationError) -> bool:
    try:
        return _codes(exc.get_codes()) == {"unique"}
    except AttributeError:  # a detail built from plain strings carries no codes
        return False


def _codes(value: Any) -> set[str]:
    """Every error code in a DRF ``get_codes()`` structure (a code, or lists and dicts of them)."""
    if isinstance(value, dict):
        return set().union(*(_codes(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_codes(v) for v in value)) if value else set()
    return {str(value)}


def _django_codes(exc: DjangoValidationError) -> set[str]:
    return {str(error.code) for error in exc.error_list} if hasattr(exc, "error_list") else {
        str(error.code) for errors in exc.error_dict.values() for error in errors
    }


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        exc = api_error(exc)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        if _django_codes(exc) == {"unique"}:
            return Response(detail, status=status.HTTP_409_CONFLICT)
        exc = ValidationError(detail)
    elif isinstance(exc, ValidationError) and _is_duplicate(exc):
        # The request is well formed but names something that exists already (a name, a binding): a
        # conflict with the server's state, as Kubernetes answers AlreadyExists, not a malformed request.
        return Response(exc.detail, status=status.HTTP_409_CONFLICT)
    elif isinstance(exc, ProtectedError):
        names = ", ".join(sorted({str(obj) for obj in exc.protected_objects})[:10])
        return Response({"detail": f"In use by: {names}."}, status=status.HTTP_409_CONFLICT)
    elif isinstance(exc, AuditImmutable):
        return Response({"detail": str(exc)}, status=status.HTTP_405_METHOD_NOT_ALLOWED)
    elif isinstance(exc, RequestDataTooBig):
        # Django's own refusal is a SuspiciousOperation (a bare HTML 400): a body over the limit is a 413,
        # naming the limit of the path (the webhook endpoint has its own).
        request = context.get("request")
        limit, _ = request_body_limit(request.path if request is not None else "")
        return Response({"detail": f"Request body is larger than the limit of {limit} bytes."},
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, list):
        # `raise ValidationError("...")` outside a serializer gives a bare list; error bodies are objects.
        response.data = {"non_field_errors": response.data}
    return response
