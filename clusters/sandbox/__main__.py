"""``python -m clusters.sandbox serve --port P --clusters N [--state FILE] [--token T]``."""

from __future__ import annotations

import argparse
import os
import sys

from .server import SandboxServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clusters.sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve virtual clusters until interrupted")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument("--clusters", type=int, default=1, help="number of clusters sandbox-1..N (default 1)")
    serve.add_argument("--names", default="", help="comma-separated cluster names (instead of sandbox-1..N)")
    serve.add_argument("--prefix", default="sandbox-", help="name prefix for numbered clusters")
    serve.add_argument("--state", default=None, help="JSON file to load at start and save at exit")
    serve.add_argument(
        "--autosave", type=float, default=5.0, help="seconds between saves of --state (0: off)"
    )
    serve.add_argument("--token", default=None, help="bearer token every cluster requires")
    serve.add_argument(
        "--admin-token",
        default=os.environ.get("FLEETGATE_SANDBOX_ADMIN_TOKEN") or None,
        help="bearer token for the /_sandbox admin API (default: $FLEETGATE_SANDBOX_ADMIN_TOKEN; without "
        "one the admin API refuses every call)",
    )
    serve.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    serve.add_argument(
        "--tls-dir", default=None, help="keep (and reuse) the CA and certificate in this directory"
    )
    serve.add_argument("--root", action="store_true", help="also serve the first cluster at /")
    serve.add_argument("--rollout-delay", type=float, default=0.2, help="seconds until workloads are ready")
    serve.add_argument("--kubeconfig", default=None, help="write a kubeconfig with one context per cluster")
    return parser


def serve(args: argparse.Namespace) -> int:
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: the sandbox has no real security; bind to 127.0.0.1", file=sys.stderr)
    names = [n.strip() for n in args.names.split(",") if n.strip()] or [
        f"{args.prefix}{i}" for i in range(1, max(0, args.clusters) + 1)
    ]
    server = SandboxServer(
        args.host,
        args.port,
        state_file=args.state,
        tls=args.tls or bool(args.tls_dir),
        tls_dir=args.tls_dir,
        admin_token=args.admin_token,
        autosave_interval=(args.autosave or None) if args.state else None,
    )
    server.start()
    for i, name in enumerate(names):
        try:
            server.cluster(name)
        except KeyError:
            server.add_cluster(
                name, token=args.token, root=args.root and i == 0, rollout_delay=args.rollout_delay
            )
    if args.kubeconfig:
        server.write_kubeconfig(args.kubeconfig)
    print(f"sandbox serving {len(server.clusters())} cluster(s) on {server.url}", flush=True)
    if server.ca_file:
        print(f"ca-file {server.ca_file}", flush=True)
    for cluster in server.clusters():
        print(f"{cluster.name} {cluster.url}", flush=True)
    server.run_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
