"""Kubernetes object helpers shared by the formats: identity, scope, label selectors, inventory."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clusters.labelmatch import requirements_match
from policies.formats import FormatError

# Built-in cluster-scoped kinds. Everything else is treated as namespaced.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CSIDriver",
        "CSINode",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ComponentStatus",
        "ConstraintTemplate",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PodSecurityPolicy",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
        "ClusterIssuer",
        "DeviceClass",
    }
)


@dataclass(frozen=True)
class ObjectId:
    api_version: str
    group: str
    version: str
    kind: str
    namespace: str  # "" for cluster-scoped objects
    name: str

    @property
    def cluster_scoped(self) -> bool:
        return self.namespace == ""


def object_id(obj: Mapping[str, Any], default_namespace: str = "default") -> ObjectId:
    if not isinstance(obj, Mapping):
        raise FormatError("a Kubernetes object must be a mapping")
    api_version = str(obj.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    kind = str(obj.get("kind") or "")
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or meta.get("generateName") or "") if isinstance(meta, Mapping) else ""
    if kind in CLUSTER_SCOPED_KINDS:
        namespace = ""
    else:
        namespace = str((meta.get("namespace") if isinstance(meta, Mapping) else None) or default_namespace)
    return ObjectId(api_version, group, version, kind, namespace, name)


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


def glob_match(pattern: str, value: str) -> bool:
    """Gatekeeper-style wildcard: ``*`` anywhere (``kube-*``, ``*-system``)."""
    if "*" not in pattern:
        return pattern == value
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]").replace("?", "[?]"))


@dataclass(frozen=True)
class LabelSelector:
    """``metav1.LabelSelector``: matchLabels AND every matchExpression (In, NotIn, Exists, DoesNotExist)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, raw: Any, where: str) -> LabelSelector | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise FormatError(f"{where} must be a mapping with matchLabels/matchExpressions")
        labels = raw.get("matchLabels") or {}
        if not isinstance(labels, Mapping):
            raise FormatError(f"{where}.matchLabels must be a mapping")
        exprs: list[tuple[str, str, tuple[str, ...]]] = []
        for i, expr in enumerate(raw.get("matchExpressions") or []):
            if not isinstance(expr, Mapping) or "key" not in expr or "operator" not in expr:
                raise FormatError(f"{where}.matchExpressions[{i}] needs key and operator")
            op = str(expr["operator"])
            values = tuple(str(v) for v in expr.get("values") or [])
            if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
                raise FormatError(
                    f"{where}.matchExpressions[{i}].operator {op!r} is not In/NotIn/Exists/DoesNotExist"
                )
            if op in ("In", "NotIn") and not values:
                raise FormatError(f"{where}.matchExpressions[{i}] with {op} needs values")
            exprs.append((str(expr["key"]), op, values))
        return cls(tuple(sorted((str(k), str(v)) for k, v in labels.items())), tuple(exprs))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return requirements_match(self.match_labels, self.match_expressions, labels)


def build_inventory(
    objects: Iterable[Mapping[str, Any]], default_namespace: str = "default"
) -> dict[str, Any]:
    """Gatekeeper's ``data.inventory``: ``namespace[ns][groupVersion][kind][name]`` and
    ``cluster[groupVersion][kind][name]``, from the objects rendered for one cluster."""
    namespaced: dict[str, Any] = {}
    cluster: dict[str, Any] = {}
    for obj in objects:
        oid = object_id(obj, default_namespace)
        if not oid.kind or not oid.name:
            continue
        if oid.cluster_scoped:
            cluster.setdefault(oid.api_version, {}).setdefault(oid.kind, {})[oid.name] = obj
        else:
            ns = namespaced.setdefault(oid.namespace, {})
            ns.setdefault(oid.api_version, {}).setdefault(oid.kind, {})[oid.name] = obj
    return {"namespace": namespaced, "cluster": cluster}
