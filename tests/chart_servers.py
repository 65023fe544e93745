"""Real chart servers on 127.0.0.1 for the Helm chart tests, and charts packaged by the tests.

* ``LocalCA``: a certificate authority made with ``cryptography`` and a server certificate for 127.0.0.1 and
  localhost (the servers speak HTTPS; the fetcher trusts the CA through a chart repository's ``ca_bundle``).
* ``ChartRepoServer``: an HTTPS server in a thread serving a directory (``index.yaml`` + ``.tgz``, as
  ``helm repo index`` writes them), optionally behind HTTP basic auth and with ETags (304 Not Modified); it
  counts the requests per path, so a test sees what was downloaded.  ``stop()`` closes the port: the same
  URL is then unreachable (offline).
* ``OciRegistry``: CNCF Distribution (``registry``, built from Go modules by scripts/build-registry.sh,
  cached in $FLEETGATE_CACHE_DIR) started with a config file on 127.0.0.1 over TLS, optionally with htpasswd
  authentication.  Charts are pushed with oras in ``helm push``'s layout.
* ``make_chart`` / ``package``: a chart directory written by the test and packaged with helm-python-sdk.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from base64 import b64decode
from collections import Counter
from pathlib import Path
from typing import Any

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalCA:
    """A CA and one server certificate (127.0.0.1, localhost), written as PEM files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetgate test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_text(self.ca_pem)
        self.cert_file = directory / "server.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file = directory / "server.key"
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


# ---------------------------------------------------------------------------------------- charts


def make_chart(
    directory: Path,
    name: str,
    version: str,
    *,
    templates: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    dependencies: list[dict[str, Any]] | None = None,
) -> Path:
    """A chart directory ``directory/name`` with a ConfigMap naming the release (unless ``templates``)."""
    chart = directory / name
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"apiVersion": "v2", "name": name, "version": version}
    if dependencies:
        meta["dependencies"] = dependencies
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (chart / "values.yaml").write_text(yaml.safe_dump(values or {"greeting": "hello"}))
    if templates is None:
        templates = {
            "cm.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-" + name + "\n"
                "  namespace: {{ .Release.Namespace }}\n  labels: {chart: " + name + "-" + version + "}\n"
                "data:\n  release: {{ .Release.Name }}\n  namespace: {{ .Release.Namespace }}\n"
                "  greeting: {{ .Values.greeting | quote }}\n"
                "  cluster: {{ .Values.global.fleetgate.cluster.name }}\n"
            )
        }
    for fname, text in templates.items():
        (chart / "templates" / fname).write_text(text)
    return chart


def package(chart_dir: Path, destination: Path) -> Path:
    import helm_python

    destination.mkdir(parents=True, exist_ok=True)
    return Path(helm_python.package(str(chart_dir), destination=str(destination)))


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------- index repository


class ChartRepoServer:
    """An HTTPS chart repository (``index.yaml`` and archives) in a thread on 127.0.0.1."""

    def __init__(
        self, root: Path, ca: LocalCA, *, auth: tuple[str, str] | None = None, etags: bool = False
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.etags = etags
        self.hits: Counter[str] = Counter()
        self.not_modified: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.hits[path] += 1
                header = self.headers.get("Authorization", "")
                server.auth_headers.append(header)
                if server.auth is not None:
                    ok = False
                    if header.startswith("Basic "):
                        user, _, password = b64decode(header[6:]).decode().partition(":")
                        ok = (user, password) == server.auth
                    if not ok:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                target = (server.root / path.lstrip("/")).resolve()
                if not str(target).startswith(str(server.root.resolve())) or not target.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = target.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                if server.etags and self.headers.get("If-None-Match") == etag:
                    server.not_modified[path] += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                if server.etags:
                    self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(ca.cert_file), str(ca.key_file))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/charts"

    def publish(self, chart_dir: Path) -> Path:
        """Package ``chart_dir`` into the repository and rewrite index.yaml (``helm repo index``)."""
        import helm_python

        archive = package(chart_dir, self.root / "charts")
        helm_python.repo_index_generate(self.root / "charts")
        return archive

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


# ---------------------------------------------------------------------------------------- OCI registry


def build_registry() -> str:
    """The registry binary's path (built when missing: minutes, once per machine)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "build-registry.sh")], check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1]


def bcrypt_hash(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # glibc's libxcrypt does bcrypt, which is what htpasswd files for the registry need

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324 - bcrypt, for a test


class OciRegistry:
    """CNCF Distribution on 127.0.0.1 over TLS (the test CA), with htpasswd auth when ``auth`` is given."""

    def __init__(self, workdir: Path, ca: LocalCA, *, auth: tuple[str, str] | None = None) -> None:
        self.workdir = workdir
        self.ca = ca
        self.auth = auth
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
            "http": {
                "addr": f"127.0.0.1:{self.port}",
                "secret": "fleetgate-test",
                "tls": {"certificate": str(ca.cert_file), "key": str(ca.key_file)},
                "debug": {"addr": ""},
            },
        }
        if auth is not None:
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text(f"{auth[0]}:{bcrypt_hash(auth[1])}\n")
            config["auth"] = {"htpasswd": {"realm": "fleetgate-test", "path": str(htpasswd)}}
        (workdir / "config.yml").write_text(yaml.safe_dump(config))
        binary = build_registry()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env["OTEL_TRACES_EXPORTER"] = "none"
        self.log = (workdir / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "serve", str(workdir / "config.yml")], stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the registry exited: {(workdir / 'registry.log').read_text()[-2000:]}")
            try:
                requests.get(f"https://127.0.0.1:{self.port}/v2/", verify=str(ca.ca_file), timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise RuntimeError("the registry did not start in 30 s")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def push(self, archive: Path, repository: str) -> None:
        """Push a chart archive as ``helm push`` does (Helm's config and chart layer media types, the
        chart's version as the tag), with oras.  (helm-python-sdk's push ignores insecure_skip_tls_verify
        and Go's trust store cannot be given the test CA in-process.)"""
        import tarfile

        import oras.provider

        with tarfile.open(archive) as tar:
            member = next(
                m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml")
            )
            f = tar.extractfile(member)
            meta = yaml.safe_load(f.read() if f else b"")
        config = archive.parent / f"{archive.stem}.config.json"
        config.write_text(json.dumps({"name": meta["name"], "version": meta["version"], "apiVersion": "v2"}))
        registry = oras.provider.Registry(
            hostname=self.host, tls_verify=str(self.ca.ca_file), auth_backend="basic"
        )
        registry.auth.load_configs = lambda *a, **k: None
        if self.auth:
            registry.auth.set_basic_auth(*self.auth)
        cwd = os.getcwd()
        os.chdir(archive.parent)  # oras names the layer by its path relative to here
        try:
            registry.push(
                target=f"{self.host}/{repository}/{meta['name']}:{meta['version'].replace('+', '_')}",
                files=[f"{archive.name}:{HELM_LAYER}"],
                manifest_config=f"{config.name}:{HELM_CONFIG}",
                quiet=True,
            )
        finally:
            os.chdir(cwd)

    def manifest_digest(self, repository: str, tag: str) -> str:
        answer = requests.head(
            f"https://{self.host}/v2/{repository}/manifests/{tag}",
            verify=str(self.ca.ca_file),
            auth=self.auth,
            timeout=10,
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        answer.raise_for_status()
        return str(answer.headers["Docker-Content-Digest"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
