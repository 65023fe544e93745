"""Tenant allow-lists: what a restricted cluster group's mappings may deploy (Django-free core).

A cluster group with an allow-list (``clusters.models.AllowList``) is *restricted*; a group without one is
unrestricted (everything its mappings render may deploy, as before). For a restricted group:

- **sources**: a mapping's repository and path must match one entry ``{"repository": glob, "path": glob}``
  (the repository glob is matched against the repository's name and its URL; ``*`` matches any run of
  characters, ``/`` included). No entry: no mapping may target the group. Each of the mapping's Helm
  values files of the repository must be, or lie under, a path such an entry allows
  (:func:`values_files_refusal`), and so must every file a mapped path's fleet.yaml/fleetgate.yaml
  references (``helm.valuesFiles``, a local ``helm.chart``, ``kustomize.dir``: :func:`fleet_file_refusal`).
  Generally, every repository file a render reads (Kustomize bases, ``file://`` chart dependencies, files
  reached through symlinks) must be, or lie under, an allowed path (:func:`read_files_refusal`).
- **namespaces**: every namespaced object must land (its ``metadata.namespace``, else the mapping's target
  namespace, else ``default``) in a namespace matching a glob of the list and no ``!glob`` of it.
- **kinds**: a cluster-scoped object (Namespace, ClusterRole, CRDs, ...: ``fleet.sources.render.objects``,
  and kinds a rendered CRD declares ``Cluster``-scoped; at sync, also every kind the cluster's discovery
  serves as cluster-scoped, e.g. of a CRD installed beforehand: ``clusters.connector.Connector.apply`` and
  ``plan`` with ``restrict``) needs an entry in ``cluster_resources_allow`` and none in
  ``cluster_resources_deny``: **cluster-scoped kinds are off unless listed**. A namespaced
  object must match ``namespace_resources_allow`` when that list is not empty and never
  ``namespace_resources_deny``. Entries are ``{"group": glob, "kind": glob}`` (the core group is ``""``).
- **service account**: when set, the connector impersonates ``system:serviceaccount:NS:NAME`` for the
  mapping's reads, dry runs, applies, prunes and drift checks, so the cluster's own RBAC bounds the sync too.

The checks are pure functions over plain data: the render (``fleet.sources.services.rendering``), mapping
creation and change (``PathMapping.clean``, hence API and admin) and every future entry point (the pull-mode
agent, ``import_gitops``) call :func:`source_refusal` and :func:`object_refusals` through
``clusters.services.allowlist_for`` / ``check_mapping_source``. A refusal is not a policy violation: no
waiver excuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from fleet.sources.render.objects import CLUSTER_SCOPED_KINDS

ENTRY_KEYS = {"group", "kind"}
SOURCE_KEYS = {"repository", "path"}


@dataclass(frozen=True)
class Rules:
    """One group's allow-list as plain data (see the module docstring)."""

    group: str
    sources: tuple[tuple[str, str], ...] = ()
    namespaces: tuple[str, ...] = ()
    cluster_allow: tuple[tuple[str, str], ...] = ()
    cluster_deny: tuple[tuple[str, str], ...] = ()
    namespaced_allow: tuple[tuple[str, str], ...] = ()
    namespaced_deny: tuple[tuple[str, str], ...] = ()
    service_account: str = ""  # "namespace:name", or "" for no impersonation

    @property
    def impersonate(self) -> str:
        """The user name the connector impersonates, or ''."""
        return f"system:serviceaccount:{self.service_account}" if self.service_account else ""


@dataclass(frozen=True)
class Refusal:
    """An object outside the allow-list."""

    message: str
    source: str = ""
    document: int | None = None
    kind: str = ""
    name: str = ""
    namespace: str | None = None


# --------------------------------------------------------------------------- validation of the lists


def validate_globs(value: object, what: str) -> list[str]:
    """Messages for a list of non-empty glob strings."""
    if not isinstance(value, list):
        return [f"{what} must be a list of glob strings."]
    return [f"{what}[{i}] must be a non-empty string." for i, item in enumerate(value)
            if not isinstance(item, str) or not item.strip("!").strip()]


def validate_entries(value: object, what: str, keys: set[str]) -> list[str]:
    """Messages for a list of objects with exactly ``keys`` (glob strings; a missing key means '*')."""
    if not isinstance(value, list):
        return [f"{what} must be a list of objects with {', '.join(sorted(keys))}."]
    errors = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            errors.append(f"{what}[{i}] must be an object with {', '.join(sorted(keys))}.")
            continue
        unknown = set(item) - keys
        if unknown:
            errors.append(f"{what}[{i}]: unknown key(s) {', '.join(sorted(unknown))}; use "
                          f"{', '.join(sorted(keys))}.")
        for key in keys & set(item):
            if not isinstance(item[key], str):
                errors.append(f"{what}[{i}].{key} must be a string (a glob).")
    return errors


def _pairs(entries: Iterable[Mapping[str, Any]], keys: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((str(e.get(keys[0], "*")), str(e.get(keys[1], "*"))) for e in entries)


def rules_from(group: str, *, sources: Sequence[Mapping[str, Any]], namespaces: Sequence[str],
               cluster_allow: Sequence[Mapping[str, Any]], cluster_deny: Sequence[Mapping[str, Any]],
               namespaced_allow: Sequence[Mapping[str, Any]], namespaced_deny: Sequence[Mapping[str, Any]],
               service_account: str = "") -> Rules:
    kinds = ("group", "kind")
    return Rules(
        group=group,
        sources=_pairs(sources, ("repository", "path")),
        namespaces=tuple(namespaces),
        cluster_allow=_pairs(cluster_allow, kinds),
        cluster_deny=_pairs(cluster_deny, kinds),
        namespaced_allow=_pairs(namespaced_allow, kinds),
        namespaced_deny=_pairs(namespaced_deny, kinds),
        service_account=service_account,
    )


# --------------------------------------------------------------------------- checks


def _match_kind(entries: Iterable[tuple[str, str]], api_group: str, kind: str) -> bool:
    return any(fnmatchcase(api_group, g) and fnmatchcase(kind, k) for g, k in entries)


def namespace_allowed(rules: Rules, namespace: str) -> bool:
    allowed = any(fnmatchcase(namespace, g) for g in rules.namespaces if not g.startswith("!"))
    denied = any(fnmatchcase(namespace, g[1:]) for g in rules.namespaces if g.startswith("!"))
    return allowed and not denied


def source_refusal(rules: Rules, *, repository: str, url: str, path: str) -> str | None:
    """Why a mapping of ``repository`` (name, URL) at ``path`` may not target the group, or None."""
    for repo_glob, path_glob in rules.sources:
        repo_ok = fnmatchcase(repository, repo_glob) or fnmatchcase(url, repo_glob)
        if repo_ok and fnmatchcase(path, path_glob):
            return None
    if not rules.sources:
        return (f"cluster group {rules.group!r} has an allow-list with no sources: no repository may map "
                "to it (an admin on all clusters can add one)")
    allowed = ", ".join(f"{r}:{p}" for r, p in rules.sources)
    return (f"repository {repository!r} path {path!r} is not allowed for cluster group {rules.group!r} "
            f"(its allow-list permits {allowed})")


def _within(path: str, path_glob: str) -> bool:
    """Whether ``path`` (a file) is a path the glob allows or lies under one (a directory it allows)."""
    parts = path.split("/")
    return any(fnmatchcase("/".join(parts[:n]), path_glob) for n in range(len(parts), 0, -1))


def file_allowed(rules: Rules, *, repository: str, url: str, path: str) -> bool:
    """Whether the repository file ``path`` (repository-relative) is, or lies under, a path the allow-list's
    source globs allow for the repository (no ``..``)."""
    rel = "/".join(part for part in str(path).split("/") if part not in ("", "."))
    return ".." not in rel.split("/") and any(
        (fnmatchcase(repository, repo_glob) or fnmatchcase(url, repo_glob)) and _within(rel, path_glob)
        for repo_glob, path_glob in rules.sources
    )


def fleet_file_refusal(rules: Rules, *, repository: str, url: str,
                       references: Iterable[tuple[str, str, str, str]]) -> str | None:
    """Why a file a mapped path's fleet.yaml/fleetgate.yaml references may not be read for the group, or
    None. ``references`` are ``(fleet file, key, entry as written, repository-relative path it resolves
    to)``; each path must be, or lie under, a path the source globs allow, as the mapping's own values files
    must (:func:`values_files_refusal`): else ``helm.valuesFiles: ../../teams/b/values.yaml`` in an
    allowed directory would pull another team's files into the render."""
    for fleet_file, key, entry, path in references:
        if file_allowed(rules, repository=repository, url=url, path=path):
            continue
        allowed = ", ".join(f"{r}:{p}" for r, p in rules.sources) or "no source"
        return (f"{fleet_file}: {key} {entry!r} reads {path!r} of repository {repository!r}, outside the "
                f"paths cluster group {rules.group!r} allows (its allow-list permits {allowed})")
    return None


def read_files_refusal(rules: Rules, *, repository: str, url: str, path: str,
                       files: Iterable[tuple[str, str]]) -> Refusal | None:
    """The first repository file a render of the mapping path ``path`` read that the group may not read, or
    None. ``files`` are ``(repository-relative path, symlinks resolved; what led the render there or '')``
    (``fleet.sources.render.input_files``): the one general rule behind the per-key checks, so a
    kustomization's ``resources: [../../teams/b]``, a chart's ``file://`` dependency or a symlink to another
    team's folder cannot pull files outside the allowed paths into the render."""
    for file, via in files:
        if file_allowed(rules, repository=repository, url=url, path=file):
            continue
        allowed = ", ".join(f"{r}:{p}" for r, p in rules.sources) or "no source"
        how = f" ({via})" if via else ""
        return Refusal(f"the render of {path or '.'!r} reads {file!r}{how} of repository {repository!r}, "
                       f"outside the paths cluster group {rules.group!r} allows (its allow-list permits "
                       f"{allowed})", source=file)
    return None


def values_files_refusal(rules: Rules, *, repository: str, url: str,
                         values_files: Sequence[str]) -> str | None:
    """Why a mapping's Helm values files may not be read for the group, or None: each repository file (not
    ``chart:<file>``, a file of the fetched chart) must be, or lie under, a path the allow-list's source
    globs allow for the repository, as the mapping's ``path`` must (else a tenant could layer any file of
    the repository, e.g. another team's values, onto its chart)."""
    for entry in values_files:
        entry = str(entry)
        if entry.startswith("chart:"):
            continue
        if file_allowed(rules, repository=repository, url=url, path=entry):
            continue
        allowed = ", ".join(f"{r}:{p}" for r, p in rules.sources) or "no source"
        return (f"values file {entry!r} of repository {repository!r} is outside the paths cluster group "
                f"{rules.group!r} allows (its allow-list permits {allowed})")
    return None


def _group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def object_refusal(rules: Rules, obj: Mapping[str, Any], default_namespace: str) -> str | None:
    """Why one rendered object (a RenderedManifest resource: apiVersion, kind, name, namespace; namespace
    None for a cluster-scoped kind) may not deploy to the group, or None."""
    kind = str(obj.get("kind", ""))
    api_group = _group_of(str(obj.get("apiVersion", "")))
    name = obj.get("name", "")
    label = f"{kind} {name}"
    shown = f"{api_group}/{kind}" if api_group else kind
    if obj.get("namespace") is None and _is_cluster_scoped(obj):
        if not _match_kind(rules.cluster_allow, api_group, kind):
            return (f"{label}: cluster-scoped kind {shown} is not allowed for cluster group {rules.group!r} "
                    "(cluster-scoped kinds are off unless listed in cluster_resources_allow)")
        if _match_kind(rules.cluster_deny, api_group, kind):
            return f"{label}: kind {shown} is denied for cluster group {rules.group!r}"
        return None
    namespace = obj.get("namespace") or default_namespace or "default"
    if not namespace_allowed(rules, namespace):
        return (f"{label}: namespace {namespace!r} is not allowed for cluster group {rules.group!r} "
                f"(allowed: {', '.join(rules.namespaces) or 'none'})")
    if rules.namespaced_allow and not _match_kind(rules.namespaced_allow, api_group, kind):
        return f"{label}: kind {shown} is not in the allowed kinds of cluster group {rules.group!r}"
    if _match_kind(rules.namespaced_deny, api_group, kind):
        return f"{label}: kind {shown} is denied for cluster group {rules.group!r}"
    return None


def _is_cluster_scoped(obj: Mapping[str, Any]) -> bool:
    # The renderer drops metadata.namespace from cluster-scoped kinds and keeps None for them; a namespaced
    # object without a namespace keeps None too, so the kind decides.
    if obj.get("kind") in CLUSTER_SCOPED_KINDS:
        return True
    return bool(obj.get("cluster_scoped"))


def object_refusals(rules: Rules, objects: Iterable[Mapping[str, Any]], default_namespace: str,
                    *, cluster_scoped_kinds: Iterable[str] = ()) -> list[Refusal]:
    """Every object of a render that the allow-list refuses, in order. ``cluster_scoped_kinds``: kinds
    declared Cluster-scoped by CRDs of the same render."""
    extra = set(cluster_scoped_kinds)
    refusals = []
    for obj in objects:
        data = dict(obj)
        if data.get("kind") in extra and data.get("namespace") is None:
            data["cluster_scoped"] = True
        message = object_refusal(rules, data, default_namespace)
        if message is not None:
            refusals.append(Refusal(message, source=str(obj.get("source") or ""),
                                    document=obj.get("document"), kind=str(obj.get("kind", "")),
                                    name=str(obj.get("name", "")), namespace=obj.get("namespace")))
    return refusals


def declared_cluster_kinds(objects: Iterable[Mapping[str, Any]]) -> set[str]:
    """Kinds that CustomResourceDefinitions among ``objects`` declare with scope Cluster."""
    kinds = set()
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = (obj.get("object") or {}).get("spec") or {}
        names = spec.get("names") or {}
        if spec.get("scope") == "Cluster" and isinstance(names.get("kind"), str):
            kinds.add(names["kind"])
    return kinds
