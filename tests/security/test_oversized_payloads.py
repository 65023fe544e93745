"""Resource exhaustion through oversized request bodies, announced (Content-Length) or chunked.

Attack class: a client (authenticated or not) sends a body far larger than any real request, to make the
server buffer it in memory, or sends it chunked so that a size check on Content-Length never sees it. Peer
GitOps tools shipped this class: Argo CD's /api/webhook read and decoded arbitrarily large JSON bodies until
the server was OOM-killed (CVE-2024-40634, GHSA-jmvp-698c-4x3w), and Argo Workflows' webhook interceptor
read the whole body into memory before verifying the signature (GHSA-jcc8-g2q4-9fxq). Fleetgate's rule:
every body has a limit (FLEETGATE_MAX_REQUEST_BYTES, DATA_UPLOAD_MAX_MEMORY_SIZE), a body over it is refused
with 413 before it is buffered, in DRF's error shape under /api/ (Django alone answered a bare HTML 400) and
as a readable page in the UI, and a chunked body is read up to the limit + 1 bytes and no further.

Real parts: the Django test client for announced sizes, and real HTTP (http.client, raw sockets) against
pytest-django's live server for chunked bodies and for a 413 answered before the body is sent.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import RequestDataTooBig
from django.test import Client
from rest_framework.test import APIClient

from clusters.models import ClusterGroup
from fleet.access.models import APIToken
from fleet.core.api.exceptions import exception_handler
from fleet.sources.models import Repository
from policies.models import Policy

SIX_MB = 6 * 1024 * 1024


def padded(payload: dict[str, Any], size: int) -> bytes:
    """A JSON object of at least ``size`` bytes: padding (a field the API ignores), then the payload."""
    return json.dumps({"padding": "x" * size, **payload}).encode()


def assert_json_413(response: Any, limit: int) -> None:
    assert response.status_code == 413, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = json.loads(response.content)
    assert set(body) == {"detail"}
    assert str(limit) in body["detail"] and "larger than the limit" in body["detail"]


WRITES = [
    ("post", "/api/repositories/", Repository, {"name": "big", "url": "https://git.example.com/big.git"}),
    ("post", "/api/policies/", Policy, {"name": "big", "format": "conftest"}),
    ("post", "/api/groups/", ClusterGroup, {"name": "big", "selector": {"matchLabels": {"env": "x"}}}),
]


@pytest.mark.parametrize(("method", "url", "model", "payload"), WRITES, ids=[w[1] for w in WRITES])
def test_a_6_mb_json_body_gets_a_json_413_on_api_writes(
    method: str, url: str, model: Any, payload: dict[str, Any], admin_client: APIClient, settings: Any
) -> None:
    before = model.objects.count()
    response = getattr(admin_client, method)(url, data=padded(payload, SIX_MB),
                                             content_type="application/json")
    assert_json_413(response, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    assert model.objects.count() == before


def test_an_update_over_the_limit_is_refused_and_changes_nothing(admin_client: APIClient) -> None:
    group = ClusterGroup.objects.create(name="prod", description="kept",
                                        selector={"matchLabels": {"env": "prod"}})
    response = admin_client.patch(f"/api/groups/{group.pk}/", data=padded({"description": "new"}, SIX_MB),
                                  content_type="application/json")
    assert response.status_code == 413
    group.refresh_from_db()
    assert group.description == "kept"


def test_the_limit_is_the_setting_and_bodies_under_it_are_served(admin_client: APIClient,
                                                                 settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    payload = {"name": "small", "selector": {"matchLabels": {"env": "dev"}}}
    refused = admin_client.post("/api/groups/", data=padded(payload, 5000), content_type="application/json")
    assert_json_413(refused, 4096)
    accepted = admin_client.post("/api/groups/", data=padded(payload, 3000), content_type="application/json")
    assert accepted.status_code == 201, accepted.content
    assert ClusterGroup.objects.filter(name="small").count() == 1


def test_an_unauthenticated_oversized_body_is_refused_before_authentication(db: Any) -> None:
    response = APIClient().post("/api/groups/", data=padded({}, SIX_MB), content_type="application/json")
    assert response.status_code == 413


def test_a_ui_form_post_over_the_limit_gets_a_readable_413_page(db: Any, settings: Any) -> None:
    response = Client().post("/login/", data={"username": "ada", "password": "x" * SIX_MB})
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Request too large" in page and str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in page


@pytest.mark.parametrize(("label", "value"), [
    ("nesting bomb", b"[" * 100_000 + b"]" * 100_000),
    ("10,000-digit number", b"9" * 10_000),
])
def test_a_small_body_that_explodes_when_parsed_is_a_400(admin_client: APIClient, label: str,
                                                          value: bytes) -> None:
    body = b'{"name": "bomb", "selector": ' + value + b"}"
    response = admin_client.post("/api/groups/", data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"].startswith("JSON parse error")
    assert not ClusterGroup.objects.filter(name="bomb").exists()


def test_djangos_own_refusal_is_mapped_to_a_json_413(settings: Any) -> None:
    """A view that reads more than Django allows (RequestDataTooBig) gets 413 in DRF's shape, not 400."""
    response = exception_handler(RequestDataTooBig("Request body exceeded"), {})
    assert response is not None and response.status_code == 413
    assert response.data == {
        "detail": f"Request body is larger than the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
    }


# ---- over real HTTP


@pytest.fixture
def api(live_server: Any, transactional_db: Any, make_user: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    """The live server's address and a real admin API token."""
    _, key = APIToken.issue(make_user("root", role="admin"), description="oversized")
    parts = urlsplit(live_server.url)
    yield {"host": parts.hostname, "port": parts.port, "auth": f"Bearer {key}"}


def chunks(body: bytes, size: int = 997) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


def post_chunked(api: dict[str, Any], path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(api["host"], api["port"], timeout=30)
    try:
        # An iterable body without Content-Length: http.client sends Transfer-Encoding: chunked.
        try:
            conn.request("POST", path, body=chunks(body), headers={
                "Authorization": api["auth"], "Content-Type": "application/json",
            })
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and stopped reading: its answer is waiting (RFC 9112 9.5)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_a_chunked_api_write_is_read_whole(api: dict[str, Any]) -> None:
    """Fields after 40 KB of padding arrive: the body was read to its last chunk."""
    body = padded({"name": "chunked", "description": "sent in chunks",
                   "selector": {"matchLabels": {"env": "dev"}}}, 40 * 1024)
    status, _, content = post_chunked(api, "/api/groups/", body)
    assert status == 201, content
    group = ClusterGroup.objects.get(name="chunked")
    assert group.description == "sent in chunks" and group.selector == {"matchLabels": {"env": "dev"}}


def test_an_oversized_chunked_api_write_gets_a_json_413(api: dict[str, Any], settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = padded({"name": "huge", "selector": {"matchLabels": {"env": "dev"}}}, 80 * 1024)
    status, headers, content = post_chunked(api, "/api/groups/", body)
    assert status == 413, content[:300]
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(content) == {"detail": "Request body is larger than the limit of 65536 bytes."}
    assert not ClusterGroup.objects.filter(name="huge").exists()


def test_an_announced_oversized_body_is_refused_before_it_is_sent(api: dict[str, Any]) -> None:
    """Headers only, then wait: the 413 comes without the server reading (or the client sending) the body."""
    conn = http.client.HTTPConnection(api["host"], api["port"], timeout=30)
    try:
        conn.putrequest("POST", "/api/repositories/")
        conn.putheader("Authorization", api["auth"])
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(SIX_MB))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert "larger than the limit" in json.loads(response.read())["detail"]
    finally:
        conn.close()
    assert not Repository.objects.exists()


def raw_request(api: dict[str, Any], head: str, body: bytes) -> bytes:
    with socket.create_connection((api["host"], api["port"]), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


@pytest.mark.parametrize(("label", "framing"), [
    ("size not hex", b"zz\r\n{}\r\n0\r\n\r\n"),
    ("body shorter than its chunk", b"40\r\n{}"),
    ("chunk without CRLF", b"2\r\n{}XX0\r\n\r\n"),
])
def test_broken_chunk_framing_gets_a_400_with_a_message(api: dict[str, Any], label: str,
                                                        framing: bytes) -> None:
    head = (f"POST /api/groups/ HTTP/1.1\r\nHost: {api['host']}\r\nAuthorization: {api['auth']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    answer = raw_request(api, head, framing)
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 400 " in status_line, answer[:300]
    assert b"Malformed chunked body" in rest
    assert not ClusterGroup.objects.exists()


def test_content_length_and_chunked_together_are_refused(api: dict[str, Any]) -> None:
    """Request smuggling shape (RFC 9112 section 6.3): both framings at once is a 400, never a guess."""
    head = (f"POST /api/groups/ HTTP/1.1\r\nHost: {api['host']}\r\nAuthorization: {api['auth']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n"
            "Connection: close\r\n\r\n")
    answer = raw_request(api, head, b"2\r\n{}\r\n0\r\n\r\n")
    assert b" 400 " in answer.partition(b"\r\n")[0], answer[:300]
    assert not ClusterGroup.objects.exists()
