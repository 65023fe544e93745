"""Policies and Kubernetes objects used by the policy tests (both engines, and the differential test).

Every policy here is written for these tests in the two styles Fleetgate accepts unchanged:
conftest modules and Gatekeeper ConstraintTemplate + Constraint YAML.
"""

from __future__ import annotations

import copy
from typing import Any

from policies.gate import BoundPolicy, Enforcement

# --------------------------------------------------------------------------------------------- conftest

# v1 syntax, no rego.v1 import: detected as v1 by its keywords.
NO_LATEST = """\
package main

containers contains c if {
  some c in input.spec.containers
}

containers contains c if {
  some c in input.spec.template.spec.containers
}

deny_latest contains msg if {
  some c in containers
  endswith(c.image, ":latest")
  msg := sprintf("%s/%s: container %s uses the :latest tag", [input.kind, input.metadata.name, c.name])
}

deny_latest contains msg if {
  some c in containers
  not contains(c.image, ":")
  msg := sprintf("%s/%s: container %s has no tag (means :latest)", [input.kind, input.metadata.name, c.name])
}
"""

# v0 syntax with an exception: legacy-app may run as root.
RUN_AS_ROOT = """\
package main

deny_run_as_root[msg] {
  input.kind == "Deployment"
  not input.spec.template.spec.securityContext.runAsNonRoot
  msg := sprintf("Deployment %s must set runAsNonRoot", [input.metadata.name])
}

warn[msg] {
  input.kind == "Deployment"
  not input.metadata.labels["app.kubernetes.io/name"]
  msg := sprintf("Deployment %s has no app.kubernetes.io/name label", [input.metadata.name])
}

exception[rules] {
  input.metadata.name == "legacy-app"
  rules := ["run_as_root"]
}
"""

# Context-aware (v1 with import rego.v1): production clusters need at least two replicas.
PROD_REPLICAS = """\
package fleetgate.replicas

import rego.v1

deny contains msg if {
  data.fleetgate.context.cluster.labels.env == "prod"
  input.kind == "Deployment"
  object.get(input.spec, "replicas", 1) < 2
  msg := sprintf("Deployment %s runs %v replica(s) on production cluster %s",
    [input.metadata.name, object.get(input.spec, "replicas", 1), data.fleetgate.context.cluster.name])
}
"""

# --------------------------------------------------------------------------------------------- gatekeeper

REQUIRED_LABELS_TEMPLATE = """\
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fgrequiredlabels
spec:
  crd:
    spec:
      names:
        kind: FgRequiredLabels
      validation:
        openAPIV3Schema:
          type: object
          properties:
            labels:
              type: array
              items: {type: string}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fgrequiredlabels

        violation[{"msg": msg, "details": {"missing": missing}}] {
          provided := {l | input.review.object.metadata.labels[l]}
          required := {l | l := input.parameters.labels[_]}
          missing := required - provided
          count(missing) > 0
          msg := sprintf("%v %v is missing required labels: %v",
            [input.review.kind.kind, input.review.name, sort(missing)])
        }
"""

REQUIRED_LABELS_CONSTRAINT = """\
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgRequiredLabels
metadata:
  name: need-team
spec:
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
    excludedNamespaces: ["kube-system"]
  parameters:
    labels: ["team", "tier"]
"""

# Shared by a v0 template and a v1 template: `import rego.v1` makes it load in both.
CONTAINERS_LIB = """\
package lib.fgcontainers

import rego.v1

all contains c if {
  some c in input.review.object.spec.containers
}

all contains c if {
  some c in input.review.object.spec.template.spec.containers
}

all contains c if {
  some c in input.review.object.spec.initContainers
}

all contains c if {
  some c in input.review.object.spec.template.spec.initContainers
}
"""

PRIVILEGED_TEMPLATE = """\
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fgnoprivileged
spec:
  crd:
    spec:
      names:
        kind: FgNoPrivileged
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fgnoprivileged

        import data.lib.fgcontainers

        violation[{"msg": msg}] {
          c := fgcontainers.all[_]
          c.securityContext.privileged == true
          msg := sprintf("privileged container %v in %v %v",
            [c.name, input.review.kind.kind, input.review.name])
        }
      libs:
        - |
@@LIB@@
"""

LIMITS_TEMPLATE = """\
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fgcontainerlimits
spec:
  crd:
    spec:
      names:
        kind: FgContainerLimits
  targets:
    - target: admission.k8s.gatekeeper.sh
      code:
        - engine: Rego
          source:
            version: v1
            rego: |
              package fgcontainerlimits

              import data.lib.fgcontainers

              violation contains {"msg": msg} if {
                some c in fgcontainers.all
                some resource in input.parameters.resources
                not c.resources.limits[resource]
                msg := sprintf("container %v has no %v limit", [c.name, resource])
              }
            libs:
              - |
@@LIB@@
"""

PRIVILEGED_CONSTRAINT = """\
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgNoPrivileged
metadata:
  name: no-privileged
spec:
  match:
    kinds:
      - apiGroups: [""]
        kinds: ["Pod"]
      - apiGroups: ["apps"]
        kinds: ["Deployment", "StatefulSet", "DaemonSet"]
"""

LIMITS_CONSTRAINT = """\
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgContainerLimits
metadata:
  name: need-limits
spec:
  enforcementAction: warn
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
    namespaceSelector:
      matchLabels:
        limits: required
  parameters:
    resources: ["cpu", "memory"]
"""

UNIQUE_HOST_TEMPLATE = """\
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: fguniqueingresshost
spec:
  crd:
    spec:
      names:
        kind: FgUniqueIngressHost
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package fguniqueingresshost

        hosts(obj) = {h | h := obj.spec.rules[_].host}

        violation[{"msg": msg}] {
          host := hosts(input.review.object)[_]
          other := data.inventory.namespace[ns][_]["Ingress"][name]
          not same(ns, name)
          hosts(other)[host]
          msg := sprintf("ingress host %v is also used by ingress %v/%v", [host, ns, name])
        }

        same(ns, name) {
          ns == input.review.namespace
          name == input.review.name
        }
"""

UNIQUE_HOST_CONSTRAINT = """\
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: FgUniqueIngressHost
metadata:
  name: unique-hosts
spec:
  match:
    kinds:
      - apiGroups: ["networking.k8s.io"]
        kinds: ["Ingress"]
"""


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def privileged_template() -> str:
    return PRIVILEGED_TEMPLATE.replace("@@LIB@@", _indent(CONTAINERS_LIB, 10))


def limits_template() -> str:
    return LIMITS_TEMPLATE.replace("@@LIB@@", _indent(CONTAINERS_LIB, 16))


def all_policies() -> list[BoundPolicy]:
    """The full policy set bound to one target (ids are stable strings)."""
    return [
        BoundPolicy.conftest("no-latest", "No :latest images", {"no_latest.rego": NO_LATEST}),
        BoundPolicy.conftest("run-as-root", "Run as non-root", {"root.rego": RUN_AS_ROOT}),
        BoundPolicy.conftest(
            "prod-replicas",
            "Production replicas",
            {"replicas.rego": PROD_REPLICAS},
            namespaces=("fleetgate.replicas",),
        ),
        BoundPolicy.gatekeeper(
            "required-labels", "Required labels", REQUIRED_LABELS_TEMPLATE, REQUIRED_LABELS_CONSTRAINT
        ),
        BoundPolicy.gatekeeper(
            "no-privileged", "No privileged containers", privileged_template(), PRIVILEGED_CONSTRAINT
        ),
        BoundPolicy.gatekeeper("container-limits", "Container limits", limits_template(), LIMITS_CONSTRAINT),
        BoundPolicy.gatekeeper(
            "unique-hosts",
            "Unique ingress hosts",
            UNIQUE_HOST_TEMPLATE,
            UNIQUE_HOST_CONSTRAINT,
            enforcement=Enforcement.DENY,
        ),
    ]


# --------------------------------------------------------------------------------------------- objects


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def deployment(
    name: str,
    ns: str = "apps",
    *,
    image: str = "registry.example/web:1.2.3",
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    privileged: bool = False,
    limits: bool = True,
    non_root: bool = True,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image}
    if privileged:
        container["securityContext"] = {"privileged": True}
    if limits:
        container["resources"] = {"limits": {"cpu": "500m", "memory": "256Mi"}}
    pod_spec: dict[str, Any] = {"containers": [container]}
    if non_root:
        pod_spec["securityContext"] = {"runAsNonRoot": True}
    meta_labels = {"team": "web", "tier": "frontend", "app.kubernetes.io/name": name}
    if labels is not None:
        meta_labels = labels
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": meta_labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def pod(
    name: str, ns: str = "apps", *, image: str = "registry.example/tool:2.0", privileged: bool = False
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image}
    if privileged:
        container["securityContext"] = {"privileged": True}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [container]},
    }


def ingress(name: str, host: str, ns: str = "apps") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": name, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


def corpus() -> list[dict[str, Any]]:
    """A mix of compliant and non-compliant objects that touches every policy above."""
    objs: list[dict[str, Any]] = [
        namespace("apps", limits="required"),
        namespace("batch"),
        namespace("kube-system"),
        deployment("web"),
        deployment("latest", image="registry.example/web:latest"),
        deployment("untagged", image="nginx"),
        deployment("unlabelled", labels={"team": "web"}),
        deployment("system", ns="kube-system", labels={}),
        deployment("priv", privileged=True),
        deployment("nolimits", limits=False),
        deployment("nolimits-batch", ns="batch", limits=False),
        deployment("single", replicas=1),
        deployment("root", non_root=False),
        deployment("legacy-app", non_root=False),
        pod("debug", privileged=True),
        pod("tool"),
        ingress("a", "shop.example.com"),
        ingress("b", "shop.example.com", ns="batch"),
        ingress("c", "docs.example.com"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "apps"},
            "data": {"mode": "fast"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "reader"},
            "rules": [],
        },
    ]
    return copy.deepcopy(objs)
