"""The agent's HTTP client for Fleetgate's agent API (``/api/agent/v1/``), over urllib3.

Every call has a connect and a read timeout (a long poll's read timeout is its wait plus a margin), TLS is
verified (against ``--ca-file`` when given, else the system's trust store), and the answer is sorted into:

- :class:`Unreachable`: connection refused/reset, timeouts, TLS errors, 5xx and 429 — worth retrying later
  (:func:`retrying` does, with exponential backoff and jitter);
- :class:`Unauthorized` (401): the bearer token is not, or no longer, accepted;
- :class:`Conflict` (409): another attempt owns the work (stop, report nothing);
- :class:`ApiError`: any other refusal (400, 403, 404, 413), with the server's ``detail``.

The token is sent only in the ``Authorization`` header and never appears in an exception or a log line.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import urllib3

from clusters.agent.backoff import Backoff

log = logging.getLogger("fleetgate.agent")

API_PREFIX = "/api/agent/v1/"
T = TypeVar("T")


class AgentClientError(Exception):
    """Base of the client's errors. ``status`` is the HTTP status (None: no answer)."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(AgentClientError):
    """No usable answer: connection failure, timeout, TLS error, 5xx or 429. Retry later."""


class ApiError(AgentClientError):
    """Fleetgate refused the call (4xx other than 401/409)."""


class Unauthorized(ApiError):
    """401: the token is unknown, revoked or expired."""


class Conflict(ApiError):
    """409: the lease is lost or another attempt owns the work."""


class Stopped(Exception):
    """The agent is shutting down: a retry loop gave up waiting."""


def _detail(data: Any, fallback: str) -> str:
    if isinstance(data, dict) and data.get("detail"):
        return str(data["detail"])[:500]
    return fallback


class AgentClient:
    """Calls to one Fleetgate. Thread-safe (urllib3's pool), so the heartbeat thread shares it."""

    def __init__(
        self,
        server: str,
        *,
        ca_file: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        user_agent: str = "fleetgate-agent",
        allow_http: bool = False,
    ) -> None:
        parts = urlsplit(server)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"--server must be an https:// URL, not {server!r}")
        if parts.scheme == "http" and not allow_http:
            raise ValueError(
                "--server is plain http://: the agent's credential would travel unencrypted; use https:// "
                "(or --allow-http for a local test setup)"
            )
        self.server = server.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_agent = user_agent
        kwargs: dict[str, Any] = {"retries": False, "maxsize": 4}
        if parts.scheme == "https":
            kwargs["cert_reqs"] = ssl.CERT_REQUIRED
            if ca_file:
                kwargs["ca_certs"] = ca_file  # else the system's trust store
        self.pool = urllib3.PoolManager(**kwargs)

    def close(self) -> None:
        self.pool.clear()

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        url = f"{self.server}{API_PREFIX}{path}"
        return f"{url}?{urlencode(params)}" if params else url

    def request(
        self,
        method: str,
        path: str,
        token: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """One call; the parsed JSON answer of a 2xx, else one of the errors above."""
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": self.user_agent,
        }
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        timeout = urllib3.Timeout(connect=self.connect_timeout, read=read_timeout or self.read_timeout)
        what = f"{method} {API_PREFIX}{path}"
        try:
            response = self.pool.request(
                method,
                self.url(path, params),
                body=data,
                headers=headers,
                timeout=timeout,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:  # connection, timeout, TLS, protocol
            raise Unreachable(f"{what}: {type(exc).__name__}: {_short(exc)}") from None
        status = response.status
        try:
            answer = json.loads(response.data.decode("utf-8")) if response.data else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if 200 <= status < 300:
            if not isinstance(answer, dict):
                raise Unreachable(f"{what}: HTTP {status} with a body that is not a JSON object", status)
            return answer
        message = f"{what}: HTTP {status}: {_detail(answer, response.reason or '')}"
        if status >= 500 or status == 429:
            raise Unreachable(message, status)
        if status == 401:
            raise Unauthorized(message, status)
        if status == 409:
            raise Conflict(message, status)
        raise ApiError(message, status)

    # -- the agent API ----------------------------------------------------------------------------------
    def register(self, bootstrap_token: str, agent_version: str, kubernetes_version: str) -> dict[str, Any]:
        body = {"agent_version": agent_version, "kubernetes_version": kubernetes_version}
        return self.request("POST", "register", bootstrap_token, body)

    def rotate(self, token: str) -> dict[str, Any]:
        return self.request("POST", "rotate", token, {})

    def work(self, token: str, wait: int) -> dict[str, Any]:
        return self.request(
            "GET", "work", token, params={"wait": max(0, int(wait))}, read_timeout=wait + self.read_timeout
        )

    def heartbeat(self, token: str, work_id: int, attempt: int) -> dict[str, Any]:
        return self.request("POST", f"work/{int(work_id)}/heartbeat", token, {"attempt": attempt})

    def result(self, token: str, work_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"work/{int(work_id)}/result", token, body)

    def managed(self, token: str) -> dict[str, Any]:
        return self.request("GET", "managed", token)

    def report(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "report", token, body)


def _short(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:300]


def retrying(
    call: Callable[[], T],
    what: str,
    *,
    backoff: Backoff,
    stop: threading.Event,
    attempts: int = 0,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """Run ``call`` until it answers: after :class:`Unreachable` wait ``backoff.next()`` seconds (logged)
    and try again, ``attempts`` times in all (0: until ``stop`` is set). Other errors are raised at once;
    the backoff is reset after a success. Raises :class:`Stopped` when ``stop`` is set while waiting."""
    tried = 0
    while True:
        try:
            answer = call()
        except Unreachable as exc:
            tried += 1
            if attempts and tried >= attempts:
                raise
            wait = backoff.next()
            if on_retry is not None:
                on_retry(str(exc))
            log.warning(
                "Fleetgate is unreachable; retrying",
                extra={
                    "event": "fleetgate.unreachable",
                    "call": what,
                    "error": str(exc),
                    "retry_in": round(wait, 2),
                    "failures": backoff.failures,
                },
            )
            if stop.wait(wait):
                raise Stopped(what) from None
            continue
        backoff.reset()
        return answer
