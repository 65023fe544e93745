"""Builders shared by the ValidatingAdmissionPolicy tests: policies, bindings and admission inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.formats.admission import AdmissionInput
from policies.formats.kube import object_id


def policy(name: str, validations: Sequence[Mapping[str, Any]] = (), **spec: Any) -> dict[str, Any]:
    spec.setdefault(
        "matchConstraints",
        {
            "resourceRules": [
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["deployments"],
                }
            ]
        },
    )
    if validations:
        spec["validations"] = list(validations)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def binding(name: str, policy_name: str, actions: Sequence[str] = ("Deny",), **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": policy_name, "validationActions": list(actions), **spec},
    }


def deployment(
    name: str,
    replicas: int = 1,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {"app": name})},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
            },
            **spec,
        },
    }


def review(
    obj: Mapping[str, Any] | None,
    operation: str = "CREATE",
    old: Mapping[str, Any] | None = None,
    namespace: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] | None = None,
) -> AdmissionInput:
    subject = obj if obj is not None else old
    assert subject is not None
    return AdmissionInput(
        operation=operation,
        id=object_id(subject),
        object=obj,
        old_object=old,
        namespace_object=namespace,
        user_info=dict(user or {"username": "alice", "groups": ["system:authenticated"]}),
    )
