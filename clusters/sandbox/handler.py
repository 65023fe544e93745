"""The HTTP side: routing Kubernetes REST paths to a cluster's state, watches, faults and auth."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import queue
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import errors
from .errors import ApiError
from .resources import BUILTIN_GROUP_LIST, BUILTIN_GROUPS, BUILTIN_RESOURCE_LISTS, group_entry, resource_list
from .selectors import parse_field_selector, parse_label_selector
from .store import APPLY
from .tables import TABLE_CONTENT_TYPE, table, wants_table

if TYPE_CHECKING:
    from .server import SandboxCluster, SandboxServer

log = logging.getLogger(__name__)
JSON = "application/json"
VERSION_INFO = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0",
    "gitCommit": "fleetgate-sandbox",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
MAX_BODY = 3 * 1024 * 1024  # the apiserver's request size limit
ROOT_PATHS = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]


def nsv_of(ns: str | None) -> str:
    return ns or ""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class DroppedConnection(Exception):
    """Close the connection without an answer (fault injection)."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "fleetgate-sandbox/1.0"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.track(self.connection, False)  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # -- plumbing ---------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            if length <= 16 * MAX_BODY:  # drain it, so that the client reads the answer instead of EPIPE
                while length > 0:
                    chunk = self.rfile.read(min(length, 65536))
                    if not chunk:
                        break
                    length -= len(chunk)
            else:
                self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}", {})
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self, code: int, body: bytes, content_type: str = JSON, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # headers and body in one write: no Nagle / delayed-ACK stall on keep-alive connections
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if self.command != "HEAD":
            self._headers_buffer.append(body)  # type: ignore[attr-defined]
        self.flush_headers()

    def _send_error(self, err: ApiError) -> None:
        self._send(err.code, _dumps(err.status()), headers=err.headers)

    def _reset(self) -> None:
        """Abort the TCP connection with a reset (what a dead apiserver or load balancer does)."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()
        self.close_connection = True

    def _handle(self) -> None:
        sandbox: SandboxServer = self.server.sandbox  # type: ignore[attr-defined]
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            path = unquote(url.path)
            if path.startswith("/_sandbox/") and getattr(self.server, "fixed_cluster", None) is None:
                from .admin import handle_admin

                code, out = handle_admin(sandbox, self.command, path, self.headers, body)
                self._send(code, _dumps(out))
                return
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if body and ctype in ("application/vnd.kubernetes.protobuf", "application/cbor"):
                raise errors.ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the sandbox speaks JSON only: {ctype} request bodies are not supported",
                    {},
                )
            cluster, rest = sandbox.resolve(path, getattr(self.server, "fixed_cluster", None))
            if cluster is None:
                raise errors.path_not_found()
            verdict, fault_code = cluster.faults.decide()
            if verdict in ("down", "drop"):
                self._reset()
                return
            if cluster.faults.latency:
                time.sleep(cluster.faults.latency)
            if verdict == "error" and fault_code is not None:
                raise errors.injected(fault_code)
            if cluster.token is not None:
                auth = self.headers.get("Authorization", "")
                given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
                if not given or not hmac.compare_digest(given.encode(), cluster.token.encode()):
                    raise errors.unauthorized()
            self._route(cluster, rest, query, body)
        except ApiError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            log.exception("sandbox request failed: %s %s", self.command, self.path.split("?")[0])
            with contextlib.suppress(OSError):
                self._send_error(ApiError(500, "InternalError", f"Internal error occurred: {exc}", {}))

    # -- routing ----------------------------------------------------------------------------------
    def _route(self, cluster: SandboxCluster, rest: str, query: dict[str, str], body: bytes) -> None:
        parts = [p for p in rest.split("/") if p]
        method = self.command
        if not parts:
            self._send(200, _dumps({"paths": ROOT_PATHS}))
            return
        head = parts[0]
        if head == "version" and len(parts) == 1:
            self._send(200, _dumps(VERSION_INFO))
            return
        if head in ("healthz", "livez", "readyz"):
            self._send(200, b"ok", "text/plain; charset=utf-8")
            return
        state = cluster.state
        if head == "api":
            if len(parts) == 1:
                host = self.headers.get("Host", "127.0.0.1")
                self._send(
                    200,
                    _dumps(
                        {
                            "kind": "APIVersions",
                            "versions": ["v1"],
                            "serverAddressByClientCIDRs": [
                                {"clientCIDR": "0.0.0.0/0", "serverAddress": host}
                            ],
                        }
                    ),
                )
                return
            group, version, tail = "", parts[1], parts[2:]
            if version != "v1":
                raise errors.path_not_found()
        elif head == "apis":
            if len(parts) == 1:
                self._send(200, self._group_list(cluster))
                return
            group = parts[1]
            versions = self._group_versions(cluster, group)
            if not versions:
                raise errors.path_not_found()
            if len(parts) == 2:
                self._send(
                    200, _dumps({"kind": "APIGroup", "apiVersion": "v1", **group_entry(group, versions)})
                )
                return
            version, tail = parts[2], parts[3:]
            if version not in versions:
                raise errors.path_not_found()
        else:
            raise errors.path_not_found()
        if not tail:
            if method != "GET":
                raise errors.method_not_allowed()
            self._send(200, self._resource_list(cluster, group, version))
            return
        watch = query.get("watch", "") in ("true", "1")
        if tail[0] == "watch":
            watch, tail = True, tail[1:]
        ns: str | None = None
        if (
            len(tail) >= 3
            and tail[0] == "namespaces"
            and not (group == "" and len(tail) == 3 and tail[2] in ("status", "finalize"))
        ):
            ns, tail = tail[1], tail[2:]
        if not tail or len(tail) > 3:
            raise errors.path_not_found()
        rt = state.lookup(group, version, tail[0])
        if rt is None or (ns is not None and not rt.namespaced):
            raise errors.path_not_found()
        name = tail[1] if len(tail) > 1 else None
        sub = tail[2] if len(tail) > 2 else ""
        if sub and not ((sub == "status" and rt.has_status) or (sub == "scale" and rt.has_scale)):
            raise errors.path_not_found()
        if sub == "scale" and name is not None:
            self._scale(state, rt, version, nsv_of(ns), name, query, body)
            return
        nsv = ns or ""
        dry_run = query.get("dryRun") == "All"
        manager = query.get("fieldManager", "")
        if name is None:
            label = parse_label_selector(query.get("labelSelector"))
            field = parse_field_selector(query.get("fieldSelector"), rt.kind if rt.builtin else "")
            if method == "GET":
                if watch:
                    self._watch(cluster, rt, version, ns, query, label, field)
                    return
                as_table = wants_table(self.headers.get("Accept"))
                out = state.list_collection(
                    rt,
                    version,
                    ns,
                    label,
                    field,
                    int(query.get("limit") or 0),
                    query.get("continue", ""),
                    full=as_table,
                )
                if as_table:
                    tab = table(rt, out["items"], out["metadata"], query.get("includeObject", "Metadata"))
                    self._send(200, _dumps(tab), TABLE_CONTENT_TYPE)
                else:
                    self._send(200, _dumps(out))
            elif method == "POST":
                obj = self._json(body)
                self._send(
                    201,
                    _dumps(state.create(rt, version, nsv, obj, manager or self._default_manager(), dry_run)),
                )
            elif method == "DELETE":
                opts = self._delete_options(body, query)
                out = state.delete_collection(rt, version, ns, label, field, opts, dry_run or opts["dryRun"])
                self._send(200, _dumps(out))
            else:
                raise errors.method_not_allowed()
            return
        if method == "GET":
            if watch:  # the legacy /watch/.../name form: a watch of one object
                label = parse_label_selector(query.get("labelSelector"))
                field = parse_field_selector(f"metadata.name={name}")
                self._watch(cluster, rt, version, ns, query, label, field)
                return
            obj = self._present(rt, version, state.get(rt, nsv, name))
            if wants_table(self.headers.get("Accept")) and not sub:
                meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                tab = table(rt, [obj], meta, query.get("includeObject", "Metadata"))
                self._send(200, _dumps(tab), TABLE_CONTENT_TYPE)
            else:
                self._send(200, _dumps(obj))
        elif method == "PUT":
            obj = self._json(body)
            out = state.update(rt, version, nsv, name, obj, manager or self._default_manager(), sub, dry_run)
            self._send(200, _dumps(out))
        elif method == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == APPLY:
                patch = self._yaml(body)
            elif ctype in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/json-patch+json",
            ):
                patch = self._json(body, allow_list=True)
            else:
                raise errors.unsupported_media_type(ctype)
            if ctype != APPLY and not manager:
                manager = self._default_manager()
            code, out = state.patch(
                rt,
                version,
                nsv,
                name,
                ctype,
                patch,
                manager,
                query.get("force", "") in ("true", "1"),
                sub,
                dry_run,
            )
            self._send(code, _dumps(out))
        elif method == "DELETE":
            if sub:
                raise errors.method_not_allowed()
            opts = self._delete_options(body, query)
            code, out = state.delete(rt, version, nsv, name, opts, dry_run or opts["dryRun"])
            self._send(code, _dumps(out))
        else:
            raise errors.method_not_allowed()

    def _scale(
        self, state: Any, rt: Any, version: str, ns: str, name: str, query: dict[str, str], body: bytes
    ) -> None:
        dry_run = query.get("dryRun") == "All"
        manager = query.get("fieldManager", "") or self._default_manager()
        if self.command == "GET":
            out = state.get_scale(rt, ns, name)
        elif self.command == "PUT":
            out = state.write_scale(rt, version, ns, name, "PUT", self._json(body), manager, dry_run)
        elif self.command == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            patch = self._yaml(body) if ctype == APPLY else self._json(body, allow_list=True)
            out = state.write_scale(rt, version, ns, name, ctype, patch, manager, dry_run)
        else:
            raise errors.method_not_allowed()
        self._send(200, _dumps(out))

    @staticmethod
    def _present(rt: Any, version: str, obj: dict[str, Any]) -> dict[str, Any]:
        from .objects import present

        return obj if rt.builtin else present(obj, rt, version)

    def _default_manager(self) -> str:
        agent = self.headers.get("User-Agent") or ""
        return agent.split("/")[0].strip() or "unknown"

    @staticmethod
    def _json(body: bytes, allow_list: bool = False) -> Any:
        if not body.strip():
            raise errors.bad_request("the request body is empty")
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.bad_request(f"the body of the request is not valid JSON: {exc}") from None
        if not isinstance(obj, dict) and not (allow_list and isinstance(obj, list)):
            raise errors.bad_request("the body of the request must be a JSON object")
        if isinstance(obj, dict) and not isinstance(obj.get("metadata", {}), dict):
            raise errors.bad_request("metadata must be an object")
        if isinstance(obj, dict) and not allow_list:
            obj.setdefault("metadata", {})
        return obj

    @staticmethod
    def _yaml(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            pass
        import yaml

        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"error decoding YAML: {exc}") from None

    @staticmethod
    def _delete_options(body: bytes, query: dict[str, str]) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if body.strip():
            try:
                opts = json.loads(body)
            except ValueError:
                raise errors.bad_request("invalid DeleteOptions body") from None
            if not isinstance(opts, dict):
                raise errors.bad_request("invalid DeleteOptions body")
        dry = opts.get("dryRun") or []
        opts["dryRun"] = "All" in dry if isinstance(dry, list) else False
        return opts

    # -- discovery --------------------------------------------------------------------------------
    @staticmethod
    def _group_versions(cluster: SandboxCluster, group: str) -> list[str]:
        from .resources import BUILTIN_GROUP_VERSIONS

        versions = list(BUILTIN_GROUP_VERSIONS.get(group, []))
        for rt in tuple(cluster.state.custom_types.values()):
            if rt.group == group:
                versions.extend(v for v in rt.served_versions if v not in versions)
        return versions

    def _group_list(self, cluster: SandboxCluster) -> bytes:
        custom = tuple(cluster.state.custom_types.values())
        if not custom:
            return BUILTIN_GROUP_LIST
        groups = list(BUILTIN_GROUPS)
        names = {g["name"] for g in groups}
        for rt in custom:
            if rt.group not in names:
                names.add(rt.group)
                groups.append(group_entry(rt.group, self._group_versions(cluster, rt.group)))
        return _dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    @staticmethod
    def _resource_list(cluster: SandboxCluster, group: str, version: str) -> bytes:
        custom = [
            t
            for t in tuple(cluster.state.custom_types.values())
            if t.group == group and version in t.served_versions
        ]
        cached = BUILTIN_RESOURCE_LISTS.get((group, version))
        if not custom and cached is not None:
            return cached
        from .resources import BUILTIN_TYPES

        types = [t for t in BUILTIN_TYPES if t.group == group and t.version == version] + custom
        return _dumps(resource_list(f"{group}/{version}" if group else version, types))

    # -- watch ------------------------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _watch(
        self,
        cluster: SandboxCluster,
        rt: Any,
        version: str,
        ns: str | None,
        query: dict[str, str],
        label: Any,
        field: Any,
    ) -> None:
        if query.get("sendInitialEvents", "") in ("true", "1"):
            raise ApiError(
                422,
                "Invalid",
                'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: '
                "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                {
                    "group": "meta.k8s.io",
                    "kind": "ListOptions",
                    "causes": [
                        errors.cause(
                            "FieldValueForbidden",
                            "sendInitialEvents",
                            "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList "
                            "feature gate is enabled",
                        )
                    ],
                },
            )
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise errors.bad_request("invalid timeoutSeconds") from None
        bookmarks = query.get("allowWatchBookmarks", "") in ("true", "1")
        self._watch_table = (
            query.get("includeObject", "Metadata") if wants_table(self.headers.get("Accept")) else None
        )
        state = cluster.state
        expired: ApiError | None = None
        watcher = None
        try:
            watcher = state.watch(rt, ns, query.get("resourceVersion", ""), label, field)
        except ApiError as err:
            if err.code != 410:
                raise
            expired = err
        self.send_response(200)
        self.send_header("Content-Type", JSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if expired is not None:
                self._chunk(_dumps({"type": "ERROR", "object": expired.status()}) + b"\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            assert watcher is not None  # noqa: S101 - narrowed above
            deadline = time.monotonic() + max(0.0, timeout)
            interval = max(0.05, cluster.settings.bookmark_interval)
            next_bookmark = time.monotonic() + interval
            closed = False
            while not closed:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    item = watcher.queue.get(timeout=wait)
                except queue.Empty:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        closed = self._flush_with_bookmark(watcher, rt, version, state)
                        next_bookmark = time.monotonic() + interval
                    continue
                if item is None:
                    closed = True
                    break
                self._event(rt, version, item)
            if not closed:
                if bookmarks:
                    self._flush_with_bookmark(watcher, rt, version, state)
                else:
                    self._flush(watcher, rt, version, state)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            if watcher is not None:
                state.unwatch(watcher)

    def _event(self, rt: Any, version: str, item: tuple[str, dict[str, Any]]) -> None:
        ev_type, obj = item
        out = self._present(rt, version, obj)
        include = getattr(self, "_watch_table", None)
        if include is not None:  # kubectl get -w: every event carries a one-row Table
            out = table(rt, [out], {"resourceVersion": obj["metadata"].get("resourceVersion", "")}, include)
        self._chunk(_dumps({"type": ev_type, "object": out}) + b"\n")

    def _flush(self, watcher: Any, rt: Any, version: str, state: Any) -> tuple[bool, int]:
        """Send what is queued; returns (stream ended, the resourceVersion everything up to was delivered)."""
        items = []
        with state.lock:  # events are queued under this lock: nothing up to ``rv`` can still be missing
            rv = state.rv
            while True:
                try:
                    items.append(watcher.queue.get_nowait())
                except queue.Empty:
                    break
        for item in items:
            if item is None:
                return True, rv
            self._event(rt, version, item)
        return False, rv

    def _flush_with_bookmark(self, watcher: Any, rt: Any, version: str, state: Any) -> bool:
        closed, rv = self._flush(watcher, rt, version, state)
        if not closed:
            self._chunk(self._bookmark(rt, version, rv))
        return closed

    @staticmethod
    def _bookmark(rt: Any, version: str, rv: int) -> bytes:
        return (
            _dumps(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": rt.kind,
                        "apiVersion": rt.api_version(version),
                        "metadata": {"resourceVersion": str(rv)},
                    },
                }
            )
            + b"\n"
        )
