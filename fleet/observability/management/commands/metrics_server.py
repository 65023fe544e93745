"""Serve ``/metrics`` on a port of its own (no token: keep the port on a network only Prometheus reaches)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from fleet.observability.views import exposition


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        try:
            body, content_type = exposition(self.headers.get("Accept"))
        finally:
            connections.close_all()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Command(BaseCommand):
    help = (
        "Serve the metrics of every Fleetgate process on a separate port (GET /metrics, no authentication)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--bind", default="127.0.0.1:9100", help="address:port (default 127.0.0.1:9100)")

    def handle(self, *args: Any, **options: Any) -> None:
        host, _, port = str(options["bind"]).rpartition(":")
        if not port.isdigit():
            raise CommandError(f"--bind must be address:port, not {options['bind']!r}")
        server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), _Handler)  # noqa: S104
        self.stdout.write(f"metrics on http://{options['bind']}/metrics", ending="\n")
        self.stdout.flush()
        try:
            server.serve_forever()
        finally:
            server.server_close()
