#!/usr/bin/env python3
"""Build (if needed) and run a local OPA server for Fleetgate on 127.0.0.1 until interrupted.

    .venv/bin/python scripts/opa_server.py [--port 8181]

Prints ``FLEETGATE_OPA_URL=...`` so the app can be pointed at it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.engine.opa_server import OpaServer, build_opa


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8181)
    args = parser.parse_args()
    server = OpaServer(build_opa(), port=args.port).start()
    print(f"FLEETGATE_OPA_URL={server.url}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    raise SystemExit(main())
