"""``manage.py sandbox up`` runs sandbox clusters and registers them; ``sandbox register`` registers the
clusters of an already running sandbox from its kubeconfig.

    manage.py sandbox up --clusters 6 [--port 8081] [--state var/sandbox.json]
                         [--labels env=dev,staging,prod --labels region=eu,us] [--rollout-delay 0.2]
    python -m clusters.sandbox serve --clusters 3 --token T --kubeconfig /tmp/sandbox.kubeconfig
    manage.py sandbox register --kubeconfig /tmp/sandbox.kubeconfig [--labels ...]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clusters import services
from clusters.kubeconfig import parse as parse_kubeconfig
from clusters.sandbox import SandboxServer
from fleet.core.choices import ChangeContext
from fleet.core.context import acting


def admin_token() -> str:
    """The /_sandbox admin API token: FLEETGATE_SANDBOX_ADMIN_TOKEN (`make run` sets it), else a new one
    written to var/sandbox-admin.token with mode 0600 for the tools that drive the sandbox."""
    if settings.FLEETGATE_SANDBOX_ADMIN_TOKEN:
        return str(settings.FLEETGATE_SANDBOX_ADMIN_TOKEN)
    token = secrets.token_urlsafe(32)
    path = Path(settings.VAR_DIR) / "sandbox-admin.token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


class Command(BaseCommand):
    help = "Run sandbox Kubernetes clusters (in the foreground) and register them as Clusters."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        up = sub.add_parser("up", help="start N sandbox clusters in one server and register them")
        up.add_argument("--clusters", type=int, default=3, help="how many clusters (default 3)")
        up.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
        up.add_argument("--state", default=None, help="JSON file to load at start and save at exit")
        up.add_argument("--prefix", default="sandbox-", help="cluster name prefix (default sandbox-)")
        up.add_argument("--rollout-delay", type=float, default=0.2, help="seconds until workloads are ready")
        up.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
        up.add_argument(
            "--exit-after",
            type=float,
            default=None,
            help=argparse.SUPPRESS,  # for tests: stop by itself after this many seconds
        )
        self._label_args(up)
        reg = sub.add_parser("register", help="register the clusters of a running sandbox from a kubeconfig")
        reg.add_argument(
            "--kubeconfig", required=True, help="kubeconfig written by the sandbox (one context each)"
        )
        self._label_args(reg)

    @staticmethod
    def _label_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--labels",
            action="append",
            default=[],
            metavar="KEY=V1,V2",
            help="label values spread across the clusters (default env=dev,staging,prod and region=eu,us)",
        )

    def _spec(self, options: dict[str, Any]) -> dict[str, list[str]] | None:
        try:
            return services.parse_label_spec(options["labels"]) if options["labels"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    def handle(self, *args: Any, **options: Any) -> None:
        with acting(change_context=ChangeContext.COMMAND):
            if options["subcommand"] == "up":
                self.up(options)
            else:
                self.register(options)

    def _register(self, entries: list[services.SandboxEntry], spec: dict[str, list[str]] | None) -> None:
        labels = services.spread_labels(len(entries), spec)
        try:
            registered = services.register_sandbox_clusters(entries, labels, relabel=spec is not None)
        except Exception as exc:
            raise CommandError(f"could not register the clusters: {exc}") from None
        outcomes = {o.name: o for o in services.check_clusters([c for c, _ in registered])}
        for cluster, created in registered:
            label_text = ",".join(f"{k}={v}" for k, v in sorted(cluster.labels.items()))
            state = outcomes[cluster.name].status
            verb = "registered" if created else "updated"
            self.stdout.write(f"{verb} {cluster.name} {cluster.api_url} [{label_text}] {state}")

    def up(self, options: dict[str, Any]) -> None:
        count = options["clusters"]
        if count < 1:
            raise CommandError("--clusters must be at least 1")
        server = SandboxServer(
            "127.0.0.1",
            options["port"],
            state_file=options["state"],
            tls=options["tls"],
            admin_token=admin_token(),
            autosave_interval=5.0 if options["state"] else None,
        )
        try:
            server.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on 127.0.0.1:{options['port']}: {exc}") from None
        try:
            names = [f"{options['prefix']}{i}" for i in range(1, count + 1)]
            for name in names:
                try:
                    server.cluster(name)  # loaded from --state: keeps its token and objects
                except KeyError:
                    server.add_cluster(
                        name, token=secrets.token_urlsafe(24), rollout_delay=options["rollout_delay"]
                    )
            ca = server.ca_pem.decode() if server.ca_pem else ""
            entries = [
                services.SandboxEntry(c.name, c.url, c.token or "", ca)
                for c in (server.cluster(n) for n in names)
            ]
            self.stdout.write(f"sandbox serving {len(names)} cluster(s) on {server.url}")
            self._register(entries, self._spec(options))
            self.stdout.write("running; press Ctrl-C to stop", ending="\n")
            self.stdout.flush()
            done = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: done.set())
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            done.wait(options["exit_after"])
        finally:
            server.stop()
        self.stdout.write("sandbox stopped")

    def register(self, options: dict[str, Any]) -> None:
        try:
            with open(options["kubeconfig"]) as f:
                text = f.read()
            doc = yaml.safe_load(text) or {}
            names = [c.get("name", "") for c in doc.get("contexts") or [] if isinstance(c, dict)]
            entries = []
            for name in names:
                creds = parse_kubeconfig(text, name)
                entries.append(services.SandboxEntry(name, creds.server, creds.token, creds.ca_data))
        except Exception as exc:
            raise CommandError(f"cannot read the kubeconfig: {exc}") from None
        if not entries:
            raise CommandError("the kubeconfig has no contexts")
        self._register(entries, self._spec(options))
