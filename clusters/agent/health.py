"""The agent's probe server: ``GET /healthz`` (alive: the main loop ran recently) and ``GET /readyz``
(registered, and the last poll of Fleetgate answered). Plain HTTP on ``--health-port``, in a daemon thread.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Status:
    """What the probes answer from; the agent's loop updates it."""

    def __init__(self, stall_after: float = 600.0) -> None:
        self._lock = threading.Lock()
        self.registered = False
        self.last_poll_ok = False
        self.last_error = ""
        self.cluster = ""
        self.beat = time.monotonic()
        self.stall_after = stall_after  # the loop did not turn for this long: not alive

    def update(self, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)
            self.beat = time.monotonic()

    def alive(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            idle = time.monotonic() - self.beat
        return idle < self.stall_after, {"loop_idle_seconds": round(idle, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            ok = self.registered and self.last_poll_ok
            body = {"registered": self.registered, "last_poll_ok": self.last_poll_ok, "cluster": self.cluster}
            if self.last_error:
                body["error"] = self.last_error
        return ok, body


class _Handler(BaseHTTPRequestHandler):
    status: Status

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            ok, body = self.status.alive()
        elif path == "/readyz":
            ok, body = self.status.ready()
        else:
            self._send(404, {"detail": "not found"})
            return
        self._send(200 if ok else 503, {"status": "ok" if ok else "unavailable", **body})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


class HealthServer:
    def __init__(self, status: Status, host: str = "0.0.0.0", port: int = 8080) -> None:  # noqa: S104
        handler = type("Handler", (_Handler,), {"status": status})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
