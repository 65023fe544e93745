"""Differential test: regorus and the real OPA server must reach identical decisions on the same corpus.

OPA is the reference engine; regorus is the fast in-process one. Any difference in outcome, in the
violations found (policy, rule, enforcement, object, message, details) or in waivers applied fails.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policies.engine.opa_engine import OpaEngine
from policies.engine.regorus_engine import RegorusEngine
from policies.gate import Decision, Outcome, RenderedObject, TargetContext, Waiver, evaluate_target
from tests.policies import corpus

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _generated(seed: int, count: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    objs: list[dict[str, Any]] = [
        corpus.namespace("apps", limits="required"),
        corpus.namespace("batch"),
        corpus.namespace("web-eu", limits="required"),
        corpus.namespace("kube-system"),
    ]
    images = [
        "r.example/web:1.0",
        "r.example/web:latest",
        "nginx",
        "r.example/api@sha256:abc",
        "busybox:1.36",
    ]
    hosts = ["a.example", "b.example", "c.example", "d.example", "e.example", "f.example"]
    label_sets = [
        None,
        {},
        {"team": "x"},
        {"team": "x", "tier": "y"},
        {"tier": "y", "app.kubernetes.io/name": "z"},
    ]
    namespaces = ["apps", "batch", "web-eu", "kube-system", "unrendered"]
    for i in range(count):
        ns = rnd.choice(namespaces)
        roll = rnd.random()
        if roll < 0.6:
            objs.append(
                corpus.deployment(
                    f"dep-{i}",
                    ns,
                    image=rnd.choice(images),
                    replicas=rnd.choice([0, 1, 2, 3]),
                    labels=rnd.choice(label_sets),
                    privileged=rnd.random() < 0.2,
                    limits=rnd.random() < 0.6,
                    non_root=rnd.random() < 0.7,
                )
            )
        elif roll < 0.8:
            objs.append(corpus.pod(f"pod-{i}", ns, image=rnd.choice(images), privileged=rnd.random() < 0.3))
        else:
            objs.append(corpus.ingress(f"ing-{i}", rnd.choice(hosts), ns))
    return objs


def _comparable(decision: Decision) -> tuple[Any, ...]:
    violations = sorted(
        (
            v.policy_id,
            v.rule,
            str(v.enforcement),
            v.message,
            repr(sorted(v.details.items())),
            v.waived_by,
            (v.object.kind, v.object.namespace, v.object.name, v.object.source_file) if v.object else None,
        )
        for v in decision.violations
    )
    return (
        decision.outcome,
        tuple(violations),
        tuple(sorted((e.policy_id, e.kind) for e in decision.errors)),
    )


WAIVERS = (
    Waiver("w-latest", "no-latest", namespace="batch", expires_at=NOW + timedelta(days=3)),
    Waiver("w-old", "required-labels", kind="Deployment", expires_at=NOW - timedelta(days=1)),
    Waiver("w-priv", "no-privileged", kind="Pod", name="pod-1*"),
)


@pytest.mark.parametrize(
    "context",
    [
        TargetContext(cluster="prod-eu-1", cluster_labels={"env": "prod"}, group="prod"),
        TargetContext(cluster="staging-1", cluster_labels={"env": "staging"}, group="staging"),
    ],
    ids=["prod", "staging"],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_regorus_and_opa_decide_identically(
    opa_engine: OpaEngine, regorus_engine: RegorusEngine, context: TargetContext, seed: int
) -> None:
    objects = corpus.corpus() + _generated(seed, 150)
    rendered = [RenderedObject(o, f"rendered/{i:03d}.yaml", 0) for i, o in enumerate(objects)]
    policies = corpus.all_policies()
    by_regorus = evaluate_target(rendered, policies, context, WAIVERS, engine=regorus_engine, now=NOW)
    by_opa = evaluate_target(rendered, policies, context, WAIVERS, engine=opa_engine, now=NOW)
    assert by_regorus.errors == [] and by_opa.errors == []
    assert by_regorus.outcome is Outcome.BLOCKED
    assert len(by_regorus.violations) > 50  # the corpus exercises every policy
    assert {v.policy_id for v in by_regorus.violations} >= {p.id for p in policies} - {
        "prod-replicas" if context.cluster_labels["env"] != "prod" else ""
    }
    assert any(v.waived_by for v in by_regorus.violations)
    assert _comparable(by_regorus) == _comparable(by_opa)
    assert by_regorus.evaluations == by_opa.evaluations
