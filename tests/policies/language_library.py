"""ValidatingAdmissionPolicies and Kyverno policies the language tests import as they are (the kinds of checks
of the Kubernetes documentation and of Kyverno's best-practices policies), written for these tests."""

from __future__ import annotations

from typing import Any

import yaml

REPLICA_LIMIT_VAP = """apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: replica-limit.example.com
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: ["apps"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["deployments"]
  validations:
    - expression: "object.spec.replicas <= 5"
      messageExpression: "'replicas must be no greater than 5, got ' + string(object.spec.replicas)"
      reason: Invalid
"""


def vap_binding(name: str, policy: str, actions: list[str], **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": policy, "validationActions": actions, **spec},
        },
        sort_keys=False,
    )


# Scaling down by more than half in one change is refused: reads oldObject, so only UPDATEs are reviewed.
SCALE_DOWN_VAP = """apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: scale-down-by-half.example.com
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: ["apps"]
        apiVersions: ["v1"]
        operations: ["UPDATE"]
        resources: ["deployments"]
  validations:
    - expression: "object.spec.replicas * 2 >= oldObject.spec.replicas"
      messageExpression: >-
        'scaling down from ' + string(oldObject.spec.replicas) + ' to '
        + string(object.spec.replicas) + ' is more than half'

"""

# The maximum comes from a ConfigMap (paramKind), found among the objects rendered for the target.
PARAM_VAP = """apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: max-replicas-param.example.com
spec:
  paramKind:
    apiVersion: v1
    kind: ConfigMap
  matchConstraints:
    resourceRules:
      - apiGroups: ["apps"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["deployments"]
  validations:
    - expression: "object.spec.replicas <= int(params.data.maxReplicas)"
      messageExpression: "'at most ' + params.data.maxReplicas + ' replicas here'"
"""

REQUIRE_TEAM_KYVERNO = """apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: require-team-label
  annotations:
    policies.kyverno.io/category: Best Practices
spec:
  validationFailureAction: Enforce
  background: true
  rules:
    - name: check-team
      match:
        any:
          - resources:
              kinds: ["Deployment"]
      validate:
        message: "The label `team` is required on {{ request.object.metadata.name }}."
        pattern:
          metadata:
            labels:
              team: "?*"
    - name: add-managed-by
      match:
        any:
          - resources:
              kinds: ["Deployment"]
      mutate:
        patchStrategicMerge:
          metadata:
            labels:
              +(app.kubernetes.io/managed-by): fleetgate
"""

DISALLOW_LATEST_KYVERNO = """apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: disallow-latest-tag
spec:
  validationFailureAction: {action}
  rules:
    - name: validate-image-tag
      match:
        any:
          - resources:
              kinds: ["Pod"]
      validate:
        message: "Using a mutable image tag e.g. 'latest' is not allowed."
        pattern:
          spec:
            containers:
              - image: "!*:latest"
"""


def disallow_latest(action: str = "Enforce") -> str:
    return DISALLOW_LATEST_KYVERNO.replace("{action}", action)


def legacy_exception(names: list[str], rules: list[str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kyverno.io/v2",
            "kind": "PolicyException",
            "metadata": {
                "name": "legacy-apps",
                "namespace": "apps",
                "annotations": {"fleetgate.io/justification": "vendor chart, OPS-31"},
            },
            "spec": {
                "exceptions": [{"policyName": "require-team-label", "ruleNames": rules}],
                "match": {"any": [{"resources": {"kinds": ["Deployment"], "names": names}}]},
            },
        },
        sort_keys=False,
    )


def config_map(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }
