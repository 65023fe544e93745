"""Start and stop a real etcd + kube-apiserver pair on 127.0.0.1 for Fleetgate's tests.

The binaries are built from Go modules by ``scripts/build-kube-apiserver.sh`` into
``.cache/kube-apiserver/<kubernetes version>/``. This module only uses the standard library and
``cryptography``: it makes a throwaway CA and serving certificate (so clients verify TLS against a real
CA bundle), a service-account key pair and a static token for a user in ``system:masters``, starts etcd
and the API server on free loopback ports with flags close to controller-runtime's envtest, and waits
until ``/readyz`` answers 200 to that token.

Python API::

    handle = start_kube_apiserver(workdir)      # -> KubeApiServerHandle
    handle.url, handle.token, handle.ca_data    # https://127.0.0.1:PORT, bearer token, CA bundle (PEM)
    handle.stop()                               # ends both processes; idempotent

Command line (for poking at it with kubectl)::

    python scripts/kube_apiserver.py [--workdir DIR]   # prints KUBECONFIG=..., runs until Ctrl-C

Like envtest there is no kube-controller-manager or scheduler: Deployments get no ReplicaSets or
status unless a test writes the status subresource, and a deleted namespace stays Terminating.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = REPO_ROOT / "tools" / "kube-apiserver"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-kube-apiserver.sh"

#: The service CIDR given to the API server (only allocated inside etcd, never routed).
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
#: The user that the static token authenticates; ``system:masters`` may do anything under RBAC.
ADMIN_USER = "fleetgate-admin"
ADMIN_GROUPS = ("system:masters",)


class KubeApiServerError(RuntimeError):
    """The binaries are missing or etcd/kube-apiserver failed to start."""


def pinned_kubernetes_version() -> str:
    """The k8s.io/kubernetes release pinned in tools/kube-apiserver/go.mod, e.g. ``v1.37.2``."""
    text = (MODULE_DIR / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise KubeApiServerError(f"no pinned k8s.io/kubernetes version in {MODULE_DIR / 'go.mod'}")
    return match.group(1)


def default_bin_dir() -> Path:
    """Where build-kube-apiserver.sh puts (or would put) the binaries of the pinned version.

    The same rule as the script: $FLEETGATE_KUBE_CACHE, else $FLEETGATE_CACHE_DIR/kube-apiserver,
    else <repo>/.cache/kube-apiserver; then the pinned Kubernetes version.
    """
    if os.environ.get("FLEETGATE_KUBE_CACHE"):
        root = Path(os.environ["FLEETGATE_KUBE_CACHE"])
    elif os.environ.get("FLEETGATE_CACHE_DIR"):
        root = Path(os.environ["FLEETGATE_CACHE_DIR"]) / "kube-apiserver"
    else:
        root = REPO_ROOT / ".cache" / "kube-apiserver"
    return root / pinned_kubernetes_version()


def binaries_present(bin_dir: Path | None = None) -> bool:
    """True when both kube-apiserver and etcd executables exist (no stamp check, no build)."""
    directory = bin_dir or default_bin_dir()
    return all(os.access(directory / name, os.X_OK) for name in ("kube-apiserver", "etcd"))


def ensure_built() -> Path:
    """Run build-kube-apiserver.sh (a no-op when the stamp matches) and return the binaries' directory."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise KubeApiServerError(
            f"{BUILD_SCRIPT} failed with exit code {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Certs:
    ca_pem: str
    ca_file: Path
    serving_cert: Path
    serving_key: Path
    sa_public: Path
    sa_private: Path


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def make_certificates(cert_dir: Path) -> _Certs:
    """Make a CA, a serving certificate for 127.0.0.1/localhost/kubernetes.default and an SA key pair."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetgate-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    first_service_ip = ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE)[1]  # the "kubernetes" Service
    serving = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes"),
                    x509.DNSName("kubernetes.default"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(first_service_ip),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem)
    no_password = serialization.NoEncryption()
    return _Certs(
        ca_pem=ca_pem.decode(),
        ca_file=_write(cert_dir / "ca.crt", ca_pem, 0o644),
        serving_cert=_write(cert_dir / "apiserver.crt", serving.public_bytes(pem), 0o644),
        serving_key=_write(
            cert_dir / "apiserver.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, no_password),
        ),
        sa_public=_write(
            cert_dir / "sa.pub",
            sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
            0o644,
        ),
        sa_private=_write(
            cert_dir / "sa.key",
            sa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, no_password),
        ),
    )


_PR_SET_PDEATHSIG = 1
_prctl = (
    getattr(ctypes.CDLL(None, use_errno=True), "prctl", None) if sys.platform.startswith("linux") else None
)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL the child when the thread that started it ends (PR_SET_PDEATHSIG).

    This is what leaves no etcd/kube-apiserver behind when the test process is killed outright.
    SIGKILL, not SIGTERM: a kube-apiserver whose etcd died at the same moment hangs in its graceful
    shutdown. Start the servers from a thread that outlives them (pytest's main thread does).
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _spawn(argv: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
    finally:
        log.close()


def _terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _log_tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


@dataclass
class KubeApiServerHandle:
    """A running etcd + kube-apiserver pair; call :meth:`stop` (idempotent) when done."""

    url: str
    token: str
    ca_data: str
    ca_file: Path
    kubeconfig: Path
    workdir: Path
    etcd_url: str
    version: str
    startup_seconds: float
    apiserver_log: Path
    etcd_log: Path
    _apiserver: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _etcd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Terminate the API server, then etcd; leaves no process behind."""
        _terminate(self._apiserver, grace=15)
        _terminate(self._etcd, grace=10)

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running servers, by name."""
        procs = {"kube-apiserver": self._apiserver, "etcd": self._etcd}
        return {name: proc.pid for name, proc in procs.items() if proc is not None}

    def is_running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._apiserver, self._etcd))

    def __enter__(self) -> KubeApiServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_http_ok(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    deadline: float,
    what: str,
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> None:
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KubeApiServerError(f"{what} exited with code {proc.returncode}:\n{_log_tail(log)}")
        request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own loopback URL
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}: {exc.read()[:500]!r}"
        except (OSError, ssl.SSLError) as exc:
            last_error = str(exc)
        time.sleep(0.2)
    raise KubeApiServerError(f"{what} not ready at {url} in time ({last_error}):\n{_log_tail(log)}")


def _kubeconfig(url: str, ca_pem: str, token: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fleetgate-test",
                    "cluster": {
                        "server": url,
                        "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode(),
                    },
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": token}}],
            "contexts": [
                {"name": "fleetgate-test", "context": {"cluster": "fleetgate-test", "user": ADMIN_USER}}
            ],
            "current-context": "fleetgate-test",
        },
        indent=2,
    )


def _start_once(
    workdir: Path, bin_dir: Path, certs: _Certs, token_file: Path, token: str, timeout: float
) -> KubeApiServerHandle:
    started = time.monotonic()
    deadline = started + timeout
    etcd_port, peer_port, secure_port = free_port(), free_port(), free_port()
    while len({etcd_port, peer_port, secure_port}) < 3:
        peer_port, secure_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd_log = workdir / "etcd.log"
    apiserver_log = workdir / "kube-apiserver.log"
    data_dir = workdir / "etcd-data"

    etcd = _spawn(
        [
            str(bin_dir / "etcd"),
            "--name=fleetgate-test",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=fleetgate-test={peer_url}",
            "--unsafe-no-fsync=true",  # throwaway test data: as envtest does, trade durability for speed
            "--log-level=warn",
        ],
        etcd_log,
    )
    apiserver: subprocess.Popen[bytes] | None = None
    try:
        _wait_http_ok(f"{etcd_url}/health", etcd, etcd_log, deadline, "etcd")
        url = f"https://127.0.0.1:{secure_port}"
        apiserver = _spawn(
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--tls-cert-file={certs.serving_cert}",
                f"--tls-private-key-file={certs.serving_key}",
                f"--client-ca-file={certs.ca_file}",
                f"--secure-port={secure_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                f"--token-auth-file={token_file}",
                f"--service-account-issuer={url}",
                f"--service-account-key-file={certs.sa_public}",
                f"--service-account-signing-key-file={certs.sa_private}",
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
            apiserver_log,
        )
        context = ssl.create_default_context(cadata=certs.ca_pem)
        _wait_http_ok(
            f"{url}/readyz",
            apiserver,
            apiserver_log,
            deadline,
            "kube-apiserver",
            headers={"Authorization": f"Bearer {token}"},
            context=context,
        )
    except BaseException:
        _terminate(apiserver, grace=5)
        _terminate(etcd, grace=5)
        raise

    kubeconfig = workdir / "kubeconfig"
    _write(kubeconfig, _kubeconfig(url, certs.ca_pem, token).encode())
    return KubeApiServerHandle(
        url=url,
        token=token,
        ca_data=certs.ca_pem,
        ca_file=certs.ca_file,
        kubeconfig=kubeconfig,
        workdir=workdir,
        etcd_url=etcd_url,
        version=bin_dir.name,
        startup_seconds=time.monotonic() - started,
        apiserver_log=apiserver_log,
        etcd_log=etcd_log,
        _apiserver=apiserver,
        _etcd=etcd,
    )


def start_kube_apiserver(
    workdir: str | os.PathLike[str],
    *,
    bin_dir: str | os.PathLike[str] | None = None,
    build: bool = True,
    timeout: float = 180.0,
    attempts: int = 3,
) -> KubeApiServerHandle:
    """Start etcd and kube-apiserver on free 127.0.0.1 ports and wait until /readyz is 200.

    ``workdir`` holds etcd's data, the certificates, the token file, the logs and a kubeconfig.
    ``bin_dir`` defaults to the build cache; with ``build`` (default) the build script runs first
    (instant when already built). A start that loses a port race is retried up to ``attempts`` times.
    Raises :class:`KubeApiServerError` with the log's tail when a process fails or is not ready in
    ``timeout`` seconds. The processes are also stopped when this Python process exits.
    """
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if bin_dir is not None:
        binaries = Path(bin_dir)
    elif build:
        binaries = ensure_built()
    else:
        binaries = default_bin_dir()
    if not binaries_present(binaries):
        raise KubeApiServerError(
            f"kube-apiserver/etcd not found in {binaries}; run scripts/build-kube-apiserver.sh"
        )

    certs = make_certificates(work / "pki")
    token = secrets.token_urlsafe(32)
    groups = ",".join(ADMIN_GROUPS)
    token_file = _write(work / "tokens.csv", f'{token},{ADMIN_USER},{ADMIN_USER},"{groups}"\n'.encode())

    last: KubeApiServerError | None = None
    for attempt in range(1, attempts + 1):
        run_dir = work / f"run-{attempt}"
        run_dir.mkdir(exist_ok=True)
        try:
            handle = _start_once(run_dir, binaries, certs, token_file, token, timeout)
        except KubeApiServerError as exc:
            last = exc
            if "address already in use" not in str(exc):
                raise
            continue
        atexit.register(handle.stop)
        return handle
    assert last is not None  # noqa: S101 - the loop ran at least once
    raise last


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="directory for data, certs and logs (default: a temp dir)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fleetgate-kubeapi-"))
    handle = start_kube_apiserver(workdir)
    print(f"kube-apiserver {handle.version} ready at {handle.url} in {handle.startup_seconds:.1f}s")
    print(f"KUBECONFIG={handle.kubeconfig}")
    print("Ctrl-C stops etcd and kube-apiserver.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while handle.is_running():
            time.sleep(1)
        print("a server process exited; see the logs in", handle.workdir, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        handle.stop()


if __name__ == "__main__":
    sys.exit(main())
