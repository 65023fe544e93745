"""``match`` / ``exclude`` of a Kyverno rule and ``spec.match`` of a PolicyException
(``pkg/engine/utils/match.go``, ``pkg/utils/match``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.formats import FormatError
from policies.formats.kube import LabelSelector
from policies.formats.kyverno.values import has_wildcard, wildcard_match

_VERSION = re.compile(r"^(v\d+((alpha|beta)\d+)?|\*)$")
_DESCRIPTION_FIELDS = {
    "kinds",
    "name",
    "names",
    "namespaces",
    "annotations",
    "selector",
    "namespaceSelector",
    "operations",
}
_USER_FIELDS = {"roles", "clusterRoles", "subjects"}
_OPERATIONS = {"CREATE", "UPDATE", "DELETE", "CONNECT"}


def parse_kind_selector(text: str) -> tuple[str, str, str, str]:
    """``kubeutils.ParseKindSelector``: ``Pod``, ``v1/Pod``, ``apps/v1/Deployment``, ``Pod/status``,
    ``*/*`` -> (group, version, kind, subresource)."""
    parts = text.split("/")
    parts = parts[:-1] + parts[-1].split(".")
    if len(parts) == 1:
        return "*", "*", parts[0], ""
    if len(parts) == 2:
        if parts[0] == "*" and parts[1] == "*":
            return "*", "*", "*", "*"
        if parts[0] == "*" and parts[1].lower() == parts[1]:
            return "*", "*", parts[0], parts[1]
        if _VERSION.match(parts[0]):
            return "*", parts[0], parts[1], ""
        return "*", "*", parts[0], parts[1]
    if len(parts) == 3:
        if _VERSION.match(parts[0]):
            return "*", parts[0], parts[1], parts[2]
        return parts[0], parts[1], parts[2], ""
    if len(parts) == 4:
        return parts[0], parts[1], parts[2], parts[3]
    return "", "", "", ""


@dataclass(frozen=True)
class Subject:
    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True)
class Request:
    """What matching needs to know about one admission request."""

    api_version: str
    kind: str
    name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    operation: str
    namespace_labels: Mapping[str, str] | None
    username: str = ""
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    cluster_roles: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def has_user_info(self) -> bool:
        return bool(self.username or self.groups or self.roles or self.cluster_roles)


@dataclass(frozen=True)
class ResourceFilter:
    kinds: tuple[str, ...] = ()
    name: str = ""
    names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    selector: Mapping[str, Any] | None = None
    namespace_selector: Mapping[str, Any] | None = None
    operations: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    cluster_roles: tuple[str, ...] = ()
    subjects: tuple[Subject, ...] = ()

    @property
    def description_empty(self) -> bool:
        return not (
            self.kinds
            or self.name
            or self.names
            or self.namespaces
            or self.annotations
            or self.selector is not None
            or self.namespace_selector is not None
            or self.operations
        )

    @property
    def user_empty(self) -> bool:
        return not (self.roles or self.cluster_roles or self.subjects)

    def failures(
        self, req: Request, *, ignore_user: bool = False, check_operations: bool = True
    ) -> list[str]:
        if check_operations and self.operations and req.operation not in self.operations:
            return ["operation does not match"]
        errs: list[str] = []
        if self.kinds and not _check_kind(self.kinds, req):
            errs.append(f"kind does not match {list(self.kinds)}")
        if self.name and not wildcard_match(self.name, req.name):
            errs.append("name does not match")
        if self.names and not any(wildcard_match(n, req.name) for n in self.names):
            errs.append("none of the names match")
        if self.namespaces:
            ns = req.name if req.kind == "Namespace" else req.namespace
            if not any(wildcard_match(n, ns) for n in self.namespaces):
                errs.append("namespace does not match")
        if self.annotations and not all(
            any(wildcard_match(k, k1) and wildcard_match(str(v), v1) for k1, v1 in req.annotations.items())
            for k, v in self.annotations.items()
        ):
            errs.append("annotations does not match")
        if self.selector is not None and not selector_matches(self.selector, req.labels):
            errs.append("selector does not match")
        if self.namespace_selector is not None:
            if req.kind == "Namespace":
                errs.append("namespace selector is not applicable for namespace resource")
            elif not selector_matches(self.namespace_selector, req.namespace_labels or {}):
                errs.append("namespace selector does not match labels")
        if not ignore_user:
            if self.roles and not any(r in self.roles for r in req.roles):
                errs.append("user info does not match roles")
            if self.cluster_roles and not any(r in self.cluster_roles for r in req.cluster_roles):
                errs.append("user info does not match clusterRoles")
            if self.subjects and not _check_subjects(self.subjects, req):
                errs.append("user info does not match subject")
        return errs


def _check_kind(kinds: Sequence[str], req: Request) -> bool:
    for k in kinds:
        group, version, kind, sub = parse_kind_selector(k)
        if (
            wildcard_match(group, req.group)
            and wildcard_match(version, req.version)
            and wildcard_match(kind, req.kind)
        ):
            if wildcard_match(sub, ""):
                return True
    return False


def _check_subjects(subjects: Sequence[Subject], req: Request) -> bool:
    for s in subjects:
        if s.kind == "ServiceAccount":
            if wildcard_match(f"system:serviceaccount:{s.namespace}:{s.name}", req.username):
                return True
        elif s.kind == "Group":
            if any(wildcard_match(s.name, g) for g in req.groups):
                return True
        elif s.kind == "User" and wildcard_match(s.name, req.username):
            return True
    return False


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` with Kyverno's wildcards in matchLabels keys and values."""
    match_labels: dict[str, str] = {}
    for k, v in (selector.get("matchLabels") or {}).items():
        k, v = str(k), str(v)
        if has_wildcard(k) or has_wildcard(v):
            hit = next(
                ((k1, v1) for k1, v1 in labels.items() if wildcard_match(k, k1) and wildcard_match(v, v1)),
                None,
            )
            if hit is None:
                return False
            continue
        match_labels[k] = v
    parsed = LabelSelector.parse(
        {"matchLabels": match_labels, "matchExpressions": selector.get("matchExpressions") or []}, "selector"
    )
    return parsed is None or parsed.matches(labels)


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, (str, int, float)) for x in raw):
        raise FormatError(f"{where} must be a list of strings")
    return tuple(str(x) for x in raw)


def parse_filter(raw: Any, where: str) -> ResourceFilter:
    """One ``ResourceFilter`` (``resources`` + ``subjects``/``roles``/``clusterRoles``)."""
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be a mapping")
    unknown = set(raw) - {"resources", *_USER_FIELDS}
    if unknown:
        raise FormatError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    res = raw.get("resources") or {}
    if not isinstance(res, Mapping):
        raise FormatError(f"{where}.resources must be a mapping")
    unknown = set(res) - _DESCRIPTION_FIELDS
    if unknown:
        raise FormatError(f"{where}.resources: unknown field(s) {', '.join(sorted(unknown))}")
    ops = _strings(res.get("operations"), f"{where}.resources.operations")
    bad = [o for o in ops if o not in _OPERATIONS]
    if bad:
        raise FormatError(
            f"{where}.resources.operations: {bad[0]!r} is not CREATE, UPDATE, DELETE or CONNECT"
        )
    for sel in ("selector", "namespaceSelector"):
        if res.get(sel) is not None:
            LabelSelector.parse(
                {
                    "matchLabels": {k: v for k, v in (res[sel].get("matchLabels") or {}).items()},
                    "matchExpressions": res[sel].get("matchExpressions") or [],
                }
                if isinstance(res[sel], Mapping)
                else res[sel],
                f"{where}.resources.{sel}",
            )
    annotations = res.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise FormatError(f"{where}.resources.annotations must be a mapping")
    subjects = []
    for i, s in enumerate(raw.get("subjects") or []):
        if not isinstance(s, Mapping) or "kind" not in s or "name" not in s:
            raise FormatError(f"{where}.subjects[{i}] needs kind and name")
        subjects.append(Subject(str(s["kind"]), str(s["name"]), str(s.get("namespace") or "")))
    return ResourceFilter(
        kinds=_strings(res.get("kinds"), f"{where}.resources.kinds"),
        name=str(res.get("name") or ""),
        names=_strings(res.get("names"), f"{where}.resources.names"),
        namespaces=_strings(res.get("namespaces"), f"{where}.resources.namespaces"),
        annotations={str(k): str(v) for k, v in annotations.items()},
        selector=res.get("selector"),
        namespace_selector=res.get("namespaceSelector"),
        operations=ops,
        roles=_strings(raw.get("roles"), f"{where}.roles"),
        cluster_roles=_strings(raw.get("clusterRoles"), f"{where}.clusterRoles"),
        subjects=tuple(subjects),
    )


@dataclass(frozen=True)
class MatchResources:
    """``match`` or ``exclude``: ``any`` (one filter), ``all`` (every filter), or the legacy inline form."""

    any: tuple[ResourceFilter, ...] = ()
    all: tuple[ResourceFilter, ...] = ()
    inline: ResourceFilter | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> MatchResources | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise FormatError(f"{where} must be a mapping")
        unknown = set(raw) - {"any", "all", "resources", *_USER_FIELDS}
        if unknown:
            raise FormatError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        any_ = raw.get("any")
        all_ = raw.get("all")
        for name, block in (("any", any_), ("all", all_)):
            if block is not None and not isinstance(block, list):
                raise FormatError(f"{where}.{name} must be a list")
        inline_raw = {k: v for k, v in raw.items() if k in ("resources", *_USER_FIELDS)}
        return cls(
            any=tuple(parse_filter(f, f"{where}.any[{i}]") for i, f in enumerate(any_ or [])),
            all=tuple(parse_filter(f, f"{where}.all[{i}]") for i, f in enumerate(all_ or [])),
            inline=parse_filter(inline_raw, where) if inline_raw else None,
        )

    @property
    def empty(self) -> bool:
        return (
            not self.any
            and not self.all
            and (self.inline is None or (self.inline.description_empty and self.inline.user_empty))
        )

    def kinds(self) -> list[str]:
        out: list[str] = []
        for f in (*self.any, *self.all, *((self.inline,) if self.inline else ())):
            out.extend(f.kinds)
        return out

    def filters(self) -> tuple[ResourceFilter, ...]:
        return (*self.any, *self.all, *((self.inline,) if self.inline else ()))

    def matches(self, req: Request) -> bool:
        """Rule ``match`` semantics (userInfo ignored when the request carries none)."""
        ignore_user = not req.has_user_info

        def ok(f: ResourceFilter) -> bool:
            if f.description_empty and (f.user_empty or ignore_user):
                return False  # "match cannot be empty"
            return not f.failures(req, ignore_user=ignore_user)

        if self.any:
            return any(ok(f) for f in self.any)
        if self.all:
            return all(ok(f) for f in self.all)
        return self.inline is not None and ok(self.inline)

    def excludes(self, req: Request) -> bool:
        """Rule ``exclude`` semantics."""
        if self.empty:
            return False

        def hit(f: ResourceFilter) -> bool:
            if f.description_empty and f.user_empty:
                return False
            return not f.failures(req)

        if self.any:
            return any(hit(f) for f in self.any)
        if self.all:
            return all(hit(f) for f in self.all)
        return self.inline is not None and hit(self.inline)

    def matches_exception(self, req: Request) -> bool:
        """PolicyException ``spec.match`` semantics (no operations check)."""

        def ok(f: ResourceFilter) -> bool:
            if f.description_empty and f.user_empty:
                return False
            return not f.failures(req, check_operations=False)

        if self.any:
            return any(ok(f) for f in self.any)
        if self.all:
            return all(ok(f) for f in self.all)
        return False
