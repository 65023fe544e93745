"""The Git webhook endpoint: ``POST /api/hooks/git/<repository id>/``.

Not authenticated by session or token: every delivery is verified with the repository's webhook secret
(GitHub ``X-Hub-Signature-256``, GitLab ``X-Gitlab-Token``, Gitea ``X-Gitea-Signature``).  CSRF does not
apply (DRF views without session authentication are exempt).  Deliveries are throttled per repository and
per source address (429 with Retry-After) before the body is read; the body is read with a size limit
(413) before a signature is computed over it.  A chunked delivery reaches the view de-chunked (read up to
the limit, before throttling) by ``fleet.core.request_body.RequestBodyLimitMiddleware``.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from fleet.core.middleware import client_address
from fleet.observability import metrics
from fleet.sources.services import receive_webhook
from fleet.sources.webhooks import MAX_WEBHOOK_BODY_BYTES

DEFAULT_WEBHOOK_MAX_BYTES = 5 * 1024 * 1024


def webhook_max_bytes() -> int:
    """``FLEETGATE_WEBHOOK_MAX_BYTES`` (default 5 MiB), never more than the providers' 25 MB."""
    return min(int(getattr(settings, "FLEETGATE_WEBHOOK_MAX_BYTES", DEFAULT_WEBHOOK_MAX_BYTES)),
               MAX_WEBHOOK_BODY_BYTES)


def read_limited(request: Any, limit: int) -> bytes | None:
    """The raw body, or None when it is larger than ``limit`` (checked before reading when announced)."""
    try:
        announced = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        announced = 0
    if announced > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = request.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_RATE = re.compile(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)")


class _WebhookThrottle(SimpleRateThrottle):
    """A rate from a Fleetgate setting, read per request (``"120/min"``; empty: unlimited), counted in the
    ``default`` cache shared by every web process."""

    setting = ""

    def get_rate(self) -> str | None:
        rate = str(getattr(settings, self.setting, "") or "").strip()
        if rate and not _RATE.fullmatch(rate):
            raise ImproperlyConfigured(f"{self.setting} must look like 120/min (per s, min, h or day), "
                                       f"not {rate!r}")
        return rate or None

    def get_ident(self, request: Request) -> str:
        # The connecting address, as the audit log records it: X-Forwarded-For is the sender's to choose.
        return client_address(request._request) or "unknown"


class RepositoryWebhookThrottle(_WebhookThrottle):
    scope = "webhook-repository"
    setting = "FLEETGATE_WEBHOOK_RATE_PER_REPOSITORY"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": view.kwargs.get("repository_id")}


class AddressWebhookThrottle(_WebhookThrottle):
    scope = "webhook-address"
    setting = "FLEETGATE_WEBHOOK_RATE_PER_ADDRESS"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class _RawParser(BaseParser):
    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return None


ErrorDetail = inline_serializer("WebhookErrorDetail", fields={"detail": serializers.CharField()})

WebhookAnswer = inline_serializer(
    "WebhookAnswer",
    fields={
        "status": serializers.ChoiceField(choices=["queued", "ping", "ignored", "rejected", "not_found"]),
        "detail": serializers.CharField(),
        "provider": serializers.CharField(allow_null=True),
        "after": serializers.CharField(required=False, allow_null=True),
    },
)


class GitWebhookView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    parser_classes = [_RawParser]
    throttle_classes = [AddressWebhookThrottle, RepositoryWebhookThrottle]

    @extend_schema(
        operation_id="hooks_git_create",
        summary="Receive a push webhook from GitHub, GitLab or Gitea",
        description=(
            "Verified by the repository's webhook secret, not by a session or token. A push to the "
            "followed branch queues a fetch (202); a ping answers 200; other events and branches 202 "
            "ignored; unsigned 401; forged 403; malformed 400; a delivery id or body already received "
            "within the replay window, or a GitHub push older than it, 409; larger than the limit 413; "
            "more deliveries than the rate per repository or per source address 429 with Retry-After."
        ),
        auth=[],
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            200: OpenApiResponse(WebhookAnswer, description="ping"),
            202: OpenApiResponse(WebhookAnswer, description="queued or ignored"),
            400: OpenApiResponse(WebhookAnswer, description="malformed or unknown provider"),
            401: OpenApiResponse(WebhookAnswer, description="unsigned"),
            403: OpenApiResponse(WebhookAnswer, description="forged signature or token"),
            # The view's own 404 carries status and provider too; a path that is no repository id gets
            # the project's plain 404.
            404: OpenApiResponse(ErrorDetail, description="no such repository"),
            409: OpenApiResponse(WebhookAnswer, description="replayed or stale delivery"),
            411: OpenApiResponse(ErrorDetail, description="chunked body on a server that cannot read it"),
            413: OpenApiResponse(WebhookAnswer, description="body too large"),
            429: OpenApiResponse(ErrorDetail, description="rate limit; see Retry-After"),
        },
    )
    def post(self, request: Request, repository_id: int) -> Response:
        limit = webhook_max_bytes()
        body = read_limited(request._request, limit)
        outcome = receive_webhook(repository_id, request._request.headers, body,
                                  too_large=body is None, max_bytes=limit)
        return Response(outcome.body(), status=outcome.http_status)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # Every answer counts as a delivery, the ones refused before the view runs (429, 413) too.
        response = super().finalize_response(request, response, *args, **kwargs)
        metrics.webhook_delivery(_delivery_result(response), response.status_code)
        return response


_DELIVERY_RESULTS = frozenset({"queued", "ping", "ignored", "rejected", "not_found"})


def _delivery_result(response: Any) -> str:
    data = getattr(response, "data", None)
    status = data.get("status") if isinstance(data, dict) else None
    if status in _DELIVERY_RESULTS:
        return str(status)
    return "throttled" if response.status_code == 429 else "error"
