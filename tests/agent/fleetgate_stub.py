"""A stand-in for Fleetgate's agent API (``/api/agent/v1/``), in memory, for testing the REAL agent process
before and beside the Django implementation: it answers exactly as the issue 18 contract says (and can be
told to fail: 503s, 409 on heartbeats, revoked tokens). What is tested with it is the agent; the server side
is tested against the real Fleetgate in test_agent_live_fleetgate.py."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clusters.agent.digest import work_digest


@dataclass
class Call:
    method: str
    path: str
    token: str
    body: Any


@dataclass
class StubState:
    bootstrap: set[str] = field(default_factory=set)
    agents: dict[str, bool] = field(default_factory=dict)  # token -> live
    queue: list[dict[str, Any]] = field(default_factory=list)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    managed: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    heartbeat_conflicts: set[int] = field(default_factory=set)
    fail_next: int = 0  # answer this many calls with 503
    rotate: bool = False
    poll_wait: int = 1
    report_interval: int = 60


class StubFleetgate:
    def __init__(self) -> None:
        self.state = StubState()
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"stub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StubFleetgate:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- test helpers -----------------------------------------------------------------------------------
    def issue_bootstrap(self) -> str:
        token = "fga_b_" + secrets.token_urlsafe(32)
        with self.lock:
            self.state.bootstrap.add(token)
        return token

    def add_work(
        self,
        objects: list[dict[str, Any]],
        *,
        inventory: list[dict[str, Any]] | None = None,
        prune: bool = True,
        digest: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        inventory = inventory or []
        with self.lock:
            work = {
                "id": 100 + len(self.state.queue) + len(self.state.results),
                "attempt": 1,
                "lease_seconds": 60,
                "rollout": 7,
                "mapping": "apps-web",
                "namespace": "apps",
                "objects": objects,
                "inventory": inventory,
                "prune": prune,
                "wave_timeout": 30.0,
                "health_timeout": 30.0,
                "restrict": None,
                "impersonate": "",
                "digest": digest or work_digest(objects, inventory, prune),
            }
            work.update(extra)
            self.state.queue.append(work)
        return work

    def paths(self) -> list[str]:
        with self.lock:
            return [f"{c.method} {c.path}" for c in self.state.calls]

    # -- the API ----------------------------------------------------------------------------------------
    def _credential(self) -> dict[str, Any]:
        token = "fga_a_" + secrets.token_urlsafe(32)
        self.state.agents[token] = True
        now = datetime.now(UTC)
        return {
            "cluster": "edge-1",
            "token": token,
            "expires_at": (now + timedelta(days=7)).isoformat(),
            "rotate_after": (now + timedelta(days=3)).isoformat(),
            "poll_wait": self.state.poll_wait,
            "report_interval": self.state.report_interval,
        }

    def handle(self, method: str, path: str, token: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self.lock:
            s = self.state
            s.calls.append(Call(method, path, token, body))
            if s.fail_next > 0:
                s.fail_next -= 1
                return 503, {"detail": "restarting"}
            if path == "register" and method == "POST":
                if token not in s.bootstrap:
                    return 401, {"detail": "unknown, used or expired bootstrap token"}
                s.bootstrap.discard(token)
                return 201, self._credential()
            if not s.agents.get(token):
                return 401, {"detail": "invalid agent credential"}
            if path == "rotate" and method == "POST":
                s.rotate = False
                answer = self._credential()
                s.agents[token] = False  # (the real server keeps it 60 s more)
                return 200, answer
            if path.startswith("work") and method == "GET":
                work, s.queue = s.queue[:], []
                return 200, {"work": work, "rotate": s.rotate}
            if path.startswith("work/") and path.endswith("/heartbeat"):
                work_id = int(path.split("/")[1])
                if work_id in s.heartbeat_conflicts:
                    return 409, {"detail": "the lease is lost"}
                return 200, {"lease_seconds": 60}
            if path.startswith("work/") and path.endswith("/result"):
                work_id = int(path.split("/")[1])
                if work_id in s.heartbeat_conflicts:
                    return 409, {"detail": "another attempt owns it"}
                s.results[work_id] = body
                return 200, {"recorded": "synced" if body.get("ok") else "failed"}
            if path == "managed" and method == "GET":
                return 200, {"mappings": s.managed}
            if path == "report" and method == "POST":
                s.reports.append(body)
                return 200, {"accepted": len(body.get("mappings") or [])}
            return 404, {"detail": "not found"}


class _Handler(BaseHTTPRequestHandler):
    stub: StubFleetgate
    protocol_version = "HTTP/1.1"

    def _serve(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        prefix = "/api/agent/v1/"
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if not path.startswith(prefix):
            code, answer = 404, {"detail": "not found"}
        else:
            body = json.loads(raw) if raw else None
            code, answer = self.stub.handle(method, path[len(prefix) :].rstrip("/"), token, body)
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        return
