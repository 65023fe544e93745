"""Rendered objects: validation, identity, namespace handling and deterministic order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import RenderError
from .k8slimits import LimitError, check_object

# Kinds that are cluster-scoped in Kubernetes; CRDs in the rendered set add their own (spec.scope).
CLUSTER_SCOPED_KINDS = frozenset({
    "APIService", "CertificateSigningRequest", "ClusterRole", "ClusterRoleBinding", "ComponentStatus",
    "CSIDriver", "CSINode", "CustomResourceDefinition", "FlowSchema", "IngressClass",
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration", "Namespace", "Node", "PersistentVolume", "PriorityClass",
    "PriorityLevelConfiguration", "RuntimeClass", "StorageClass", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration", "VolumeAttachment",
    "VolumeAttributesClass", "DeviceClass", "ResourceSlice", "ClusterTrustBundle",
})


@dataclass
class RawObject:
    """An object as a renderer produced it, with where it came from."""

    data: dict[str, Any]
    source: str  # repository-relative file (or the kustomization directory)
    document: int  # document index in that file / output stream
    line: int | None = None


@dataclass(frozen=True)
class RenderedObject:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    source: str
    document: int
    body: dict[str, Any]
    #: ``metadata.generateName`` of an object without a name: the server names it when it is created
    generate_name: str = ""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity of the object in a cluster: (group, kind, namespace or '', name). An object named by
        the server (``generateName``) has no identity before it is created: each document is its own
        object (two documents with the same ``generateName`` are two objects), so its key is the prefix
        followed by ``*`` and where it came from, never a valid Kubernetes name."""
        if not self.name:
            return (self.group, self.kind, self.namespace or "",
                    f"{self.generate_name}*{self.source}#{self.document}")
        return (self.group, self.kind, self.namespace or "", self.name)

    def sort_key(self) -> tuple[str, ...]:
        return (*self.key, self.api_version, self.source, f"{self.document:09d}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            **({"generateName": self.generate_name} if self.generate_name else {}),
            "namespace": self.namespace,
            "source": self.source,
            "document": self.document,
            "object": self.body,
        }


def validate_object(raw: RawObject) -> None:
    d = raw.data

    def err(message: str) -> RenderError:
        return RenderError(message, file=raw.source, document=raw.document, line=raw.line)

    if not isinstance(d, dict):
        raise err(f"document is a {type(d).__name__}, not a Kubernetes object mapping")
    for key in ("apiVersion", "kind"):
        if not isinstance(d.get(key), str) or not d.get(key):
            raise err(f"document has no {key}")
    meta = d.get("metadata")
    if not isinstance(meta, dict):
        raise err(f"{d['kind']} has no metadata")
    name = meta.get("name")
    generate = meta.get("generateName")
    if name is not None and not isinstance(name, str):
        raise err(f"{d['kind']}: metadata.name must be a string")
    if not name:
        # The API server names such an object when it is created (POST); the connector creates it
        # instead of applying it by name (clusters/connector/hooks.py).
        if generate is None:
            raise err(f"{d['kind']} has no metadata.name (nor metadata.generateName)")
        if not isinstance(generate, str) or not generate:
            raise err(f"{d['kind']}: metadata.generateName must be a non-empty string")
    ns = meta.get("namespace")
    if ns is not None and not isinstance(ns, str):
        raise err(f"{d['kind']} {name or generate}: metadata.namespace must be a string")


def flatten_lists(raws: Iterable[RawObject]) -> list[RawObject]:
    """Expand ``kind: List`` (v1) documents into their items, as kubectl does."""
    out: list[RawObject] = []
    for raw in raws:
        d = raw.data
        if isinstance(d, dict) and d.get("kind") == "List" and d.get("apiVersion") == "v1":
            items = d.get("items") or []
            if not isinstance(items, list):
                raise RenderError("List.items must be a list", file=raw.source, document=raw.document,
                                  line=raw.line)
            out.extend(RawObject(item, raw.source, raw.document, raw.line) for item in items)
        else:
            out.append(raw)
    return out


def cluster_scoped_kinds(raws: Iterable[RawObject]) -> set[str]:
    kinds = set(CLUSTER_SCOPED_KINDS)
    for raw in raws:
        d = raw.data
        if d.get("kind") == "CustomResourceDefinition":
            spec = d.get("spec") or {}
            names = spec.get("names") or {}
            if spec.get("scope") == "Cluster" and isinstance(names.get("kind"), str):
                kinds.add(names["kind"])
    return kinds


def normalize(raws: Iterable[RawObject], *, namespace_override: str | None = None,
              max_objects: int = 10_000) -> list[RenderedObject]:
    """Validate (Kubernetes' metadata limits too, see ``k8slimits``), apply a forced namespace, refuse
    duplicates, and sort deterministically."""
    raws = list(raws)
    if len(raws) > max_objects:
        raise RenderError(f"rendered {len(raws)} objects, more than the limit of {max_objects}")
    for raw in raws:
        validate_object(raw)
    scoped = cluster_scoped_kinds(raws)
    result: list[RenderedObject] = []
    seen: dict[tuple[str, str, str, str], RawObject] = {}
    for raw in raws:
        d = raw.data
        meta = d["metadata"]
        if d["kind"] in scoped:
            if meta.get("namespace"):
                d = {**d, "metadata": {k: v for k, v in meta.items() if k != "namespace"}}
                meta = d["metadata"]
        elif namespace_override:
            d = {**d, "metadata": {**meta, "namespace": namespace_override}}
            meta = d["metadata"]
        try:
            check_object(d)
        except LimitError as exc:
            raise RenderError(f"{d['kind']} {(meta.get('name') or meta['generateName'])[:80]}: {exc}",
                              file=raw.source,
                              document=raw.document, line=raw.line) from None
        obj = RenderedObject(
            api_version=d["apiVersion"], kind=d["kind"], name=meta.get("name") or "",
            namespace=meta.get("namespace") or None, source=raw.source, document=raw.document,
            body=d, generate_name="" if meta.get("name") else str(meta["generateName"]),
        )
        if obj.key in seen:
            first = seen[obj.key]
            raise RenderError(
                f"duplicate object {obj.kind} {obj.namespace + '/' if obj.namespace else ''}{obj.name} "
                f"(also in {first.source}, document {first.document})",
                file=raw.source, document=raw.document, line=raw.line)
        seen[obj.key] = raw
        result.append(obj)
    result.sort(key=RenderedObject.sort_key)
    return result


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("labels") or {}
