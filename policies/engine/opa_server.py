"""Build, start and stop a local OPA server (the reference Rego engine) for development and tests.

The binary comes from ``scripts/build-opa.sh`` (``go install`` of the pinned release into
``<repo>/.cache/bin/opa``). The server listens on 127.0.0.1 only, with ``--v0-compatible``: modules are
parsed as Rego v0 unless they ``import rego.v1``, which the OPA engine adds to v1 modules on their
package line (OPA's policy API has no per-module version switch; bundles do, but need a bundle server).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-opa.sh"


def opa_binary_path() -> Path:
    """Where scripts/build-opa.sh puts OPA: ``FLEETGATE_OPA_BIN`` if set, else
    ``$FLEETGATE_CACHE_DIR/opa/bin/opa`` when FLEETGATE_CACHE_DIR is set, else ``<repo>/.cache/bin/opa``."""
    if os.environ.get("FLEETGATE_OPA_BIN"):
        return Path(os.environ["FLEETGATE_OPA_BIN"])
    if os.environ.get("FLEETGATE_CACHE_DIR"):
        return Path(os.environ["FLEETGATE_CACHE_DIR"]) / "opa" / "bin" / "opa"
    return REPO_ROOT / ".cache" / "bin" / "opa"


def build_opa() -> Path:
    """Run the build script (a no-op when the pinned version is already built); return the binary path.

    With ``FLEETGATE_OPA_BIN`` set, that binary is used as is and nothing is built."""
    if os.environ.get("FLEETGATE_OPA_BIN"):
        return opa_binary_path()
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    lines = result.stdout.strip().splitlines()
    return Path(lines[-1]) if lines else opa_binary_path()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpaServer:
    """``opa run --server`` on 127.0.0.1:<port>. Use as a context manager or call start()/stop()."""

    def __init__(
        self, binary: Path | None = None, port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.binary = binary or opa_binary_path()
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0) -> OpaServer:
        if not self.binary.exists():
            raise FileNotFoundError(f"OPA binary not found at {self.binary}: run scripts/build-opa.sh")
        cmd = [
            str(self.binary),
            "run",
            "--server",
            "--v0-compatible",
            "--skip-version-check",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "error",
            "--shutdown-grace-period",
            "1",
        ]
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path:
            self._log = out = open(self.log_path, "ab")
        self._process = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"OPA exited with code {self._process.returncode} while starting")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"OPA did not become healthy on {self.url} within {timeout}s")

    def stop(self) -> None:
        proc, self._process = self._process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> OpaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
