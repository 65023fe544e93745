"""A deny stops the rollout of that cluster only: in one group, the cluster a context-aware policy blocks
keeps its leg blocked (nothing applied there) while the others sync (real git, regorus, sandboxes)."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from policies.models import PolicyBinding
from policies.services.definitions import PolicyDefinition, save_policy
from tests.rollouts.conftest import NAMESPACE, deployment, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)

PROD_REPLICAS = """package main

import rego.v1

deny contains msg if {
    input.kind == "Deployment"
    data.fleetgate.context.cluster.labels.tier == "critical"
    input.spec.replicas < 2
    msg := sprintf("%s: critical clusters need at least 2 replicas", [input.metadata.name])
}
"""


def test_only_the_blocked_cluster_is_held(git_repo: Any, make_fleet: Any, tasks: Any) -> None:
    from clusters.models import ClusterGroup

    fleet = make_fleet(
        {
            "eu-1": {"env": "prod", "tier": "critical"},
            "eu-2": {"env": "prod", "tier": "standard"},
            "us-1": {"env": "prod", "tier": "standard"},
        }
    )
    group = ClusterGroup.objects.create(name="prod-mixed", selector={"matchLabels": {"env": "prod"}})
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    policy = save_policy(
        "replicas", PolicyDefinition(style="conftest", modules=(("replicas.rego", PROD_REPLICAS),))
    ).policy
    PolicyBinding.objects.create(policy=policy, cluster_group=group, enforcement="deny")

    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/web.yaml": deployment("web", "nginx:1.27")}, "web"
    )
    assert fetch_repository(repo).ok
    tasks.drain()

    rollout = Rollout.objects.get(mapping=mapping)
    states = {cs.cluster.name.split("-", 1)[1]: cs.state for cs in rollout.syncs.select_related("cluster")}
    assert states == {"eu-1": "blocked", "eu-2": "synced", "us-1": "synced"}, rollout.reason
    assert rollout.state == "synced"
    assert rollout.decision == "blocked"
    assert "1 blocked by policy" in rollout.reason
    # Nothing reached the blocked cluster; the others have the Deployment.
    assert fleet.sandbox("eu-1").get_object("apps/v1", "Deployment", "web", "apps") is None
    assert fleet.sandbox("eu-2").get_object("apps/v1", "Deployment", "web", "apps") is not None
