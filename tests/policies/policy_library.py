"""The policies the Django-half tests define (as a platform team would write them), and sample objects."""

from __future__ import annotations

from typing import Any

NO_LATEST = """package main

deny_latest[msg] {
  input.kind == "Deployment"
  c := input.spec.template.spec.containers[_]
  endswith(c.image, ":latest")
  msg := sprintf("%s: container %s uses the :latest tag", [input.metadata.name, c.name])
}
"""

NO_LATEST_TEST = """package main

test_latest_denied {
  count(deny_latest) == 1 with input as {"kind": "Deployment", "metadata": {"name": "a"},
    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:latest"}]}}}}
}

test_pinned_allowed {
  count(deny_latest) == 0 with input as {"kind": "Deployment", "metadata": {"name": "a"},
    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}
}
"""

NO_LATEST_FAILING_TEST = """package main

test_wrong_expectation {
  count(deny_latest) == 5 with input as {"kind": "Deployment", "metadata": {"name": "a"},
    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:latest"}]}}}}
}
"""

# Context-aware: replicas >= 2 on clusters labelled env=prod (data.fleetgate.context).
PROD_REPLICAS = """package main
import rego.v1

deny_replicas contains msg if {
  data.fleetgate.context.cluster.labels.env == "prod"
  input.kind == "Deployment"
  object.get(input.spec, "replicas", 1) < 2
  msg := sprintf("%s needs at least 2 replicas on production cluster %s",
    [input.metadata.name, data.fleetgate.context.cluster.name])
}
"""

# conftest deny with an exception: hostNetwork is denied except for the node agent.
HOST_NETWORK = """package main

deny_host_network[msg] {
  input.spec.template.spec.hostNetwork == true
  msg := sprintf("%s must not use the host network", [input.metadata.name])
}

exception[rules] {
  input.metadata.name == data.allowed.host_network[_]
  rules := ["host_network"]
}
"""
HOST_NETWORK_DATA = {"allowed": {"host_network": ["node-agent"]}}

REQUIRED_LABELS_TEMPLATE = """apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8srequiredlabels
spec:
  crd:
    spec:
      names:
        kind: K8sRequiredLabels
      validation:
        openAPIV3Schema:
          type: object
          properties:
            labels:
              type: array
              items:
                type: string
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8srequiredlabels

        violation[{"msg": msg, "details": {"missing_labels": missing}}] {
          provided := {label | input.review.object.metadata.labels[label]}
          required := {label | label := input.parameters.labels[_]}
          missing := required - provided
          count(missing) > 0
          msg := sprintf("you must provide labels: %v", [missing])
        }
"""

REQUIRED_LABELS_CONSTRAINT = """apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata:
  name: must-have-team
spec:
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
  parameters:
    labels: ["team"]
"""

# One library, shared by two templates.
LIB = """package lib.containers

containers[c] {
  c := input.review.object.spec.template.spec.containers[_]
}
"""


def _template(name: str, kind: str, rego: str) -> str:
    body = "\n".join("        " + line for line in rego.strip().splitlines())
    lib = "\n".join("          " + line for line in LIB.strip().splitlines())
    return f"""apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: {name}
spec:
  crd:
    spec:
      names:
        kind: {kind}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
{body}
      libs:
        - |
{lib}
"""


PRIVILEGED_TEMPLATE = _template(
    "k8sprivileged",
    "K8sPrivileged",
    """package k8sprivileged
import data.lib.containers.containers

violation[{"msg": msg}] {
  c := containers[_]
  c.securityContext.privileged == true
  msg := sprintf("privileged container is not allowed: %s", [c.name])
}""",
)

LIMITS_TEMPLATE = _template(
    "k8slimits",
    "K8sLimits",
    """package k8slimits
import data.lib.containers.containers

violation[{"msg": msg}] {
  c := containers[_]
  not c.resources.limits.memory
  msg := sprintf("container %s has no memory limit", [c.name])
}""",
)


def constraint(kind: str, name: str, action: str = "deny") -> str:
    return f"""apiVersion: constraints.gatekeeper.sh/v1beta1
kind: {kind}
metadata:
  name: {name}
spec:
  enforcementAction: {action}
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment"]
"""


def deployment(
    name: str,
    *,
    image: str = "nginx:1.27",
    replicas: int = 3,
    labels: dict[str, str] | None = None,
    privileged: bool = False,
    limits: bool = True,
    host_network: bool = False,
    namespace: str = "apps",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image}
    if privileged:
        container["securityContext"] = {"privileged": True}
    if limits:
        container["resources"] = {"limits": {"memory": "128Mi", "cpu": "100m"}}
    spec: dict[str, Any] = {"containers": [container]}
    if host_network:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels if labels is not None else {"team": "web"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


# to_number() of an annotation that is not a number: an engine error, not a finding
ERRORING = """package main
import rego.v1

deny_number contains "never" if {
  input.kind == "ConfigMap"
  to_number(input.metadata.annotations["example.com/n"]) > 1
}
"""


def spec(name: str) -> dict[str, Any]:
    """make_policy's keyword arguments for one of this library's policies, by the name the tests give it."""
    specs: dict[str, dict[str, Any]] = {
        "no-latest": {"style": "conftest", "modules": [{"path": "latest.rego", "source": NO_LATEST}]},
        "host-network": {
            "style": "conftest",
            "modules": [{"path": "hostnet.rego", "source": HOST_NETWORK}],
            "data": HOST_NETWORK_DATA,
        },
        "required-labels": {
            "style": "gatekeeper",
            "template": REQUIRED_LABELS_TEMPLATE,
            "constraints": [REQUIRED_LABELS_CONSTRAINT],
        },
        "numbers": {"style": "conftest", "modules": [{"path": "n.rego", "source": ERRORING}]},
    }
    return specs[name]


def resources(objects: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """A RenderedManifest's resources: the objects as the render stores them, documents of one file."""
    return [
        {
            "apiVersion": o["apiVersion"],
            "kind": o["kind"],
            "name": o["metadata"]["name"],
            "namespace": o["metadata"].get("namespace"),
            "source": source,
            "document": i,
            "object": o,
        }
        for i, o in enumerate(objects)
    ]
