"""One size limit for every request body, announced (Content-Length) or chunked, answered with 413.

Django alone refuses a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` only when something reads ``request.body``,
and then as a bare HTML 400 (``RequestDataTooBig`` is a ``SuspiciousOperation``).  Under WSGI it also never
sees a chunked body: ``WSGIRequest`` reads ``CONTENT_LENGTH`` bytes, which is 0 when the client sent
``Transfer-Encoding: chunked``, so a chunked JSON body reads as empty and a chunked webhook as unsigned or
forged.  ``RequestBodyLimitMiddleware`` sits before anything that reads the body and:

* answers 413 to an announced Content-Length over the limit before reading a byte of the body;
* reads a chunked body up to limit + 1 bytes and answers 413 when it is larger; otherwise hands it on with
  its Content-Length, so that DRF, forms and views see it like any other body.  The chunks are taken from
  ``wsgi.input`` when the server has decoded them already (gunicorn, uWSGI and mod_wsgi say so with
  ``wsgi.input_terminated``); Django's runserver and live server (wsgiref) hand over the socket with the
  chunk framing in it, which is decoded here; any other server gets 411 (send a Content-Length);
* answers 413 in DRF's error shape (``{"detail": ...}``) under ``/api/`` and as a short page elsewhere.

The limit is ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (``FLEETGATE_MAX_REQUEST_BYTES``); the pull-mode agent API
(``/api/agent/``) has ``FLEETGATE_AGENT_MAX_BODY_BYTES`` (16 MiB).  The webhook endpoint has its
own (``FLEETGATE_WEBHOOK_MAX_BYTES``) and answers its own 413 so that the rejection is audited and rate
limited with the other webhook rejections; for it this middleware only de-chunks, cut off at its limit + 1.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

WEBHOOK_PREFIX = "/api/hooks/"
AGENT_PREFIX = "/api/agent/"
_READ = 64 * 1024
_MAX_CHUNK_LINE = 4096  # a chunk-size line with extensions; longer is refused
_MAX_TRAILERS = 64
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ChunkedBodyError(ValueError):
    """The chunk framing is broken (the client gets a 400)."""


def request_body_limit(path: str) -> tuple[int, bool]:
    """The limit for a path, and whether the view answers its own 413 (the webhook endpoint)."""
    if path.startswith(WEBHOOK_PREFIX):
        return int(settings.FLEETGATE_WEBHOOK_MAX_BYTES), True
    if path.startswith(AGENT_PREFIX):  # pull-mode agents report the live objects they manage: 16 MiB
        return int(settings.FLEETGATE_AGENT_MAX_BODY_BYTES), False
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return (sys.maxsize if limit is None else int(limit)), False


def too_large_response(request: HttpRequest, limit: int, *, body_left_unframed: bool = False) -> HttpResponse:
    """413: DRF's error shape under /api/, a short readable page for the UI.  With ``body_left_unframed``
    (the rest of a chunked body is still on the connection) it has no Content-Length, so that Django's
    runserver closes the connection (a WSGI application may not send ``Connection`` itself); otherwise the
    server can skip the announced rest of the body and keep the connection."""
    message = f"Request body is larger than the limit of {limit} bytes."
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=413)
    else:
        html = render_to_string("core/request_too_large.html", {"limit": limit, "message": message})
        response = HttpResponse(html, status=413)
    if not body_left_unframed:
        response["Content-Length"] = str(len(response.content))
    return response


def _error(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": message}, status=status)
    else:
        response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    return response


def read_up_to(stream: Any, limit: int) -> tuple[bytes, bool]:
    """At most ``limit + 1`` bytes of a stream that ends where the body ends: (body, larger than limit)."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        data = stream.read(min(_READ, limit + 1 - size))
        if not data:
            break
        parts.append(data)
        size += len(data)
    body = b"".join(parts)
    return body[:limit], size > limit


def _read_exactly(stream: Any, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left:
        data = stream.read(min(_READ, left))
        if not data:
            raise ChunkedBodyError("the body ended inside a chunk")
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def read_chunked(stream: Any, limit: int) -> tuple[bytes, bool]:
    """Decode ``Transfer-Encoding: chunked`` framing (RFC 9112 section 7.1) from a raw stream, reading no
    more than the limit allows: (body, larger than limit).  When larger, the rest stays unread."""
    parts: list[bytes] = []
    size = 0
    while True:
        line = stream.readline(_MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            raise ChunkedBodyError("a chunk-size line is missing, cut off or too long")
        token = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(token):
            raise ChunkedBodyError("a chunk size is not a hexadecimal number")
        chunk = int(token, 16)
        if chunk == 0:
            break
        if size + chunk > limit:
            return b"".join(parts), True
        parts.append(_read_exactly(stream, chunk))
        size += chunk
        if _read_exactly(stream, 2) != b"\r\n":
            raise ChunkedBodyError("a chunk is not followed by CRLF")
    for _ in range(_MAX_TRAILERS):  # trailer fields, then the empty line
        line = stream.readline(_MAX_CHUNK_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return b"".join(parts), False
        if not line.endswith(b"\n"):
            raise ChunkedBodyError("the chunked body does not end with an empty line")
    raise ChunkedBodyError("too many trailer fields")


def _chunked_source(environ: dict[str, Any]) -> tuple[Any, bool] | None:
    """(stream, already decoded) for a chunked request, or None when this server cannot give the body."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return None
    if environ.get("wsgi.input_terminated"):
        return stream, True
    # Django's runserver and live server (wsgiref) wrap the socket file in Django's LimitedStream of
    # CONTENT_LENGTH bytes (0 for a chunked request) and leave the chunk framing in the socket.
    if isinstance(stream, LimitedStream):
        raw = getattr(getattr(stream, "_read", None), "__self__", None)  # the socket file it reads
        if raw is not None and hasattr(raw, "readline"):
            return raw, False
    return None


def _transfer_codings(meta: dict[str, Any]) -> list[str]:
    value = str(meta.get("HTTP_TRANSFER_ENCODING", "") or "")
    return [token.strip().lower() for token in value.split(",") if token.strip()]


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit, view_answers = request_body_limit(request.path)
        codings = _transfer_codings(request.META)
        close = False
        if codings:
            refused = self._dechunk(request, codings, limit, view_answers)
            if refused is not None:
                return refused
            close = int(request.META["CONTENT_LENGTH"]) > limit
        else:
            try:
                announced = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                announced = 0
            if announced > limit and not view_answers:
                return too_large_response(request, limit)
        response = self.get_response(request)
        if close and response.has_header("Content-Length"):
            del response["Content-Length"]  # runserver then closes the connection, with the rest unread
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view that reads more than Django allows (``RequestDataTooBig``) answers 413, not a bare 400."""
        if isinstance(exception, RequestDataTooBig):
            return too_large_response(request, request_body_limit(request.path)[0])
        return None

    def _dechunk(self, request: HttpRequest, codings: list[str], limit: int,
                 view_answers: bool) -> HttpResponse | None:
        if codings[-1] != "chunked":
            return _error(request, 400, "Transfer-Encoding must end with chunked.")
        if codings != ["chunked"]:
            return _error(request, 501, f"Transfer-Encoding {', '.join(codings)} is not supported.")
        if request.META.get("CONTENT_LENGTH"):
            return _error(request, 400, "Send either Content-Length or Transfer-Encoding, not both.")
        source = _chunked_source(request.META)
        if source is None:
            return _error(request, 411, "This server cannot read chunked bodies: send a Content-Length.")
        stream, decoded = source
        try:
            body, larger = read_up_to(stream, limit) if decoded else read_chunked(stream, limit)
        except ChunkedBodyError as exc:
            return _error(request, 400, f"Malformed chunked body: {exc}.")
        except OSError:
            return _error(request, 400, "The request body could not be read.")
        if larger and not view_answers:
            return too_large_response(request, limit, body_left_unframed=not decoded)
        # Hand the body on as if it had come with a Content-Length (WSGIRequest reads ``_stream``); one
        # byte over the limit tells a view that answers its own 413 that the body was larger.
        request._stream = BytesIO(b"" if larger else body)  # type: ignore[attr-defined]
        request.META["CONTENT_LENGTH"] = str(limit + 1 if larger else len(body))
        return None
