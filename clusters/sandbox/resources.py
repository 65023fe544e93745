"""Resource types the sandbox serves, and the discovery documents built from them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUB_VERBS = ["get", "patch", "update"]


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str
    version: str  # the preferred (storage) version
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    categories: tuple[str, ...] = ()
    builtin: bool = True
    versions: tuple[str, ...] = field(default=())  # served versions (custom resources); () = (version,)
    has_scale: bool = False
    generation: bool = True  # whether metadata.generation is kept (not for most core/v1 kinds)
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)  # CRD openAPIV3Schema

    @property
    def merge_rules(self) -> bool | dict[str, Any]:
        """What server-side apply merges lists by: True (built-in rules) or the CRD schema (or False)."""
        return True if self.builtin else (self.schema or False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def served_versions(self) -> tuple[str, ...]:
        return self.versions or (self.version,)

    def api_version(self, version: str | None = None) -> str:
        v = version or self.version
        return f"{self.group}/{v}" if self.group else v

    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery_entries(self) -> list[dict[str, Any]]:
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.has_status:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": SUB_VERBS,
                }
            )
        if self.has_scale:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": SUB_VERBS,
                }
            )
        return entries


# Built-in kinds whose objects carry metadata.generation (custom resources always do).
_GENERATION = frozenset(
    {
        "pods",
        "deployments",
        "statefulsets",
        "daemonsets",
        "replicasets",
        "jobs",
        "cronjobs",
        "ingresses",
        "networkpolicies",
        "ingressclasses",
        "poddisruptionbudgets",
        "horizontalpodautoscalers",
        "customresourcedefinitions",
    }
)
_SCALE = frozenset({"deployments", "statefulsets", "replicasets"})


def _t(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    all_cat: bool = False,
) -> ResourceType:
    return ResourceType(
        group,
        version,
        plural,
        kind.lower(),
        kind,
        namespaced,
        short,
        status,
        ("all",) if all_cat else (),
        has_scale=plural in _SCALE,
        generation=plural in _GENERATION,
    )


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _t("", "v1", "namespaces", "Namespace", False, ("ns",), True),
    _t("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _t("", "v1", "secrets", "Secret"),
    _t("", "v1", "services", "Service", short=("svc",), status=True, all_cat=True),
    _t("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _t("", "v1", "pods", "Pod", short=("po",), status=True, all_cat=True),
    _t("", "v1", "events", "Event", short=("ev",)),
    _t("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), status=True),
    _t("", "v1", "nodes", "Node", False, ("no",), True),
    _t("", "v1", "resourcequotas", "ResourceQuota", short=("quota",), status=True),
    _t("", "v1", "limitranges", "LimitRange", short=("limits",)),
    _t("apps", "v1", "deployments", "Deployment", short=("deploy",), status=True, all_cat=True),
    _t("apps", "v1", "statefulsets", "StatefulSet", short=("sts",), status=True, all_cat=True),
    _t("apps", "v1", "daemonsets", "DaemonSet", short=("ds",), status=True, all_cat=True),
    _t("apps", "v1", "replicasets", "ReplicaSet", short=("rs",), status=True, all_cat=True),
    _t("batch", "v1", "jobs", "Job", status=True, all_cat=True),
    _t("batch", "v1", "cronjobs", "CronJob", short=("cj",), status=True, all_cat=True),
    _t("networking.k8s.io", "v1", "ingresses", "Ingress", short=("ing",), status=True),
    _t("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=("netpol",)),
    _t("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    _t("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _t("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _t("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _t("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _t(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        True,
    ),
    _t("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",), status=True),
    _t(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short=("hpa",),
        status=True,
        all_cat=True,
    ),
)

BUILTIN_BY_KEY: dict[tuple[str, str], ResourceType] = {t.key: t for t in BUILTIN_TYPES}
# (group, version, plural) -> type, for routing
BUILTIN_ROUTES: dict[tuple[str, str, str], ResourceType] = {
    (t.group, t.version, t.plural): t for t in BUILTIN_TYPES
}
BUILTIN_GROUP_VERSIONS: dict[str, list[str]] = {}
for _rt in BUILTIN_TYPES:
    _versions = BUILTIN_GROUP_VERSIONS.setdefault(_rt.group, [])
    if _rt.version not in _versions:
        _versions.append(_rt.version)

KEY_BY_KIND: dict[tuple[str, str], ResourceType] = {(t.api_version(), t.kind): t for t in BUILTIN_TYPES}

NAMESPACES = BUILTIN_BY_KEY[("", "namespaces")]
CRDS = BUILTIN_BY_KEY[("apiextensions.k8s.io", "customresourcedefinitions")]
WORKLOAD_KEYS = frozenset(
    {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs")}
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def resource_list(group_version: str, types: list[ResourceType]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for t in sorted(types, key=lambda t: t.plural):
        resources.extend(t.discovery_entries())
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": vs, "preferredVersion": vs[0]}


# Discovery documents of the built-in types never change: serialise them once for all clusters.
BUILTIN_RESOURCE_LISTS: dict[tuple[str, str], bytes] = {}
for _g, _vs in BUILTIN_GROUP_VERSIONS.items():
    for _v in _vs:
        _types = [t for t in BUILTIN_TYPES if t.group == _g and t.version == _v]
        BUILTIN_RESOURCE_LISTS[(_g, _v)] = _dumps(resource_list(f"{_g}/{_v}" if _g else _v, _types))
BUILTIN_GROUPS: list[dict[str, Any]] = [group_entry(g, vs) for g, vs in BUILTIN_GROUP_VERSIONS.items() if g]
BUILTIN_GROUP_LIST: bytes = _dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": BUILTIN_GROUPS})


def custom_type_from_crd(crd: dict[str, Any]) -> ResourceType | None:
    """The resource type a CustomResourceDefinition declares, or None when it is incomplete."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group")
    plural = names.get("plural")
    kind = names.get("kind")
    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("served", True)]
    if not (group and plural and kind and versions):
        return None
    storage = next((v for v in versions if v.get("storage")), versions[0])
    has_status = any("status" in (v.get("subresources") or {}) for v in versions)
    return ResourceType(
        group=group,
        version=storage["name"],
        plural=plural,
        singular=names.get("singular") or kind.lower(),
        kind=kind,
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        has_status=has_status,
        categories=tuple(names.get("categories") or ()),
        builtin=False,
        versions=tuple(v["name"] for v in versions),
        schema=((storage.get("schema") or {}).get("openAPIV3Schema") or None),
    )
