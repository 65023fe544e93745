"""Notification test fixtures on real parts: an HTTP receiver on 127.0.0.1 (a threaded http.server) that
verifies the HMAC signature as docs/operations.md tells a receiver to, and can answer errors before it
answers 200; a real SMTP server (aiosmtpd) on 127.0.0.1; the rollout fixtures (real git, sandbox clusters
over HTTP, the in-process task queue) with the notification tasks added to the queue's runners."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings

from fleet.notifications import services as notify_services
from fleet.notifications import tasks as notify_tasks
from tests.rollouts import conftest as rollouts_conftest
from tests.rollouts.conftest import (  # noqa: F401  (fixtures used by the tests here)
    _fast_retries,
    git_repo,
    make_fleet,
    sandbox_server,
    tasks,
)


@pytest.fixture(autouse=True)
def _notification_runners(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """The queue runs the notification tasks too; retries come quickly; links name a test host."""
    monkeypatch.setitem(rollouts_conftest.RUNNERS, notify_tasks.FAN_OUT, notify_services.fan_out)
    monkeypatch.setitem(rollouts_conftest.RUNNERS, notify_tasks.DELIVER, notify_services.deliver)
    monkeypatch.setitem(rollouts_conftest.RUNNERS, notify_tasks.SCAN, notify_services.scan)
    settings.FLEETGATE_NOTIFY_RETRY_BASE = 0.01
    settings.FLEETGATE_NOTIFY_TIMEOUT = 3
    settings.FLEETGATE_NOTIFY_BASE_URL = "https://fleetgate.example.test"


# A script entry that makes the receiver answer only after the sender's timeout has passed.
STALL = 0
STALL_SECONDS = 3


def documented_verify() -> Any:
    """The receiver's check is the recipe of docs/operations.md ("Verifying the signature"), run as written,
    so that the documentation cannot drift from what Fleetgate sends."""
    text = (Path(settings.BASE_DIR) / "docs" / "operations.md").read_text()
    start = text.index("```python", text.index("### Verifying the signature")) + len("```python")
    namespace: dict[str, Any] = {}
    exec(compile(text[start : text.index("```", start)], "docs/operations.md", "exec"), namespace)  # noqa: S102
    return namespace["verify"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next status of ``script`` (then 200), after checking the signature when a
    ``secret`` is set (401 when it does not verify)."""

    url: str = ""
    secret: str = ""
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    tolerance: int = 300

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        return bool(documented_verify()(self.secret, headers, body, self.tolerance))

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        ok = self.verify(headers, body) if self.secret else None
        self.received.append(Received(path, headers, body, ok))
        if ok is False:
            return 401
        code = self.script.pop(0) if self.script else 200
        if code == STALL:
            time.sleep(STALL_SECONDS)  # longer than the test's delivery timeout: the sender gives up first
            return 200
        return code


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code = state.handle(self.path, dict(self.headers.items()), body)
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/fleetgate"
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server(settings: Any) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1; Django's SMTP backend is pointed at it."""
    box = Mailbox("127.0.0.1", _free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = box.host, box.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "fleetgate@example.test"
    yield box
    controller.stop()
