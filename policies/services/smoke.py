"""Refuse at save a policy that fails when evaluated, instead of blocking every object later.

A policy can compile and still raise on evaluation (regorus: ``sprintf`` with fewer arguments than verbs in a
computed format, a call on a value that is not a function, a built-in type error; both engines: conflicting
values of a complete rule). The gate treats an engine error as a deny, so such a policy, once bound, would
block every object it matches with "engine error" and no violation to act on.

:func:`smoke_errors` evaluates the policy once, on the configured engine, on small objects of the kinds it
matches (a Gatekeeper Constraint's ``spec.match.kinds``, with the Constraint's parameters; a ConfigMap for a
conftest policy) reviewed as a ``CREATE``; every engine error is returned with the engine's message and, when
the engine gives one, the module line. A well-behaved policy is silent on such objects (missing fields are
undefined in Rego, not errors), so this refuses only policies that raise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from policies import gate
from policies.engine import RegoEngine
from policies.formats import gatekeeper as gk
from policies.formats.kube import CLUSTER_SCOPED_KINDS

SMOKE_NAME = "fleetgate-smoke-test"
SMOKE_NAMESPACE = "fleetgate-smoke-test"
_LOCATION = re.compile(r"(?P<path>[\w./-]+\.rego):(?P<line>\d+):(?P<col>\d+)")


def _objects_for(constraint: gk.Constraint) -> list[dict[str, Any]]:
    pairs: list[tuple[str, str]] = []
    for matcher in constraint.match.kinds:
        groups = [g for g in matcher.api_groups if g != "*"] or [""]
        kinds = [k for k in matcher.kinds if k != "*"] or ["ConfigMap"]
        pairs += [(groups[0], k) for k in kinds]
    if not pairs:
        pairs = [("", "ConfigMap")]
    namespace = next((n for n in constraint.match.namespaces if "*" not in n), SMOKE_NAMESPACE)
    out = []
    for group, kind in dict.fromkeys(pairs):
        metadata: dict[str, Any] = {"name": SMOKE_NAME}
        if kind not in CLUSTER_SCOPED_KINDS:
            metadata["namespace"] = namespace
        out.append({"apiVersion": f"{group}/v1" if group else "v1", "kind": kind, "metadata": metadata})
    return out


def _error_dict(policy: gate.BoundPolicy, message: str) -> dict[str, Any]:
    loc = _LOCATION.search(message)
    return {
        "path": loc.group("path") if loc else "",
        "line": int(loc.group("line")) if loc else 0,
        "column": int(loc.group("col")) if loc else 0,
        "message": message[loc.end() :].lstrip(": ") if loc else message,
        "code": "rego_eval_error",
    }


def describe(error: dict[str, Any]) -> str:
    """``path:line:column: message`` (or the message alone when the engine gave no line)."""
    if error["line"]:
        return f"{error['path']}:{error['line']}:{error['column']}: {error['message']}"
    return str(error["message"])


#: Small objects a VAP or Kyverno policy is smoke-evaluated on (its own match picks the ones it reviews)
ADMISSION_OBJECTS: tuple[dict[str, Any], ...] = (
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SMOKE_NAMESPACE}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": SMOKE_NAME, "namespace": SMOKE_NAMESPACE}},
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": SMOKE_NAME, "namespace": SMOKE_NAMESPACE},
        "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0"}]},
    },
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": SMOKE_NAME, "namespace": SMOKE_NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": SMOKE_NAME}},
            "template": {
                "metadata": {"labels": {"app": SMOKE_NAME}},
                "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0"}]},
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SMOKE_NAME, "namespace": SMOKE_NAMESPACE},
        "spec": {"ports": [{"port": 80}]},
    },
)


def _admission_errors(policy: gate.BoundPolicy) -> list[dict[str, Any]]:
    """A VAP or Kyverno policy that raises when evaluated (not a finding, nor a CEL runtime error on a
    field the small objects lack, which its failurePolicy answers for)."""
    rendered = [gate.RenderedObject(obj, "smoke.yaml", i) for i, obj in enumerate(ADMISSION_OBJECTS)]
    decision = gate.evaluate_target(rendered, [policy])
    return [
        {"path": "policy", "line": 0, "column": 0, "message": err.message, "code": "evaluation_error"}
        for err in decision.errors
        if err.kind in ("internal", "format")
    ]


def smoke_errors(policies: Sequence[gate.BoundPolicy], engine: RegoEngine | None) -> list[dict[str, Any]]:
    """Engine errors of ``policies`` on small objects they match (empty: the policy evaluates cleanly)."""
    errors: list[dict[str, Any]] = []
    for policy in policies:
        if policy.admission is not None:
            errors.extend(_admission_errors(policy))
            continue
        if policy.constraint is not None:
            objects = _objects_for(policy.constraint)
        else:
            objects = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": SMOKE_NAME}}]
        rendered = [gate.RenderedObject(obj, "smoke.yaml", i) for i, obj in enumerate(objects)]
        decision = gate.evaluate_target(rendered, [policy], engine=engine)
        for err in decision.errors:
            if err.kind in ("engine", "compile", "internal"):
                errors.append(_error_dict(policy, err.message))
    return errors
