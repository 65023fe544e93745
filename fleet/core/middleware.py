"""Request context: a request id (`X-Request-ID`, kept when a proxy supplies a sane one), the change
context (web or api) and the source address, available to the audit log for the whole request."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from fleet.core import context
from fleet.core.choices import ChangeContext

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def client_address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "") or ""


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        supplied = request.headers.get("X-Request-ID", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else context.new_request_id()
        if request.path.startswith("/api/hooks/"):
            change_context = ChangeContext.WEBHOOK
        elif request.path.startswith("/api/"):
            change_context = ChangeContext.API
        else:
            change_context = ChangeContext.WEB
        request.request_id = request_id  # type: ignore[attr-defined]
        with context.acting(
            change_context=change_context,
            request_id=request_id,
            source_address=client_address(request),
        ):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                context.set_user(user)
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
