"""Helpers on object dicts: cloning, timestamps, validation and per-kind defaulting."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import sys
import time
from typing import Any

from .errors import ApiError, bad_request, cause, invalid
from .resources import ResourceType

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME_KINDS = frozenset({"Namespace", "Service"})
_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def clone(value: Any) -> Any:
    """A deep copy of JSON data (much faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


_EMPTY: dict[str, Any] = {}  # shared by every stored empty map (stored objects are never changed in place)


def compact(value: Any) -> Any:
    """A copy of JSON data whose keys and short strings are interned, shared by all stored objects."""
    if isinstance(value, dict):
        return {sys.intern(k): compact(v) for k, v in value.items()} if value else _EMPTY
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, str) and len(value) <= 40:
        return sys.intern(value)
    return value


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def generated_name(prefix: str) -> str:
    """``metadata.generateName`` plus 5 random characters; a prefix longer than 58 characters is cut to 58
    first, as the API server's name generator does (so the name fits a 63-character label)."""
    return prefix[:58] + "".join(secrets.choice(_GEN_CHARS) for _ in range(5))


def validate_name(rt: ResourceType, name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise invalid(
            rt.kind,
            rt.group,
            "",
            [
                cause(
                    "FieldValueRequired", "metadata.name", "Required value: name or generateName is required"
                )
            ],
        )
    label_only = rt.kind in _LABEL_NAME_KINDS
    ok = bool((_LABEL if label_only else _SUBDOMAIN).match(name)) and len(name) <= (63 if label_only else 253)
    if not ok:
        what = "RFC 1123 label" if label_only else "RFC 1123 subdomain"
        example, regex = (
            (("my-name", "123-abc"), _LABEL.pattern) if label_only else (("example.com",), _SUBDOMAIN.pattern)
        )
        examples = ", ".join(f"'{e}'" for e in example)
        msg = (
            f'Invalid value: "{name}": a lowercase {what} must consist of lower case alphanumeric '
            "characters, '-'"
            + ("" if label_only else " or '.'")
            + ", and must start and end with an alphanumeric character"
            + f" (e.g. {examples}, regex used for validation is '{regex.strip('^$')}')"
        )
        raise invalid(rt.kind, rt.group, name, [cause("FieldValueInvalid", "metadata.name", msg)])


def validate_metadata(rt: ResourceType, obj: dict[str, Any]) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise bad_request("Object 'metadata' is missing or not an object")
    for fld in ("labels", "annotations"):
        value = meta.get(fld)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad_request(
                f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{fld} "
                "of type map[string]string (values must be strings)"
            )
    fin = meta.get("finalizers")
    if fin is not None and (not isinstance(fin, list) or not all(isinstance(f, str) for f in fin)):
        raise bad_request("metadata.finalizers must be a list of strings")


def check_kind(rt: ResourceType, obj: dict[str, Any], version: str, required: bool = False) -> None:
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if required and (not kind or not api_version):
        raise bad_request("Object 'Kind' is missing" if not kind else "Object 'apiVersion' is missing")
    if kind and kind != rt.kind:
        raise bad_request(f"the kind of the object ({kind}) does not match the resource ({rt.kind})")
    if api_version and api_version not in {rt.api_version(v) for v in rt.served_versions}:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({rt.api_version(version)})"
        )


def spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything that counts for metadata.generation (all but metadata, status, apiVersion, kind)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _default_ports(ports: Any, service: bool) -> None:
    if not isinstance(ports, list):
        return
    for p in ports:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if service and "port" in p:
                p.setdefault("targetPort", p["port"])


def _pull_policy(image: Any) -> str:
    ref = str(image).rsplit("/", 1)[-1]
    if "@" in ref:
        return "IfNotPresent"
    tag = ref.split(":", 1)[1] if ":" in ref else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _default_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_ports(c.get("ports"), service=False)
                c.setdefault("resources", {})
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                if "image" in c:
                    c.setdefault("imagePullPolicy", _pull_policy(c["image"]))
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


# spec defaults of the workload kinds (as kube-apiserver 1.37 fills them in)
_WORKLOAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "Deployment": {
        "progressDeadlineSeconds": 600,
        "revisionHistoryLimit": 10,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    },
    "StatefulSet": {
        "podManagementPolicy": "OrderedReady",
        "revisionHistoryLimit": 10,
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
    },
    "DaemonSet": {
        "revisionHistoryLimit": 10,
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
    },
    "Job": {
        "backoffLimit": 6,
        "completionMode": "NonIndexed",
        "suspend": False,
        "podReplacementPolicy": "TerminatingOrFailed",
    },
    "CronJob": {
        "concurrencyPolicy": "Allow",
        "failedJobsHistoryLimit": 1,
        "successfulJobsHistoryLimit": 3,
        "suspend": False,
    },
}


def _default_workload(kind: str, spec: dict[str, Any]) -> None:
    for key, value in _WORKLOAD_DEFAULTS.get(kind, {}).items():
        if key not in spec:
            spec[key] = clone(value)
    if kind == "Job":
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)


def default_status(rt: ResourceType) -> dict[str, Any]:
    """The status a new object of a built-in kind with a status subresource starts with."""
    if rt.kind == "Service":
        return {"loadBalancer": {}}
    if rt.kind == "PersistentVolumeClaim":
        return {"phase": "Pending"}
    return {}


def apply_defaults(rt: ResourceType, obj: dict[str, Any], state: Any) -> None:
    """The defaults the apiserver fills in that clients commonly read back (in place)."""
    if not rt.builtin:
        return
    kind = rt.kind
    spec = obj.get("spec")
    if kind in ("Deployment", "StatefulSet", "ReplicaSet") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job") and isinstance(spec, dict):
        _default_workload(kind, spec)
        template = spec.get("template")
        if isinstance(template, dict):
            _default_pod_spec(template.get("spec"))
    elif kind == "CronJob" and isinstance(spec, dict):
        _default_workload(kind, spec)
        job_template = (spec.get("jobTemplate") or {}).get("spec") or {}
        if job_template:
            _default_workload("Job", job_template)
        _default_pod_spec((job_template.get("template") or {}).get("spec"))
    elif kind == "Pod":
        _default_pod_spec(spec)
    elif kind == "Service" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        if spec["type"] != "ExternalName":
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        _default_ports(spec.get("ports"), service=True)
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            spec["clusterIP"] = state.allocate_ip()
        if spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict):
            data = obj.setdefault("data", {}) or {}
            obj["data"] = data
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
        for k, v in (obj.get("data") or {}).items():
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise invalid(
                    "Secret",
                    "",
                    obj["metadata"].get("name", ""),
                    [cause("FieldValueInvalid", f"data[{k}]", "Invalid value: illegal base64 data")],
                ) from None
    elif kind == "Namespace":
        meta = obj["metadata"]
        labels = dict(meta.get("labels") or {})
        labels["kubernetes.io/metadata.name"] = meta["name"]
        meta["labels"] = labels
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Terminating" if meta.get("deletionTimestamp") else "Active"}


def crd_status(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    names = dict(spec.get("names") or {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict)]
    storage = [v.get("name") for v in versions if v.get("storage")] or [v.get("name") for v in versions[:1]]
    old = obj.get("status") or {}
    ts = now()
    prior = {c.get("type"): c.get("lastTransitionTime") for c in old.get("conditions") or []}
    return {
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": prior.get("NamesAccepted", ts),
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": prior.get("Established", ts),
            },
        ],
        "acceptedNames": names,
        "storedVersions": sorted(set(old.get("storedVersions") or []) | set(storage)),
    }


def require_crd_name(obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    name = obj["metadata"].get("name", "")
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if not (spec.get("group") and names.get("plural") and names.get("kind") and spec.get("versions")):
        raise invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            [
                cause(
                    "FieldValueRequired",
                    "spec",
                    "Required value: group, names.plural, names.kind and versions",
                )
            ],
        )
    if name != expected:
        raise invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            [
                cause(
                    "FieldValueInvalid",
                    "metadata.name",
                    f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                )
            ],
        )


def present(obj: dict[str, Any], rt: ResourceType, version: str) -> dict[str, Any]:
    """The object as served at ``version`` (custom resources are stored once for all versions)."""
    api_version = rt.api_version(version)
    if obj.get("apiVersion") == api_version:
        return obj
    out = dict(obj)
    out["apiVersion"] = api_version
    return out


__all__ = [
    "ApiError",
    "apply_defaults",
    "check_kind",
    "clone",
    "crd_status",
    "generated_name",
    "now",
    "present",
    "require_crd_name",
    "spec_part",
    "validate_metadata",
    "validate_name",
]


def omit_empty(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Built-in objects are typed Go structs in kube-apiserver: empty omitempty maps and lists vanish."""
    meta = obj["metadata"]
    for key in ("labels", "annotations", "finalizers", "ownerReferences"):
        if key in meta and not meta[key]:
            del meta[key]
    if rt.kind in ("ConfigMap", "Secret"):
        for key in ("data", "binaryData"):
            if key in obj and not obj[key]:
                del obj[key]


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


def same_meta(old: dict[str, Any], new: dict[str, Any], encoded: list[dict[str, Any]]) -> bool:
    om, nm = old["metadata"], new["metadata"]
    keys = ("labels", "annotations", "finalizers", "ownerReferences", "deletionTimestamp")
    if any(om.get(k) != nm.get(k) for k in keys):
        return False
    return managers_key(om.get("managedFields") or []) == managers_key(encoded)


def managers_key(entries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Managed fields without their times, to tell a no-op write (which keeps the old entries)."""
    return sorted(
        (
            e["manager"],
            e["operation"],
            e.get("apiVersion", ""),
            e.get("subresource", ""),
            json.dumps(e.get("fieldsV1"), sort_keys=True),
        )
        for e in entries
    )
