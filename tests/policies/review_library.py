"""Policies that judge the change, not just the result, written the way gatekeeper-library writes its
templates (``input.review.operation``, ``input.review.oldObject``), plus a conftest policy that reads the
same review at ``data.fleetgate.review``. Shared by the gate tests and the rollout tests."""

from __future__ import annotations

from typing import Any

IMMUTABLE_FIELDS_TEMPLATE = """apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fgimmutablefields
spec:
  crd:
    spec:
      names:
        kind: FgImmutableFields
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fgimmutablefields

        violation[{"msg": msg}] {
          input.review.operation == "UPDATE"
          input.review.kind.kind == "Deployment"
          old := input.review.oldObject.spec.selector
          new := input.review.object.spec.selector
          old != new
          msg := sprintf("%v %v: spec.selector is immutable", [input.review.kind.kind, input.review.name])
        }

        violation[{"msg": msg}] {
          input.review.operation == "UPDATE"
          input.review.kind.kind == "Service"
          old := input.review.oldObject.spec.clusterIP
          new := object.get(input.review.object.spec, "clusterIP", old)
          old != new
          msg := sprintf("Service %v: spec.clusterIP is immutable", [input.review.name])
        }
"""

IMMUTABLE_FIELDS_CONSTRAINT = """apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgImmutableFields
metadata:
  name: immutable-fields
spec:
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
      - apiGroups: [""]
        kinds: ["Service"]
"""

SCALE_DOWN_TEMPLATE = """apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fgscaledownlimit
spec:
  crd:
    spec:
      names:
        kind: FgScaleDownLimit
      validation:
        openAPIV3Schema:
          type: object
          properties:
            maxDecreasePercent:
              type: integer
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fgscaledownlimit

        violation[{"msg": msg, "details": {"live": old, "rendered": new}}] {
          input.review.operation == "UPDATE"
          old := object.get(input.review.oldObject.spec, "replicas", 1)
          new := object.get(input.review.object.spec, "replicas", 1)
          limit := object.get(input.parameters, "maxDecreasePercent", 50)
          (old - new) * 100 > old * limit
          msg := sprintf("%v %v: scaling down from %v to %v replicas removes more than %v%%",
            [input.review.kind.kind, input.review.name, old, new, limit])
        }
"""

SCALE_DOWN_CONSTRAINT = """apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgScaleDownLimit
metadata:
  name: scale-down-by-half-at-most
spec:
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment", "StatefulSet"]
  parameters:
    maxDecreasePercent: 50
"""

PROTECTED_DELETE_TEMPLATE = """apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fgprotecteddelete
spec:
  crd:
    spec:
      names:
        kind: FgProtectedDelete
      validation:
        openAPIV3Schema:
          type: object
          properties:
            kinds:
              type: array
              items:
                type: string
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fgprotecteddelete

        violation[{"msg": msg}] {
          input.review.operation == "DELETE"
          input.review.kind.kind == input.parameters.kinds[_]
          msg := sprintf("%v %v/%v must not be deleted (requested by %v)",
            [input.review.kind.kind, input.review.oldObject.metadata.namespace,
             input.review.oldObject.metadata.name, input.review.userInfo.username])
        }
"""

PROTECTED_DELETE_CONSTRAINT = """apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgProtectedDelete
metadata:
  name: keep-volumes
spec:
  parameters:
    kinds: ["PersistentVolumeClaim", "Namespace"]
"""

# Echoes the review it got, so tests can read the shape the policies see.
ECHO_TEMPLATE = """apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fgechoreview
spec:
  crd:
    spec:
      names:
        kind: FgEchoReview
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fgechoreview

        violation[{"msg": input.review.operation, "details": {"review": input.review}}] {
          true
        }
"""

ECHO_CONSTRAINT = """apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgEchoReview
metadata:
  name: echo
spec:
  enforcementAction: warn
"""

# conftest style: input is the object; the review is at data.fleetgate.review.
CONFTEST_KEEP_VOLUMES = """package main
import rego.v1

deny_delete_volume contains msg if {
  data.fleetgate.review.operation == "DELETE"
  input.kind == "PersistentVolumeClaim"
  msg := sprintf("%s: deleting a volume claim needs a person (by %s)",
    [input.metadata.name, data.fleetgate.review.userInfo.username])
}

deny_shrink contains msg if {
  data.fleetgate.review.operation == "UPDATE"
  input.kind == "Deployment"
  data.fleetgate.review.oldObject.spec.replicas > 2 * input.spec.replicas
  msg := sprintf("%s: scale-down by more than half", [input.metadata.name])
}
"""


def deployment(
    name: str, *, replicas: int = 4, app: str | None = None, ns: str = "apps", image: str = "nginx:1.27"
) -> dict[str, Any]:
    selector = {"matchLabels": {"app": app or name}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app or name}},
        "spec": {
            "replicas": replicas,
            "selector": selector,
            "template": {
                "metadata": {"labels": {"app": app or name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def pvc(name: str, ns: str = "apps") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def service(name: str, cluster_ip: str | None = None, ns: str = "apps") -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"app": name}, "ports": [{"port": 80}]}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}
