"""API errors keep DRF's shape; model validation errors become 400s with field messages, a body over the
size limit a 413."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from fleet.audit.models import AuditImmutable


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = ValidationError(detail)
    elif isinstance(exc, ProtectedError):
        names = ", ".join(sorted({str(obj) for obj in exc.protected_objects})[:10])
        return Response({"detail": f"In use by: {names}."}, status=status.HTTP_409_CONFLICT)
    elif isinstance(exc, AuditImmutable):
        return Response({"detail": str(exc)}, status=status.HTTP_405_METHOD_NOT_ALLOWED)
    elif isinstance(exc, RequestDataTooBig):
        # Django's own refusal is a SuspiciousOperation (a bare HTML 400): a body over the limit is a 413.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"detail": f"Request body is larger than the limit of {limit} bytes."},
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    return drf_exception_handler(exc, context)
