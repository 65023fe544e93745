"""Fixtures for the sources tests: real git repositories built in tmp_path with the git CLI."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.sources.origin import (  # noqa: F401 - the app-level fixtures, registered for this folder
    GIT_ENV,
    Origin,
    _git_cache,
    fleet,
    git_http,
    make_mapping,
    make_origin,
    make_repository,
    origin,
)

# One helper for a git repository the tests commit to (tests/sources/origin.py); the git-level tests call it
# WorkRepo.
WorkRepo = Origin


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[[str], WorkRepo]:
    def make(name: str = "origin") -> WorkRepo:
        return WorkRepo(tmp_path / name)

    return make


class GitHttpServer:
    """git's smart HTTP protocol (the real git-http-backend as CGI) behind HTTP Basic auth, on 127.0.0.1."""

    def __init__(self, project_root: Path, username: str, token: str) -> None:
        self.project_root = project_root
        self.expected = "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()
        self.seen_auth: list[str] = []
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                auth = self.headers.get("Authorization", "")
                server_self.seen_auth.append(auth)
                if auth != server_self.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="fleetgate-test"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server_self.project_root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": "tester",
                    "REMOTE_ADDR": "127.0.0.1",
                    "GIT_CONFIG_GLOBAL": os.devnull,
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                     check=False).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.split(b"\r\n"):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _handle
            do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self) -> GitHttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def git_http_server(tmp_path: Path) -> Iterator[Callable[[str, str], GitHttpServer]]:
    servers: list[GitHttpServer] = []

    def start(username: str, token: str) -> GitHttpServer:
        server = GitHttpServer(tmp_path, username, token).__enter__()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.__exit__()

