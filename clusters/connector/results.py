"""Plain result types of connector operations; ``to_dict()`` gives JSON for the database or the API."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from clusters.connector.errors import FieldConflict
from clusters.connector.objects import ObjectRef

# apply/prune actions
CREATED, CONFIGURED, UNCHANGED, DELETED, SKIPPED, FAILED = (
    "created",
    "configured",
    "unchanged",
    "deleted",
    "skipped",
    "failed",
)
# plan actions
CREATE, UPDATE, DELETE, NOOP, CONFLICT, ERROR = (
    "create",
    "update",
    "delete",
    "unchanged",
    "conflict",
    "failed",
)
# health states
HEALTHY, PROGRESSING, DEGRADED, MISSING = "Healthy", "Progressing", "Degraded", "Missing"


def _plain(value: Any) -> Any:
    if isinstance(value, ObjectRef):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("plain", True)
        }
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _Dict:
    def to_dict(self) -> dict[str, Any]:
        return _plain(self)  # type: ignore[no-any-return]


@dataclass
class Connectivity(_Dict):
    reachable: bool
    version: str = ""
    error: str = ""
    platform: str = ""


@dataclass
class ObjectResult(_Dict):
    ref: ObjectRef
    action: str
    message: str = ""
    status: int | None = None
    conflicts: list[FieldConflict] = field(default_factory=list)
    kept: bool = False  # a prune skipped by policy: the object stays in the inventory
    #: where the object ran in the sync (hooks.Step.to_dict: phase, wave, hook, delete policies, generated)
    step: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.action == FAILED


@dataclass
class SyncResult(_Dict):
    """What an apply did: per-object results (prune included), the new inventory, the applied bodies."""

    results: list[ObjectResult] = field(default_factory=list)
    inventory: list[dict[str, str]] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    #: each applied object's health as the server's answer to its apply showed it (by ref key): the first
    #: health poll does not read again what was Healthy then. Kept in memory only (no bodies, not stored).
    observed: dict[tuple[str, str, str, str], ObjectHealth] = field(
        default_factory=dict, repr=False, metadata={"plain": False}
    )

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(r.action for r in self.results))

    @property
    def conflicts(self) -> list[ObjectResult]:
        return [r for r in self.results if r.conflicts]

    def result(self, kind: str, name: str, namespace: str = "") -> ObjectResult:
        for r in self.results:
            if r.ref.kind == kind and r.ref.name == name and (not namespace or r.ref.namespace == namespace):
                return r
        raise KeyError(f"no result for {kind} {namespace}/{name}")


@dataclass
class PlanItem(_Dict):
    ref: ObjectRef
    action: str
    diff: str = ""
    message: str = ""
    conflicts: list[FieldConflict] = field(default_factory=list)
    #: where the object runs in the sync (hooks.Step.to_dict); empty for a delete (prune)
    step: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan(_Dict):
    items: list[PlanItem] = field(default_factory=list)
    #: Helm hooks: "install" or "upgrade" (which of the chart's hooks run); "" without Helm hooks
    helm_operation: str = ""

    @property
    def counts(self) -> dict[str, int]:
        counts = {CREATE: 0, UPDATE: 0, DELETE: 0, NOOP: 0, CONFLICT: 0, ERROR: 0}
        for item in self.items:
            counts[item.action] += 1
        return counts

    @property
    def ok(self) -> bool:
        return not any(i.action in (CONFLICT, ERROR) for i in self.items)

    @property
    def diff(self) -> str:
        return "".join(i.diff for i in self.items if i.diff)

    def item(self, kind: str, name: str) -> PlanItem:
        for i in self.items:
            if i.ref.kind == kind and i.ref.name == name:
                return i
        raise KeyError(f"no plan item for {kind} {name}")

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The sync's steps in the order they run: ``{phase, wave, objects: [str], hooks: n}`` per phase
        and wave (Namespaces and CRDs, applied before everything else, are a first step of their own,
        ``first: true``); prunes are the last step of the Sync phase."""
        groups: dict[tuple[Any, ...], dict[str, Any]] = {}
        order = {"PreSync": 0, "Sync": 1, "PostSync": 3, "SyncFail": 4}
        for item in self.items:
            step = item.step
            if item.action == DELETE and not step:
                key: tuple[Any, ...] = (2, 0, "prune")
                group = groups.setdefault(key, {"phase": "Sync", "wave": None, "prune": True, "objects": []})
            elif step.get("phase"):
                first = bool(step.get("first"))
                key = (-1, 0, "first") if first else (order[step["phase"]], step["wave"], "")
                group = groups.setdefault(key, {
                    "phase": step["phase"], "wave": None if first else step["wave"], "objects": [],
                    **({"first": True} if first else {}),
                })
            else:
                continue
            group["objects"].append(str(item.ref))
            if step.get("hook"):
                group["hooks"] = group.get("hooks", 0) + 1
        return [groups[k] for k in sorted(groups)]

    def to_dict(self) -> dict[str, Any]:
        out = {"items": _plain(self.items), "counts": self.counts, "ok": self.ok}
        if any(i.step.get("hook") or i.step.get("generated") or i.step.get("wave") for i in self.items):
            out["steps"] = self.steps
        if self.helm_operation:
            out["helm_operation"] = self.helm_operation
        return out


@dataclass
class LiveObject:
    """A manifest's live counterpart: ``index`` in the manifests given, the resolved reference, the live
    object (None: absent, or its kind is not served yet)."""

    index: int
    ref: ObjectRef
    live: dict[str, Any] | None


@dataclass
class LiveState:
    """What the cluster holds now for one sync: the live object of each manifest and the objects the sync
    would prune (with their live state). The reads a plan makes, usable by the policy gate and the plan."""

    objects: list[LiveObject] = field(default_factory=list)
    prunes: list[tuple[ObjectRef, dict[str, Any]]] = field(default_factory=list)
    #: prune candidates kept (not owned, annotation, cascading kinds), with the reason, for the plan
    kept: list[tuple[ObjectRef, dict[str, Any] | None, str]] = field(default_factory=list)

    def by_key(self) -> dict[tuple[str, str, str, str], dict[str, Any] | None]:
        return {o.ref.key: o.live for o in self.objects}


@dataclass
class ObjectHealth(_Dict):
    ref: ObjectRef
    state: str
    reason: str = ""
    message: str = ""


@dataclass
class HealthReport(_Dict):
    state: str
    reason: str = ""
    objects: list[ObjectHealth] = field(default_factory=list)
    timed_out: bool = False

    def of(self, kind: str, name: str) -> ObjectHealth:
        for o in self.objects:
            if o.ref.kind == kind and o.ref.name == name:
                return o
        raise KeyError(f"no health for {kind} {name}")


@dataclass
class FieldDrift(_Dict):
    path: str
    expected: Any
    actual: Any
    managers: list[str] = field(default_factory=list)  # who owns the field now (from managedFields)


@dataclass
class ObjectDrift(_Dict):
    ref: ObjectRef
    state: str  # "changed" or "deleted"
    fields: list[FieldDrift] = field(default_factory=list)
    message: str = ""


@dataclass
class DriftReport(_Dict):
    objects: list[ObjectDrift] = field(default_factory=list)
    checked: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.objects)

    def of(self, kind: str, name: str) -> ObjectDrift | None:
        return next((o for o in self.objects if o.ref.kind == kind and o.ref.name == name), None)
