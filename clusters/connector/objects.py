"""Object references, tracking metadata, apply order and the normal form used by plans and drift."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

MANAGER = "fleetgate"
TRACKING_ANNOTATION = "fleetgate.io/tracking-id"
PRUNE_ANNOTATION = "fleetgate.io/prune"
ARGO_SYNC_OPTIONS = "argocd.argoproj.io/sync-options"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "fleetgate"
MASK = "***"

# Kinds applied first, in this order, and in the same spirit as Helm's install order for the rest.
FIRST_KINDS = ("Namespace", "CustomResourceDefinition")
# Deleting one of these deletes what it holds (a namespace's objects, a CRD's custom resources).
CASCADING_KINDS = ("Namespace", "CustomResourceDefinition")
KIND_ORDER = (
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Ingress",
    "NetworkPolicy",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)
_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}
_CUSTOM_RANK = _RANK["Ingress"]  # custom resources go after the built-in workloads

# Fields the server sets; never part of a plan diff or drift.
SERVER_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
SERVER_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
)


class ManifestError(ValueError):
    """An object that cannot be applied as given (no kind, no name...)."""


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Which object: ``apiVersion``, ``kind``, ``namespace`` ("" for cluster-scoped), ``name``."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity regardless of the API version it is served at."""
        return (self.group, self.kind, self.namespace, self.name)

    def tracking_id(self, mapping: str) -> str:
        return f"{mapping}:{self.group}/{self.kind}/{self.namespace}/{self.name}"

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"

    def to_dict(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectRef:
        return cls(
            str(data.get("apiVersion", "")),
            str(data.get("kind", "")),
            str(data.get("namespace") or ""),
            str(data.get("name", "")),
        )

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("namespace") or ""),
            str(meta.get("name", "")),
        )


def check_manifest(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise ManifestError("an object must be a mapping")
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str) or not obj.get(key):
            raise ManifestError(f"the object has no {key}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise ManifestError(f"the {obj['kind']} has no metadata")
    name, generate = meta.get("name"), meta.get("generateName")
    if isinstance(name, str) and name:
        return
    if name is None and isinstance(generate, str) and generate:
        return  # named by the server when it is created (hooks.py)
    raise ManifestError(f"the {obj['kind']} has no metadata.name")


def rank(obj: dict[str, Any]) -> int:
    return _RANK.get(str(obj.get("kind", "")), _CUSTOM_RANK)


def sort_for_apply(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stable sort: Namespaces, CRDs, then the rest by kind (custom resources after workloads)."""
    return sorted(objects, key=rank)


def with_tracking(obj: dict[str, Any], mapping: str, ref: ObjectRef) -> dict[str, Any]:
    """A copy of ``obj`` with Fleetgate's tracking annotation and managed-by label."""
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    meta.setdefault("annotations", {})
    meta["annotations"] = dict(meta["annotations"] or {})
    meta["annotations"][TRACKING_ANNOTATION] = ref.tracking_id(mapping)
    meta["labels"] = dict(meta.get("labels") or {})
    meta["labels"][MANAGED_BY_LABEL] = MANAGED_BY_VALUE
    if ref.namespace:
        meta["namespace"] = ref.namespace
    else:
        meta.pop("namespace", None)
    return out


def annotations_of(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def prune_disabled(obj: dict[str, Any]) -> bool:
    notes = annotations_of(obj)
    if notes.get(PRUNE_ANNOTATION, "").strip().lower() in ("disabled", "false"):
        return True
    options = [o.strip() for o in notes.get(ARGO_SYNC_OPTIONS, "").split(",")]
    return "Prune=false" in options


def owned_by(obj: dict[str, Any], mapping: str, ref: ObjectRef) -> bool:
    return annotations_of(obj).get(TRACKING_ANNOTATION) == ref.tracking_id(mapping)


def normalize(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object without server-managed fields and status (what plans and drift compare)."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    notes = meta.get("annotations")
    if notes:
        for key in SERVER_ANNOTATIONS:
            notes.pop(key, None)
        if not notes:
            meta.pop("annotations", None)
    if "labels" in meta and not meta["labels"]:
        meta.pop("labels")
    return out


def is_secret(obj: dict[str, Any] | None) -> bool:
    return bool(obj) and obj.get("kind") == "Secret" and (obj.get("apiVersion") == "v1")  # type: ignore[union-attr]


def mask_secret_pair(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Replace Secret values by markers that show which keys changed but never a value."""
    if not is_secret(before) and not is_secret(after):
        return before, after

    def values(obj: dict[str, Any] | None) -> dict[str, Any]:
        if not obj:
            return {}
        merged = dict(obj.get("data") or {})
        merged.update({k: ("s", v) for k, v in (obj.get("stringData") or {}).items()})
        return merged

    old_values, new_values = values(before), values(after)

    def masked(obj: dict[str, Any] | None, changed_marker: bool) -> dict[str, Any] | None:
        if obj is None:
            return None
        out = copy.deepcopy(obj)
        for section in ("data", "stringData"):
            if out.get(section):
                out[section] = {
                    k: f"{MASK} (changed)"
                    if changed_marker and k in old_values and old_values[k] != new_values.get(k)
                    else MASK
                    for k in out[section]
                }
        notes = (out.get("metadata") or {}).get("annotations") or {}
        if "kubectl.kubernetes.io/last-applied-configuration" in notes:
            notes["kubectl.kubernetes.io/last-applied-configuration"] = MASK
        return out

    return masked(before, False), masked(after, True)

