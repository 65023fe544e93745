"""The demo repository's content, as a story of commits.

Three apps (plain YAML, Kustomize with per-environment overlays, a Helm chart with per-cluster values) and a
policy path with readable policies. The commits tell a story: the first passes everywhere, the second is
blocked in prod by a policy (one replica where env=prod), the third fixes it.
"""

from __future__ import annotations

GUESTBOOK = {
    "apps/guestbook/namespace.yaml": """\
apiVersion: v1
kind: Namespace
metadata:
  name: guestbook
  labels:
    app.kubernetes.io/name: guestbook
""",
    "apps/guestbook/app.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: guestbook
  namespace: guestbook
  labels:
    app.kubernetes.io/name: guestbook
spec:
  replicas: 2
  selector:
    matchLabels: {app.kubernetes.io/name: guestbook}
  template:
    metadata:
      labels: {app.kubernetes.io/name: guestbook}
    spec:
      containers:
        - name: web
          image: registry.example.com/guestbook:1.4.2
          ports: [{containerPort: 8080}]
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {memory: 128Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: guestbook
  namespace: guestbook
  labels:
    app.kubernetes.io/name: guestbook
spec:
  selector: {app.kubernetes.io/name: guestbook}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: guestbook-settings
  namespace: guestbook
  labels:
    app.kubernetes.io/name: guestbook
data:
  cluster: "${cluster.name}"
  region: "${cluster.labels.region}"
""",
}


def _podinfo(prod_replicas: int) -> dict[str, str]:
    overlays = {}
    for env, replicas in (("dev", 1), ("staging", 2), ("prod", prod_replicas)):
        overlays[f"apps/podinfo/overlays/{env}/kustomization.yaml"] = f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../base]
labels:
  - pairs: {{environment: {env}}}
patches:
  - target: {{kind: Deployment, name: podinfo}}
    patch: |
      - op: replace
        path: /spec/replicas
        value: {replicas}
"""
    return {
        "apps/podinfo/base/kustomization.yaml": """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: podinfo
resources: [namespace.yaml, deployment.yaml, service.yaml]
""",
        "apps/podinfo/base/namespace.yaml": """\
apiVersion: v1
kind: Namespace
metadata:
  name: podinfo
  labels: {app.kubernetes.io/name: podinfo}
""",
        "apps/podinfo/base/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  labels: {app.kubernetes.io/name: podinfo}
spec:
  replicas: 2
  selector:
    matchLabels: {app.kubernetes.io/name: podinfo}
  template:
    metadata:
      labels: {app.kubernetes.io/name: podinfo}
    spec:
      containers:
        - name: podinfo
          image: ghcr.io/stefanprodan/podinfo:6.7.1
          ports: [{containerPort: 9898}]
          resources:
            requests: {cpu: 10m, memory: 32Mi}
            limits: {memory: 96Mi}
""",
        "apps/podinfo/base/service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: podinfo
  labels: {app.kubernetes.io/name: podinfo}
spec:
  selector: {app.kubernetes.io/name: podinfo}
  ports: [{port: 80, targetPort: 9898}]
""",
        "apps/podinfo/fleetgate.yaml": """\
# Each cluster gets the overlay of its environment label.
targetCustomizations:
  - name: dev
    clusterSelector: {matchLabels: {env: dev}}
    kustomize: {dir: overlays/dev}
  - name: staging
    clusterSelector: {matchLabels: {env: staging}}
    kustomize: {dir: overlays/staging}
  - name: prod
    clusterSelector: {matchLabels: {env: prod}}
    kustomize: {dir: overlays/prod}
""",
        **overlays,
    }


CACHE_CHART = {
    "charts/cache/Chart.yaml": """\
apiVersion: v2
name: cache
description: A small in-memory cache, with per-cluster sizing.
version: 0.3.0
appVersion: "7.4.5"
""",
    "charts/cache/values.yaml": """\
replicas: 1
image: registry.example.com/cache:7.4.5
memory: 128Mi
""",
    "charts/cache/templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app.kubernetes.io/name: {{ .Chart.Name }}
    app.kubernetes.io/instance: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app.kubernetes.io/instance: {{ .Release.Name }}}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ .Chart.Name }}
        app.kubernetes.io/instance: {{ .Release.Name }}
    spec:
      containers:
        - name: cache
          image: {{ .Values.image }}
          resources:
            limits: {memory: {{ .Values.memory }}}
""",
    "charts/cache/templates/namespace.yaml": """\
apiVersion: v1
kind: Namespace
metadata:
  name: {{ .Release.Namespace }}
  labels:
    app.kubernetes.io/name: {{ .Chart.Name }}
""",
    "charts/cache/templates/service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
  labels:
    app.kubernetes.io/name: {{ .Chart.Name }}
spec:
  selector: {app.kubernetes.io/instance: {{ .Release.Name }}}
  ports: [{port: 6379}]
""",
    "charts/cache/fleetgate.yaml": """\
namespace: cache
helm:
  releaseName: cache
targetCustomizations:
  - name: prod
    clusterSelector: {matchLabels: {env: prod}}
    helm: {values: {replicas: 3, memory: 512Mi}}
  - name: eu
    clusterSelector: {matchLabels: {region: eu}}
    helm: {values: {memory: 256Mi}}
""",
}

POLICIES = {
    "policies/no-latest.rego": """\
# Images must name a version: ':latest' (or no tag at all) changes under your feet.
package main

import rego.v1

deny contains msg if {
	some container in input.spec.template.spec.containers
	endswith(container.image, ":latest")
	msg := sprintf("%s/%s: container %q uses the :latest tag; pin a version", [input.kind, input.metadata.name, container.name])
}

deny contains msg if {
	some container in input.spec.template.spec.containers
	count(split(container.image, ":")) == 1
	msg := sprintf("%s/%s: container %q has no tag; pin a version", [input.kind, input.metadata.name, container.name])
}
""",
    "policies/resource-limits.rego": """\
# Every workload container declares a memory limit.
package main

import rego.v1

workloads := {"Deployment", "StatefulSet", "DaemonSet"}

deny contains msg if {
	input.kind in workloads
	some container in input.spec.template.spec.containers
	not container.resources.limits.memory
	msg := sprintf("%s/%s: container %q has no memory limit", [input.kind, input.metadata.name, container.name])
}
""",
    "policies/prod-replicas.rego": """\
# In production (clusters labelled env=prod) a Deployment runs at least two replicas.
package main

import rego.v1

deny contains msg if {
	input.kind == "Deployment"
	data.fleetgate.context.cluster.labels.env == "prod"
	input.spec.replicas < 2
	msg := sprintf("Deployment/%s: %d replica on prod cluster %s; prod needs at least 2", [input.metadata.name, input.spec.replicas, data.fleetgate.context.cluster.name])
}
""",
    "policies/required-labels/template.yaml": """\
apiVersion: templates.gatekeeper.sh/v1
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
              items: {type: string}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8srequiredlabels

        violation[{"msg": msg, "details": {"missing_labels": missing}}] {
          provided := {label | input.review.object.metadata.labels[label]}
          required := {label | label := input.parameters.labels[_]}
          missing := required - provided
          count(missing) > 0
          msg := sprintf("%v/%v is missing labels: %v", [input.review.kind.kind, input.review.object.metadata.name, missing])
        }
""",
    "policies/required-labels/constraint.yaml": """\
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sRequiredLabels
metadata:
  name: workloads-have-a-name
spec:
  enforcementAction: warn
  match:
    kinds:
      - apiGroups: ["apps"]
        kinds: ["Deployment", "StatefulSet", "DaemonSet"]
  parameters:
    labels: ["app.kubernetes.io/name"]
""",
}

README = """\
# Fleetgate demo repository

Made by `manage.py demo` for the first five minutes with Fleetgate.

- `apps/guestbook`: plain YAML (with `${cluster.name}` substitution)
- `apps/podinfo`: Kustomize base with dev/staging/prod overlays, chosen per cluster by `fleetgate.yaml`
- `charts/cache`: a Helm chart with per-cluster values from `fleetgate.yaml`
- `policies/`: the policies the gate applies (conftest style and a Gatekeeper template with a constraint)
"""

# The story: (message, files to write, files to delete).
STORY: list[tuple[str, dict[str, str], list[str]]] = [
    (
        "Add guestbook, podinfo and the cache chart, with the platform's policies",
        {"README.md": README, **GUESTBOOK, **_podinfo(prod_replicas=2), **CACHE_CHART, **POLICIES},
        [],
    ),
    ("podinfo: scale prod down to one replica to save cost", _podinfo(prod_replicas=1), []),
    ("podinfo: back to two replicas in prod (policy prod-replicas)", _podinfo(prod_replicas=2), []),
]
