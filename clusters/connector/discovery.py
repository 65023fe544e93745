"""The connector's API discovery: the client's lazy discovery, with Kubernetes' own API groups shared by
server version within the process, and its cache file written once per use.

A first contact with a cluster used to cost the client seven requests for a Namespace, a ConfigMap and a
Deployment (``/version``, ``/apis``, ``/api/v1``, ``/apis/apps/v1``, then the objects) and four rewrites of
the whole discovery cache file; at 10,000 clusters that was most of a rollout's prepare (issue 19). Every
cluster of one Kubernetes version serves the same resources in Kubernetes' own API groups
(``BUILTIN_GROUPS``), so:

- the resource list of a built-in group version is fetched once per process and server version
  (``/version``'s ``gitVersion``), and the built-in groups a server lists (``/apis``) are remembered per
  version too: a later cluster of that version asks only ``/version`` before its objects;
- a kind not found that way (a CRD, an aggregated API, a group version this cluster serves and the first
  one did not) makes the client discover this cluster in full, as before: ``/apis`` and the group versions
  it looks up, never from the shared lists;
- the cache file keeps what is particular to the cluster (its groups, its CRDs' resources), not the shared
  lists, and is written once a use of the connector is over (``flush``), with the C JSON encoder.

The shared lists trust the first cluster of a version to tell the truth about Kubernetes' own resources.
A cluster whose API server lied could only misname a built-in kind's resource for the others of its
version; the connector checks the kind of every object a server returns (``Connector._get``), and the
API server refuses a request whose body is not of the endpoint's kind. ``ConnectorOptions`` turns sharing
off (``FLEETGATE_KUBE_SHARED_DISCOVERY=0``) where clusters of one version are not equally trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections import OrderedDict, defaultdict
from json import JSONDecodeError
from typing import Any

from kubernetes.dynamic.discovery import (
    DISCOVERY_PREFIX,
    CacheEncoder,
    LazyDiscoverer,
    ResourceGroup,
)
from kubernetes.dynamic.exceptions import ServiceUnavailableError
from kubernetes.dynamic.resource import Resource, ResourceList

# The API groups kube-apiserver itself serves (the core group is ""). Aggregated APIs such as
# metrics.k8s.io and CRD groups (snapshot.storage.k8s.io) are not in it: they differ between clusters of
# one version.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)
KEEP_VERSIONS = 16  # server versions remembered per process (a fleet runs a few)


def _builtin(prefix: str, group: str) -> bool:
    if prefix == "api":
        return group == ""
    return prefix == DISCOVERY_PREFIX and group != "" and builtin_group(group)


def builtin_group(group: str) -> bool:
    """Whether ``group`` (a Resource's group; "" is the core group) is one of Kubernetes' own."""
    return group in BUILTIN_GROUPS


def _resource_list(body: Any, group: str, version: str) -> list[dict[str, Any]] | None:
    """The resources of a group version's discovery answer, or None when the answer is not the
    APIResourceList of that group version (an error page, a proxy's answer): such an answer is never
    shared."""
    if not isinstance(body, dict) or body.get("kind") != "APIResourceList":
        return None
    if body.get("groupVersion") != (f"{group}/{version}" if group else version):
        return None
    resources = body.get("resources")
    if not isinstance(resources, list):
        return None
    for item in resources:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]):
            return None
        if "/" not in item["name"] and not (isinstance(item.get("kind"), str) and item["kind"]):
            return None
    return list(resources)


class SharedDiscovery:
    """What clusters of one server version have in common, per process: the built-in groups with their
    versions (and which is preferred), and each built-in group version's resource list as the server sent
    it. Thread-safe; at most ``KEEP_VERSIONS`` versions, the least recently used forgotten first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.fetched = 0  # resource lists fetched from a server (for tests and benchmarks)
        self.reused = 0  # resource lists served from here

    def _entry(self, version: str) -> dict[str, Any]:
        entry = self._versions.get(version)
        if entry is None:
            entry = self._versions[version] = {"groups": None, "lists": {}}
            while len(self._versions) > KEEP_VERSIONS:
                self._versions.popitem(last=False)
        else:
            self._versions.move_to_end(version)
        return entry

    def groups(self, version: str) -> dict[str, list[tuple[str, bool]]] | None:
        with self._lock:
            entry = self._versions.get(version)
            return None if entry is None else entry["groups"]

    def remember_groups(self, version: str, groups: dict[str, list[tuple[str, bool]]]) -> None:
        with self._lock:
            self._entry(version)["groups"] = groups

    def resource_list(self, version: str, path: str) -> list[dict[str, Any]] | None:
        with self._lock:
            entry = self._versions.get(version)
            found = None if entry is None else entry["lists"].get(path)
            if found is not None:
                self.reused += 1
            return found

    def remember_list(self, version: str, path: str, resources: list[dict[str, Any]]) -> None:
        with self._lock:
            self._entry(version)["lists"][path] = resources
            self.fetched += 1

    def versions(self) -> list[str]:
        with self._lock:
            return list(self._versions)

    def clear(self) -> None:
        with self._lock:
            self._versions.clear()
            self.fetched = self.reused = 0


SHARED = SharedDiscovery()


_SET_HERE = frozenset({"prefix", "group", "api_version", "client", "preferred"})  # Resource's own arguments


def _just_json(_client: Any, data: Any) -> Any:
    return data


class Discovery(LazyDiscoverer):
    """The client's lazy discovery (``kubernetes.dynamic``), sharing Kubernetes' own groups by server
    version (``shared``) and writing its cache file once per use (``flush``)."""

    shared: SharedDiscovery | None = SHARED  # None: every cluster discovered on its own
    _cache: dict[str, Any]  # the client's: library_version, version, resources

    def __init__(self, client: Any, cache_file: str, *, shared: bool = True) -> None:
        if not shared:
            self.shared = None
        self._file = cache_file
        self._dirty = False
        self._full = False  # set by a refresh: this cluster is discovered on its own from then on
        self._starting = True  # the client's own start (loading the file) is not a refresh
        self._version_asked = False  # /version asked of this server in this use (when sharing)
        super().__init__(client, cache_file)
        self._starting = False

    # -- the server version the shared lists are kept under ---------------------------------------------
    def _server_version(self) -> str:
        if self.shared is None:
            return ""
        info = (self._cache.get("version") or {}).get("kubernetes") or {}
        return str(info.get("gitVersion") or "") if isinstance(info, dict) else ""

    # -- groups ------------------------------------------------------------------------------------------
    def _load_server_info(self) -> None:
        """The server version: asked of the server once per use of the connector when sharing, also when
        the cache file has one. A cluster upgraded since the file was written says so here; its lists are
        then neither taken from nor given to its old version's, and what the file says of its groups is
        dropped."""
        if self.shared is not None and not self._version_asked:
            self._version_asked = True
            before = self._server_version()
            self._cache.pop("version", None)
            super()._load_server_info()
            if before and self._server_version() != before:
                self._cache.pop("resources", None)
                self._dirty = True
            return
        super()._load_server_info()

    def invalidate_cache(self) -> None:
        if not self._starting:
            self._full = True  # a kind was not found, or the caller asked: ask this cluster, not the others
        super().invalidate_cache()

    def discover(self) -> None:
        version = self._server_version()
        known = self.shared.groups(version) if version and self.shared is not None else None
        if known is not None and not self._full and not self._cache.get("resources"):
            # a first contact with a server of a version already discovered: its built-in groups only; a
            # kind in any other group is not found there and refreshes (search → invalidate_cache)
            groups = self.default_groups(request_resources=False)
            for group, versions in known.items():
                groups[DISCOVERY_PREFIX][group] = {v: ResourceGroup(preferred) for v, preferred in versions}
            self._cache["resources"] = groups
        super().discover()
        if version and self.shared is not None and known is None:
            listed = self._cache.get("resources", {}).get(DISCOVERY_PREFIX, {})
            self.shared.remember_groups(
                version,
                {
                    group: [(v, bool(rg.preferred)) for v, rg in versions.items()]
                    for group, versions in listed.items()
                    if _builtin(DISCOVERY_PREFIX, group)
                },
            )

    # -- a group version's resources -----------------------------------------------------------------
    def get_resources_for_api_version(self, prefix: str, group: str, version: str, preferred: bool) -> Any:
        server = self._server_version()
        if not server or self._full or not _builtin(prefix, group):
            # not shared, refreshed (this cluster on its own), or not one of Kubernetes' own groups
            return super().get_resources_for_api_version(prefix, group, version, preferred)
        path = "/".join(filter(None, [prefix, group, version]))
        raw = self.shared.resource_list(server, path) if self.shared is not None else None
        if raw is None:
            try:
                body = self.client.request("GET", path, serializer=_just_json)
            except (ServiceUnavailableError, JSONDecodeError):
                return super().get_resources_for_api_version(prefix, group, version, preferred)
            raw = _resource_list(body, group, version)
            if raw is None:  # not a resource list: the client's own handling, nothing shared
                return super().get_resources_for_api_version(prefix, group, version, preferred)
            if self.shared is not None:
                self.shared.remember_list(server, path, raw)
        return self._resources(prefix, group, version, preferred, raw)

    def _resources(
        self, prefix: str, group: str, version: str, preferred: bool, raw: list[dict[str, Any]]
    ) -> dict[str, list[Any]]:
        """The client's Resource objects of one group version from its APIResource list (as
        ``Discoverer.get_resources_for_api_version`` builds them), bound to this client."""
        resources: dict[str, list[Any]] = defaultdict(list)
        subresources: dict[str, dict[str, Any]] = {}
        for item in raw:
            if "/" in item.get("name", ""):
                parent, name = item["name"].split("/", 1)
                subresources.setdefault(parent, {})[name] = dict(item)
        for item in raw:
            if "/" in item.get("name", ""):
                continue
            fields = {k: v for k, v in item.items() if k not in _SET_HERE}
            resource = Resource(
                prefix=prefix,
                group=group,
                api_version=version,
                client=self.client,
                preferred=preferred,
                subresources=subresources.get(item["name"]),
                **fields,
            )
            resources[item["kind"]].append(resource)
            listed = ResourceList(self.client, group=group, api_version=version, base_kind=item["kind"])
            resources[listed.kind].append(listed)
        return resources

    # -- the cache file ------------------------------------------------------------------------------
    def _write_cache(self) -> None:
        self._dirty = True

    def flush(self) -> None:
        """Write the cache file when discovery learnt something since it was last written: this cluster's
        groups and the resources not shared by version, in one write that replaces the file whole."""
        if not self._dirty:
            return
        self._dirty = False
        data: dict[str, Any] = dict(self._cache)
        if self._server_version():
            data["resources"] = {
                prefix: {
                    group: {
                        v: (ResourceGroup(rg.preferred) if _builtin(prefix, group) else rg)
                        for v, rg in versions.items()
                    }
                    for group, versions in groups.items()
                }
                for prefix, groups in (self._cache.get("resources") or {}).items()
            }
        try:
            # json.dumps in one shot uses the C encoder; json.dump streams through the pure-Python one
            text = json.dumps(data, cls=CacheEncoder)
            directory = os.path.dirname(self._file) or "."
            fd, tmp = tempfile.mkstemp(prefix=".discovery-", dir=directory)
        except Exception:  # a cache that cannot be written is rediscovered next time
            return
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self._file)  # another process reading it sees the old file or the new one
        except Exception:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
