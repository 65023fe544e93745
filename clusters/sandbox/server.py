"""SandboxServer: one HTTP(S) server on 127.0.0.1 hosting many virtual Kubernetes clusters."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from .controller import MANAGER, Timer, workload_status
from .faults import Faults
from .handler import Handler
from .objects import clone
from .resources import KEY_BY_KIND, ResourceType
from .store import ClusterState

log = logging.getLogger(__name__)
PREFIX = "/clusters/"


@dataclass
class ClusterSettings:
    """Per-cluster behaviour, changeable at runtime."""

    rollout_delay: float = 0.2  # seconds until the controller marks workloads ready (0: at once)
    fail_rollouts: bool = False  # every Deployment/StatefulSet/DaemonSet/Job fails (ProgressDeadlineExceeded)
    never_ready: bool = False  # workloads never become ready
    nodes: int = 1  # DaemonSets schedule one pod per node
    bookmark_interval: float = 30.0  # seconds between BOOKMARK events on watches that allow them
    history_size: int = 128  # watch events kept for resuming from a resourceVersion (older: 410 Expired)

    def update(self, **values: Any) -> None:
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in values.items():
            if key not in names:
                raise ValueError(f"unknown setting {key!r}")
            current = getattr(self, key)
            if isinstance(current, bool):
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError(f"{key} must be true or false")
                    value = value.lower() in ("true", "1")
                setattr(self, key, bool(value))
            else:
                setattr(self, key, type(current)(value))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(
        self,
        addr: tuple[str, int],
        sandbox: SandboxServer,
        fixed_cluster: SandboxCluster | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(addr, Handler)
        self.sandbox = sandbox
        self.fixed_cluster = fixed_cluster
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conn_lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Cut every open (keep-alive or watch) connection, like a stopped apiserver."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("sandbox connection error from %s", client_address, exc_info=True)


class SandboxCluster:
    """One virtual cluster: its state, token, settings and faults."""

    def __init__(
        self,
        server: SandboxServer,
        name: str,
        token: str | None,
        settings: ClusterSettings,
        root: bool = False,
    ) -> None:
        self.server = server
        self.name = name
        self.token = token
        self.settings = settings
        self.root = root
        self.faults = Faults()
        self.state = ClusterState(name, settings.history_size, on_workload=self._on_workload)
        self.state.settings = settings  # history_size changes take effect at the next event
        self.own_server: _HTTPServer | None = None
        self.own_port: int | None = None
        self._own_thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The server URL a kubeconfig or ``kubernetes.client.Configuration.host`` should use."""
        if self.own_port is not None:
            return f"{self.server.scheme}://{self.server.host}:{self.own_port}"
        if self.root:
            return self.server.url
        return f"{self.server.url}{PREFIX}{self.name}"

    # -- controller --------------------------------------------------------------------------------
    def _on_workload(self, state: ClusterState, rt: ResourceType, ns: str, name: str) -> None:
        delay = self.settings.rollout_delay
        if delay <= 0:
            self.reconcile(rt, ns, name)
        else:
            self.server.timer.call_later(delay, lambda: self.reconcile(rt, ns, name))

    def reconcile(self, rt: ResourceType, ns: str, name: str) -> None:
        with self.state.lock:
            obj = self.state.peek(rt, ns, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return
            status = workload_status(
                obj, self.settings.fail_rollouts, self.settings.never_ready, self.settings.nodes
            )
            self.state.write_status(rt, ns, name, status, MANAGER)

    # -- direct state access (test setup and assertions; connector code must use HTTP) ----------------
    def _type(self, api_version: str, kind: str) -> ResourceType:
        rt = KEY_BY_KIND.get((api_version, kind))
        if rt is None:
            group, _, version = api_version.rpartition("/")
            rt = next(
                (
                    t
                    for t in self.state.custom_types.values()
                    if t.group == group and t.kind == kind and version in t.served_versions
                ),
                None,
            )
        if rt is None:
            raise KeyError(f"unknown kind {kind} in {api_version}")
        return rt

    def get_object(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """A copy of a stored object, or None."""
        rt = self._type(api_version, kind)
        with self.state.lock:
            obj = self.state.peek(rt, namespace or "", name)
            return clone(obj) if obj is not None else None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        rt = self._type(api_version, kind)
        return clone(self.state.list_collection(rt, rt.version, namespace, None, None, full=True)["items"])

    def apply_object(
        self, obj: dict[str, Any], manager: str = "sandbox-test", force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply an object as ``manager`` without HTTP (e.g. to simulate drift in a test)."""
        rt = self._type(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata") or {}
        version = obj["apiVersion"].rpartition("/")[2]
        _, out = self.state.apply(
            rt,
            version,
            meta.get("namespace", "") if rt.namespaced else "",
            meta["name"],
            clone(obj),
            manager,
            force=force,
        )
        return clone(out)

    def delete_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        rt = self._type(api_version, kind)
        self.state.delete(rt, rt.version, namespace or "", name, {})

    @property
    def resource_version(self) -> int:
        return self.state.rv

    def object_count(self) -> int:
        return self.state.count()

    # -- own listener (connection refused while down) ---------------------------------------------------
    def _listen(self, port: int) -> None:
        self.own_server = _HTTPServer((self.server.host, port), self.server, self, self.server.ssl_context)
        self.own_port = self.own_server.server_address[1]
        self._own_thread = threading.Thread(
            target=self.own_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.name}",
            daemon=True,
        )
        self._own_thread.start()

    def _close_listener(self) -> None:
        if self.own_server is not None:
            self.own_server.shutdown()
            self.own_server.server_close()
            self.own_server.close_connections()
            self.own_server = None

    def _down_changed(self, down: bool) -> None:
        if self.own_port is None:
            return
        if down:
            self._close_listener()
        elif self.own_server is None:
            self._listen(self.own_port)


class SandboxServer:
    """Hosts many virtual clusters on one port: ``/clusters/<name>/...`` and optionally one at ``/``.

    Use as a context manager or call ``start()`` / ``stop()``. With ``state_file`` the clusters and their
    objects are loaded at start (when the file exists) and saved at stop (and every ``autosave_interval``
    seconds when set). With ``tls=True`` a CA and server certificate are generated; ``ca_file`` / ``ca_pem``
    give the CA to verify with.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: str | None = None,
        tls: bool = False,
        admin_token: str | None = None,
        autosave_interval: float | None = None,
        tls_dir: str | None = None,
    ) -> None:
        self.host = host
        self.tls_dir = tls_dir
        self.port = port
        self.state_file = state_file
        self.tls = tls
        self.admin_token = admin_token
        self.autosave_interval = autosave_interval
        self.timer = Timer()
        self._clusters: dict[str, SandboxCluster] = {}
        self._root: SandboxCluster | None = None
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.ca_file: str | None = None
        self.ca_pem: bytes | None = None
        self._saved_marker: tuple[int, int] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        if self._httpd is not None:
            return self
        if self.tls:
            from .tls import load_or_generate

            directory = self.tls_dir
            if directory is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="fleetgate-sandbox-tls-")
                directory = self._tmpdir.name
            files = load_or_generate(directory, (self.host, "localhost"))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(files.cert_file, files.key_file)
            self.ssl_context, self.ca_file, self.ca_pem = ctx, files.ca_file, files.ca_pem
        self._httpd = _HTTPServer((self.host, self.port), self, None, self.ssl_context)
        self.port = self._httpd.server_address[1]
        self.timer.start()
        if self.state_file and os.path.exists(self.state_file):
            self.load(self.state_file)  # before serving: no request sees a half-loaded sandbox
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-http", daemon=True
        )
        self._thread.start()
        if self.autosave_interval and self.state_file:
            self.timer.call_later(self.autosave_interval, self._autosave)
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        if self.state_file:
            self.save()
        for c in list(self._clusters.values()):
            c.state.close_watchers()
            c._close_listener()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._httpd = None
        self.timer.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set or, without ``stop`` and in the main thread, until SIGINT/SIGTERM; then
        stop the server. For a management command: start, add clusters, print URLs, ``run_forever()``."""
        import signal

        done = stop or threading.Event()
        previous: dict[Any, Any] = {}
        if stop is None and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: done.set())
        try:
            while not done.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clusters -------------------------------------------------------------------------------------
    def add_cluster(
        self,
        name: str,
        token: str | None = None,
        *,
        root: bool = False,
        own_port: bool | int = False,
        settings: ClusterSettings | None = None,
        **setting_values: Any,
    ) -> SandboxCluster:
        """Create a virtual cluster.

        ``root=True`` also serves it at ``/``; ``own_port=True`` (or a port number) gives it a dedicated
        listener so that ``faults.down`` refuses connections. Extra keyword arguments
        are ClusterSettings fields (``rollout_delay=0``...)."""
        if not name or "/" in name:
            raise ValueError(f"invalid cluster name {name!r}")
        cfg = settings or ClusterSettings()
        cfg.update(**setting_values)
        with self._lock:
            if name in self._clusters:
                raise ValueError(f"cluster {name!r} already exists")
            cluster = SandboxCluster(self, name, token, cfg, root)
            if root:
                if self._root is not None:
                    raise ValueError(f"cluster {self._root.name!r} is already served at /")
                self._root = cluster
            self._clusters[name] = cluster
        cluster.faults.on_down_change = cluster._down_changed
        if own_port is not False:
            cluster._listen(0 if own_port is True else int(own_port))
        return cluster

    def remove_cluster(self, name: str) -> None:
        with self._lock:
            cluster = self._clusters.pop(name)
            if self._root is cluster:
                self._root = None
        cluster.state.close_watchers()
        cluster._close_listener()

    def cluster(self, name: str) -> SandboxCluster:
        return self._clusters[name]

    def clusters(self) -> list[SandboxCluster]:
        return list(self._clusters.values())

    def url_for(self, name: str) -> str:
        return self._clusters[name].url

    def resolve(self, path: str, fixed: SandboxCluster | None = None) -> tuple[SandboxCluster | None, str]:
        """The cluster a request path addresses and the rest of the path (O(1))."""
        if fixed is not None:
            return fixed, path
        if path.startswith(PREFIX):
            name, _, rest = path[len(PREFIX) :].partition("/")
            return self._clusters.get(name), "/" + rest
        return self._root, path

    # -- kubeconfig -----------------------------------------------------------------------------------
    def kubeconfig(self, names: list[str] | None = None) -> dict[str, Any]:
        """A kubeconfig (as a dict; JSON is valid YAML) with one context per cluster."""
        chosen = [self._clusters[n] for n in names] if names else self.clusters()
        clusters, users, contexts = [], [], []
        for c in chosen:
            entry: dict[str, Any] = {"server": c.url}
            if self.ca_pem:
                entry["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
            clusters.append({"name": c.name, "cluster": entry})
            users.append({"name": c.name, "user": {"token": c.token} if c.token else {}})
            contexts.append(
                {"name": c.name, "context": {"cluster": c.name, "user": c.name, "namespace": "default"}}
            )
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "users": users,
            "contexts": contexts,
            "current-context": chosen[0].name if chosen else "",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str, names: list[str] | None = None) -> str:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.kubeconfig(names), f, indent=2)
        return path

    # -- persistence ----------------------------------------------------------------------------------
    def _marker(self) -> tuple[int, int]:
        return (len(self._clusters), sum(c.state.rv for c in self.clusters()))

    def save(self, path: str | None = None) -> None:
        """Write every cluster (token, settings, objects) to ``path`` or the state file, atomically."""
        target = path or self.state_file
        if not target:
            raise ValueError("no state file")
        marker = self._marker()
        data = {
            "version": 1,
            "clusters": [
                {
                    "name": c.name,
                    "token": c.token,
                    "root": c.root,
                    "ownPort": c.own_port,
                    "settings": dataclasses.asdict(c.settings),
                    "state": c.state.dump(),
                }
                for c in self.clusters()
            ],
        }
        tmp = f"{target}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, target)
        if path is None:
            self._saved_marker = marker

    def load(self, path: str) -> None:
        """Add the clusters saved in ``path`` (existing clusters of the same name get the saved objects)."""
        with open(path) as f:
            data = json.load(f)
        for entry in data.get("clusters", []):
            name = entry["name"]
            cluster = self._clusters.get(name)
            if cluster is None:
                settings = ClusterSettings()
                with contextlib.suppress(ValueError, TypeError):
                    settings.update(**entry.get("settings", {}))
                own: bool | int = False
                if entry.get("ownPort"):
                    own = int(entry["ownPort"])
                try:
                    cluster = self.add_cluster(
                        name,
                        entry.get("token"),
                        root=bool(entry.get("root")),
                        own_port=own,
                        settings=settings,
                    )
                except OSError:
                    cluster = self.add_cluster(
                        name,
                        entry.get("token"),
                        root=bool(entry.get("root")),
                        own_port=True,
                        settings=settings,
                    )
            cluster.state.load(entry.get("state", {}))
        self._saved_marker = self._marker()

    def _autosave(self) -> None:
        if self._httpd is None:
            return
        try:
            if self._marker() != self._saved_marker:
                self.save()
        finally:
            if self.autosave_interval:
                self.timer.call_later(self.autosave_interval, self._autosave)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no controller work is pending (for tests that use a rollout delay)."""
        deadline = time.monotonic() + timeout
        while self.timer.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.timer.pending()
