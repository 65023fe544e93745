"""Kubernetes' own limits on object metadata, enforced at render time.

An object the API server would refuse (or, worse, one that passes the policy gate and then fails half-way
through a rollout) fails the render instead, naming its file and line.  The rules are the API server's
(``k8s.io/apimachinery/pkg/api/validation`` and ``.../util/validation``):

* ``metadata.name``: at most 253 characters and a valid path segment (no ``/`` or ``%``, not ``.`` or
  ``..``) for every kind; a DNS-1123 subdomain (lower-case alphanumerics, ``-`` and ``.``) for the
  built-in kinds that require one; a DNS-1123 label (63) for ``Namespace``; a DNS-1035 label (63,
  starting with a letter) for ``Service``; at most 52 characters for ``CronJob``.  RBAC kinds and custom
  resources only get the path-segment rule, as the API server does.
* ``metadata.namespace``: a DNS-1123 label.
* Label keys and annotation keys: qualified names, an optional DNS-1123 subdomain prefix (253) and ``/``,
  then a name of at most 63 characters (alphanumerics, ``-``, ``_``, ``.``, starting and ending with an
  alphanumeric).
* Label values: strings of at most 63 characters, empty or matching the same name pattern.
* Annotation values: strings; all keys and values of one object's annotations together at most 256 KiB.

The same checks apply to a pod template's metadata (``spec.template.metadata``, and a CronJob's
``spec.jobTemplate.spec.template.metadata``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_NAME = 253
MAX_LABEL_VALUE = 63
MAX_QUALIFIED_NAME = 63
MAX_PREFIX = 253
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_CRONJOB_NAME = 52

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

# Built-in kinds whose names the API server checks as DNS-1123 subdomains.
SUBDOMAIN_KINDS = frozenset({
    "ConfigMap", "Secret", "Pod", "PodTemplate", "ReplicationController", "ServiceAccount", "Endpoints",
    "PersistentVolume", "PersistentVolumeClaim", "LimitRange", "ResourceQuota", "Node",
    "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ControllerRevision", "Job", "CronJob",
    "Ingress", "IngressClass", "NetworkPolicy", "StorageClass", "CSIDriver", "VolumeAttachment",
    "PriorityClass", "RuntimeClass", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Lease",
    "CustomResourceDefinition", "APIService", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "EndpointSlice", "CertificateSigningRequest",
})


class LimitError(ValueError):
    """An object breaks a Kubernetes metadata limit; the message says which and how."""


def _shorten(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"


def check_name(kind: str, name: str) -> None:
    if len(name) > MAX_NAME:
        raise LimitError(f"metadata.name is {len(name)} characters, more than Kubernetes' {MAX_NAME}")
    if name in (".", "..") or "/" in name or "%" in name:
        raise LimitError(f"metadata.name {_shorten(name)!r} may not be '.' or '..' or contain '/' or '%'")
    if kind == "Namespace":
        if len(name) > MAX_QUALIFIED_NAME or not _DNS_LABEL.match(name):
            raise LimitError(f"Namespace name {_shorten(name)!r} must be a DNS-1123 label (lower-case "
                             "letters, digits and '-', at most 63 characters)")
    elif kind == "Service":
        if len(name) > MAX_QUALIFIED_NAME or not _DNS_1035.match(name):
            raise LimitError(f"Service name {_shorten(name)!r} must be a DNS-1035 label (lower-case "
                             "letters, digits and '-', starting with a letter, at most 63 characters)")
    elif kind in SUBDOMAIN_KINDS and not _DNS_SUBDOMAIN.match(name):
        raise LimitError(f"{kind} name {_shorten(name)!r} must be a DNS-1123 subdomain (lower-case letters, "
                         "digits, '-' and '.', starting and ending with a letter or digit)")
    if kind == "CronJob" and len(name) > MAX_CRONJOB_NAME:
        raise LimitError(f"CronJob name is {len(name)} characters, more than Kubernetes' {MAX_CRONJOB_NAME}")


def check_namespace(namespace: str) -> None:
    if len(namespace) > MAX_QUALIFIED_NAME or not _DNS_LABEL.match(namespace):
        raise LimitError(f"metadata.namespace {_shorten(namespace)!r} must be a DNS-1123 label (lower-case "
                         "letters, digits and '-', at most 63 characters)")


def check_qualified_name(key: Any, what: str) -> None:
    if not isinstance(key, str) or not key:
        raise LimitError(f"{what} key {key!r} must be a non-empty string")
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > MAX_PREFIX or not _DNS_SUBDOMAIN.match(prefix):
            raise LimitError(f"{what} key {_shorten(key)!r}: the prefix before '/' must be a DNS-1123 "
                             f"subdomain of at most {MAX_PREFIX} characters")
    if len(name) > MAX_QUALIFIED_NAME:
        raise LimitError(f"{what} key {_shorten(key)!r}: the name part is {len(name)} characters, more than "
                         f"Kubernetes' {MAX_QUALIFIED_NAME}")
    if not _QUALIFIED_NAME.match(name):
        raise LimitError(f"{what} key {_shorten(key)!r}: the name part must consist of letters, digits, "
                         "'-', '_' or '.', and start and end with a letter or digit")


def check_labels(labels: Any, where: str = "metadata") -> None:
    if labels is None:
        return
    if not isinstance(labels, Mapping):
        raise LimitError(f"{where}.labels must be a mapping")
    for key, value in labels.items():
        check_qualified_name(key, f"{where}.labels")
        if not isinstance(value, str):
            raise LimitError(f"{where}.labels[{key!r}] must be a string (quote it), not "
                             f"{type(value).__name__}")
        if len(value) > MAX_LABEL_VALUE:
            raise LimitError(f"{where}.labels[{key!r}] is {len(value)} characters, more than Kubernetes' "
                             f"{MAX_LABEL_VALUE} for a label value")
        if value and not _QUALIFIED_NAME.match(value):
            raise LimitError(f"{where}.labels[{key!r}] value {_shorten(value)!r} must consist of letters, "
                             "digits, '-', '_' or '.', and start and end with a letter or digit")


def check_annotations(annotations: Any, where: str = "metadata") -> None:
    if annotations is None:
        return
    if not isinstance(annotations, Mapping):
        raise LimitError(f"{where}.annotations must be a mapping")
    total = 0
    for key, value in annotations.items():
        check_qualified_name(key, f"{where}.annotations")
        if not isinstance(value, str):
            raise LimitError(f"{where}.annotations[{key!r}] must be a string (quote it), not "
                             f"{type(value).__name__}")
        total += len(key.encode()) + len(value.encode())
    if total > MAX_ANNOTATIONS_BYTES:
        raise LimitError(f"{where}.annotations total {total} bytes, more than Kubernetes' "
                         f"{MAX_ANNOTATIONS_BYTES} (256 KiB)")


def _template_metadata(obj: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found: list[tuple[str, Mapping[str, Any]]] = []
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return found
    paths = [("spec.template", spec.get("template"))]
    job = spec.get("jobTemplate")
    if isinstance(job, Mapping):
        job_spec = job.get("spec")
        if isinstance(job_spec, Mapping):
            paths.append(("spec.jobTemplate.spec.template", job_spec.get("template")))
    for where, template in paths:
        if isinstance(template, Mapping) and isinstance(template.get("metadata"), Mapping):
            found.append((f"{where}.metadata", template["metadata"]))
    return found


def check_object(obj: Mapping[str, Any]) -> None:
    """Raise LimitError for the first Kubernetes metadata limit ``obj`` breaks."""
    kind = str(obj.get("kind", ""))
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return
    name = meta.get("name")
    if isinstance(name, str) and name:
        check_name(kind, name)
    elif isinstance(meta.get("generateName"), str):
        # the server appends 5 characters (and shortens a long prefix): the prefix plus "x" must be a name
        check_name(kind, meta["generateName"][:58] + "x")
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace:
        check_namespace(namespace)
    check_labels(meta.get("labels"))
    check_annotations(meta.get("annotations"))
    for where, template_meta in _template_metadata(obj):
        check_labels(template_meta.get("labels"), where)
        check_annotations(template_meta.get("annotations"), where)
