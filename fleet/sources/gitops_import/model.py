"""What an import plans: repositories, cluster groups and mappings to create, and what of the source
cannot be expressed (listed by name, never dropped). Plain dataclasses, no database."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from fleet.core.errors import DomainError, ErrorKind


class ImportError_(DomainError):
    """The documents cannot be imported (malformed YAML, unknown kind, a missing target); 400."""

    def __init__(self, message: str, *, kind: ErrorKind = ErrorKind.INVALID, field: str | None = None,
                 errors: list[str] | None = None) -> None:
        super().__init__(message, kind=kind, field=field)
        self.errors = errors or [message]


@dataclass(frozen=True)
class Source:
    """Where a planned item came from: the document's kind and name, and the file (and the line where the
    document starts, for errors)."""

    kind: str
    name: str
    file: str = ""
    line: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}" + (f" ({self.file})" if self.file else "")

    def at(self) -> str:
        """``file:line kind/name``: where an error points."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where + ' ' if where else ''}{self.kind}/{self.name}"


def malformed(src: Source, setting: str, problem: str) -> ImportError_:
    """The importer's 400 for a document it cannot read as written, naming the file, the document (its line,
    kind and name) and the setting."""
    return ImportError_(f"{src.at()}: {setting}: {problem}", field="documents")


def _type_name(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def as_object(value: Any, src: Source, setting: str) -> dict[str, Any]:
    """``value`` when it is an object, {} when absent (None); else the importer's 400 naming ``setting``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(src, setting, f"must be an object, not {_type_name(value)}")
    return value


def as_list(value: Any, src: Source, setting: str) -> list[Any]:
    """``value`` when it is a list, [] when absent (None); else the importer's 400 naming ``setting``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise malformed(src, setting, f"must be a list, not {_type_name(value)}")
    return value


@dataclass
class RepositorySpec:
    name: str
    url: str
    branch: str
    poll_interval: int | None = None
    source: str = ""


@dataclass
class GroupSpec:
    """A cluster group: an existing one by name (``existing``), or a new one by selector and/or named
    clusters (Fleetgate's include list)."""

    name: str
    selector: dict[str, Any] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)
    existing: bool = False
    prune: bool | None = None
    self_heal: bool | None = None
    source: str = ""

    def definition(self) -> tuple[str, str, bool | None, bool | None]:
        return (repr(sorted(self.selector.items())), repr(sorted(self.include)), self.prune, self.self_heal)


@dataclass
class MappingSpec:
    name: str
    repository: str  # RepositorySpec.name
    path: str
    group: str  # GroupSpec.name
    renderer: str = "auto"
    values: dict[str, Any] = field(default_factory=dict)
    target_namespace: str = ""
    enabled: bool = True
    postbuild: dict[str, str] | None = None
    depends_on: list[str] = field(default_factory=list)  # mapping names of this import, or repo/mapping
    options: dict[str, Any] = field(default_factory=dict)  # settings that need fields others add
    source: str = ""


@dataclass
class Finding:
    """A setting of the source that the import did not carry over, or carried over approximately."""

    source: str
    setting: str
    reason: str


@dataclass
class SecretReference:
    """A Secret the source refers to: never imported, listed so that its owner can set it up."""

    source: str
    setting: str
    name: str
    use: str


@dataclass
class Plan:
    repositories: list[RepositorySpec] = field(default_factory=list)
    groups: list[GroupSpec] = field(default_factory=list)
    mappings: list[MappingSpec] = field(default_factory=list)
    unsupported: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    secrets: list[SecretReference] = field(default_factory=list)
    skipped: list[Finding] = field(default_factory=list)  # whole items that became nothing, and why

    # Each finding once (an ApplicationSet's template meets the same setting for every generated item).
    def unsupported_(self, source: Any, setting: str, reason: str) -> None:
        _once(self.unsupported, Finding(str(source), setting, reason))

    def note(self, source: Any, setting: str, reason: str) -> None:
        _once(self.notes, Finding(str(source), setting, reason))

    def skip(self, source: Any, setting: str, reason: str) -> None:
        _once(self.skipped, Finding(str(source), setting, reason))

    def secret(self, source: Any, setting: str, name: str, use: str) -> None:
        _once(self.secrets, SecretReference(str(source), setting, name, use))

    def add_repository(self, spec: RepositorySpec) -> RepositorySpec:
        refuse_password(spec.url, spec.source)
        for known in self.repositories:
            if same_url(known.url, spec.url) and known.branch == spec.branch:
                return known
        taken = {r.name for r in self.repositories}
        spec.name = unique(spec.name, taken)
        self.repositories.append(spec)
        return spec

    def add_group(self, spec: GroupSpec) -> GroupSpec:
        for known in self.groups:
            if spec.existing and known.existing and known.name == spec.name:
                return known
            if not spec.existing and not known.existing and known.definition() == spec.definition():
                return known
        taken = {g.name for g in self.groups if not g.existing or spec.existing}
        if not spec.existing:
            spec.name = unique(spec.name, taken)
        self.groups.append(spec)
        return spec

    def add_mapping(self, spec: MappingSpec) -> MappingSpec:
        taken = {m.name for m in self.mappings if m.repository == spec.repository}
        spec.name = unique(spec.name, taken)
        self.mappings.append(spec)
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {
            "repositories": [asdict(r) for r in self.repositories],
            "groups": [asdict(g) for g in self.groups],
            "mappings": [asdict(m) for m in self.mappings],
            "unsupported": [asdict(f) for f in self.unsupported],
            "notes": [asdict(f) for f in self.notes],
            "secrets": [asdict(s) for s in self.secrets],
            "skipped": [asdict(f) for f in self.skipped],
        }


def refuse_password(url: str, source: Any) -> None:
    """A source URL with a password is refused before anything reads it, and never echoed."""
    from fleet.sources.validators import CREDENTIALS_MESSAGE, url_has_password

    if url_has_password(url):
        raise ImportError_(f"{source}: the repository URL holds a password. {CREDENTIALS_MESSAGE}",
                           field="documents")


def _once(items: list[Any], item: Any) -> None:
    if item not in items:
        items.append(item)


_SLUG = re.compile(r"[^a-z0-9-]+")


def slug(*parts: str, limit: int = 63) -> str:
    """A DNS label from ``parts`` (lower case, ``-`` between; a hash keeps long names unique)."""
    text = "-".join(p for p in parts if p)
    s = _SLUG.sub("-", text.lower().replace("/", "-").replace("_", "-").replace(".", "-")).strip("-")
    s = re.sub(r"-{2,}", "-", s) or "root"
    if len(s) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        s = s[: limit - 9].rstrip("-") + "-" + digest
    return s


def unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    for i in range(2, 1000):
        candidate = slug(name, str(i))
        if candidate not in taken:
            return candidate
    raise ImportError_(f"too many items named {name!r}")


def same_url(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        u = u.strip().rstrip("/")
        return u[:-4] if u.endswith(".git") else u

    return norm(a).lower() == norm(b).lower()


def walk_unknown(plan: Plan, source: Any, data: Any, handled: set[str], prefix: str) -> None:
    """List every key of ``data`` not in ``handled`` as unsupported (a key written is never dropped)."""
    if not isinstance(data, dict):
        return
    for key in data:
        if key not in handled:
            plan.unsupported_(source, f"{prefix}.{key}" if prefix else str(key),
                              "not expressible in Fleetgate; not imported")
