"""End to end on real parts: a git repository made here (file:// URL) with two paths mapped to three groups of
sandbox clusters (dev automated, staging in batches with a canary and self-heal, prod needing two
approvals), the real sources fetch and render, a Rego policy on the real regorus engine that blocks one
commit, a waiver that lets a later one through, approvals by two users (the author refused), batches, a
prune after a file is deleted, a rollback, and a drift found and self-healed. Every step is checked
through the API and in the audit log."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from fleet.audit.models import AuditEvent
from fleet.rollouts import services
from fleet.rollouts.models import Rollout
from fleet.sources.models import Commit
from fleet.sources.services import fetch_repository
from policies.models import PolicyBinding, Waiver
from policies.services.definitions import PolicyDefinition, save_policy
from tests.rollouts.conftest import (
    NAMESPACE,
    configmap,
    deployment,
    make_group,
    make_mapping,
    make_repository,
)

pytestmark = pytest.mark.django_db(transaction=True)

NO_LATEST = """package main

deny[msg] {
    input.kind == "Deployment"
    some i
    image := input.spec.template.spec.containers[i].image
    endswith(image, ":latest")
    msg := sprintf("%s uses the latest tag", [input.metadata.name])
}
"""


def _actions(**filters: Any) -> list[str]:
    return list(AuditEvent.objects.filter(**filters).order_by("sequence").values_list("action", flat=True))


def _rollout(client: Any, mapping: Any, commit: Commit) -> dict[str, Any]:
    listed = client.get(f"/api/rollouts/?mapping={mapping.pk}&commit={commit.pk}").json()
    assert listed["count"] == 1, listed
    detail = client.get(f"/api/rollouts/{listed['results'][0]['id']}/")
    assert detail.status_code == 200
    return detail.json()


def test_commit_to_fleet_end_to_end(
    git_repo: Any, make_fleet: Any, tasks: Any, make_user: Any, token_client: Any, admin_client: Any
) -> None:
    fleet = make_fleet(
        {
            "dev-1": {"env": "dev"},
            "dev-2": {"env": "dev"},
            "stg-1": {"env": "staging"},
            "stg-2": {"env": "staging", "canary": "true"},
            "stg-3": {"env": "staging"},
            "prod-1": {"env": "prod"},
            "prod-2": {"env": "prod"},
        }
    )
    dev = make_group("dev", "dev")
    staging = make_group(
        "staging",
        "staging",
        batch_size=1,
        canary_selector={"matchLabels": {"canary": "true"}},
        self_heal=True,
    )
    prod = make_group("prod", "prod", approval_required=True, approvals_required=2)
    repo = make_repository(git_repo)
    maps = {
        "web-dev": make_mapping(repo, "web-dev", "apps/web", dev),
        "web-staging": make_mapping(repo, "web-staging", "apps/web", staging),
        "web-prod": make_mapping(repo, "web-prod", "apps/web", prod),
        "api-dev": make_mapping(repo, "api-dev", "apps/api", dev),
    }
    policy = save_policy(
        "no-latest", PolicyDefinition(style="conftest", modules=(("latest.rego", NO_LATEST),))
    ).policy
    PolicyBinding.objects.create(policy=policy, cluster_group=None, enforcement="deny")

    author = make_user("dana", role="approver", scope=prod)
    author.email = "dana@example.com"
    author.save()
    alice = make_user("alice", role="approver", scope=prod)
    bob = make_user("bob", role="approver", scope=prod)
    outsider = make_user("olga", role="approver", scope=staging)
    prod_viewer = make_user("victor", role="viewer", scope=prod)
    deployer = make_user("dora", role="deployer", scope=None)

    # --- commit 1: everything passes; dev syncs at once, staging in batches (canary first), prod waits.
    git_repo.commit(
        {
            "apps/web/ns.yaml": NAMESPACE,
            "apps/web/cm.yaml": configmap("web", {"color": "blue"}),
            "apps/web/extra.yaml": configmap("web-extra", {"keep": "no"}),
            "apps/web/deploy.yaml": deployment("web", "nginx:1.27"),
            "apps/api/cm.yaml": configmap("api", {"a": "b"}, namespace="default"),
        },
        "web and api",
        email="dana@example.com",
    )
    assert fetch_repository(repo).ok
    c1 = Commit.objects.get(repository=repo, sha=git_repo.git("rev-parse", "HEAD"))
    tasks.drain()

    dev_r = _rollout(admin_client, maps["web-dev"], c1)
    assert dev_r["state"] == "synced", dev_r["reason"]
    assert dev_r["progress"]["by_state"] == {"synced": 2}
    assert _rollout(admin_client, maps["api-dev"], c1)["state"] == "synced"
    for short in ("dev-1", "dev-2"):
        assert fleet.sandbox(short).get_object("v1", "ConfigMap", "web-extra", "apps") is not None
        assert fleet.sandbox(short).get_object("v1", "ConfigMap", "api", "default") is not None

    stg_r = _rollout(admin_client, maps["web-staging"], c1)
    assert stg_r["state"] == "synced"
    assert stg_r["batch_count"] == 3
    batches = {s["cluster"]["name"].split("-", 1)[1]: (s["batch"], s["canary"]) for s in stg_r["syncs"]}
    assert batches == {"stg-2": (0, True), "stg-1": (1, False), "stg-3": (2, False)}
    assert stg_r["progress"]["by_batch"] == {"0": {"synced": 1}, "1": {"synced": 1}, "2": {"synced": 1}}
    # The batches ran in order: each leg started after the previous batch finished.
    order = list(
        AuditEvent.objects.filter(
            action="sync.started", target_type="clustersync", after__rollout=stg_r["id"]
        )
        .order_by("sequence")
        .values_list("cluster_name", flat=True)
    )
    assert [n.split("-", 1)[1] for n in order] == ["stg-2", "stg-1", "stg-3"]

    prod_r = _rollout(admin_client, maps["web-prod"], c1)
    assert prod_r["state"] == "awaiting_approval"
    assert prod_r["approvals_required"] == 2
    # The plan (server-side dry run) is stored and shown before approval.
    sync = admin_client.get(f"/api/cluster-syncs/?rollout={prod_r['id']}").json()["results"][0]
    assert sync["plan"]["counts"]["create"] == 4, sync["plan"]
    planned = {(i["ref"]["kind"], i["ref"]["name"]): i["action"] for i in sync["plan"]["items"]}
    assert planned[("ConfigMap", "web-extra")] == "create"
    assert fleet.sandbox("prod-1").get_object("v1", "ConfigMap", "web", "apps") is None

    url = f"/api/rollouts/{prod_r['id']}"
    # Approval rules: the commit's author is refused, out of scope is 404, a viewer is 403.
    refused = token_client(author).post(f"{url}/approve/")
    assert refused.status_code == 403 and "author" in refused.json()["detail"]
    assert token_client(outsider).post(f"{url}/approve/").status_code == 404
    assert token_client(prod_viewer).post(f"{url}/approve/").status_code == 403
    first = token_client(alice).post(f"{url}/approve/")
    assert first.status_code == 200 and first.json()["approvals_given"] == 1
    assert first.json()["state"] == "awaiting_approval"
    assert token_client(alice).post(f"{url}/approve/").status_code == 409  # distinct users
    second = token_client(bob).post(f"{url}/approve/")
    assert second.status_code == 200 and second.json()["state"] == "queued"
    tasks.drain()
    assert admin_client.get(f"{url}/").json()["state"] == "synced"
    assert fleet.sandbox("prod-2").get_object("apps/v1", "Deployment", "web", "apps") is not None

    # --- commit 2: nginx:latest is blocked by the policy everywhere.
    git_repo.commit({"apps/web/deploy.yaml": deployment("web", "nginx:latest")}, "use latest")
    assert fetch_repository(repo).ok
    c2 = Commit.objects.get(repository=repo, sha=git_repo.git("rev-parse", "HEAD"))
    tasks.drain()
    for name in ("web-dev", "web-staging", "web-prod"):
        blocked = _rollout(admin_client, maps[name], c2)
        assert blocked["state"] == "blocked", blocked
        assert "latest tag" in blocked["reason"]
        assert {s["decision"] for s in blocked["syncs"]} == {"blocked"}
    assert not Rollout.objects.filter(mapping=maps["api-dev"], commit=c2).exists()  # apps/api unchanged
    assert (
        fleet.sandbox("dev-1").get_object("apps/v1", "Deployment", "web", "apps")["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        == "nginx:1.27"
    )

    # --- a waiver for the web Deployment; commit 3 (still latest, a new color, extra.yaml deleted) passes.
    Waiver.objects.create(
        policy=policy,
        kind="Deployment",
        name_pattern="web",
        expires_at=timezone.now() + timedelta(days=1),
        justification="upstream only publishes latest this week",
        author=deployer,
    )
    git_repo.commit(
        {"apps/web/cm.yaml": configmap("web", {"color": "green"})}, "green", delete=("apps/web/extra.yaml",)
    )
    assert fetch_repository(repo).ok
    c3 = Commit.objects.get(repository=repo, sha=git_repo.git("rev-parse", "HEAD"))
    tasks.drain()
    dev3 = _rollout(admin_client, maps["web-dev"], c3)
    assert dev3["state"] == "synced" and dev3["decision"] == "passed"
    for short in ("dev-1", "dev-2", "stg-1", "stg-2", "stg-3"):
        box = fleet.sandbox(short)
        assert box.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "green"}
        assert box.get_object("v1", "ConfigMap", "web-extra", "apps") is None  # pruned
    dev_sync = admin_client.get(f"/api/cluster-syncs/?rollout={dev3['id']}").json()["results"][0]
    assert {"deleted"} <= {r["action"] for r in dev_sync["results"]}
    prod3 = _rollout(admin_client, maps["web-prod"], c3)
    assert prod3["state"] == "awaiting_approval"
    for user in (alice, bob):
        assert token_client(user).post(f"/api/rollouts/{prod3['id']}/approve/").status_code == 200
    tasks.drain()
    assert admin_client.get(f"/api/rollouts/{prod3['id']}/").json()["state"] == "synced"
    assert fleet.sandbox("prod-1").get_object("v1", "ConfigMap", "web-extra", "apps") is None

    # --- rollback of dev to commit 1 (a deployer starts it; it passes the gate like any rollout).
    back = token_client(deployer).post(
        f"/api/rollouts/{dev3['id']}/rollback/", {"commit": c1.pk}, format="json"
    )
    assert back.status_code == 201, back.content
    assert back.json()["trigger"] == "rollback" and back.json()["created_by"] == "dora"
    tasks.drain()
    rolled = admin_client.get(f"/api/rollouts/{back.json()['id']}/").json()
    assert rolled["state"] == "synced", rolled["reason"]
    assert fleet.sandbox("dev-1").get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}
    assert fleet.sandbox("dev-1").get_object("v1", "ConfigMap", "web-extra", "apps") is not None
    states = admin_client.get(f"/api/synced-states/?mapping={maps['web-dev'].pk}").json()["results"]
    assert {s["commit"]["sha"] for s in states} == {c1.sha}

    # --- drift: someone edits a ConfigMap on a staging cluster; the check finds it and self-heal repairs it.
    box = fleet.sandbox("stg-1")
    box.apply_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "apps"},
            "data": {"color": "red"},
        },
        manager="kubectl-edit",
    )
    assert box.get_object("v1", "ConfigMap", "web", "apps")["data"]["color"] == "red"
    assert services.check_all_drift() >= 1
    tasks.drain()
    assert box.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "green"}
    stg_state = admin_client.get(
        f"/api/synced-states/?mapping={maps['web-staging'].pk}&cluster={fleet.clusters['stg-1'].pk}"
    ).json()["results"][0]
    assert stg_state["drift_status"] == "in_sync" and stg_state["healed_at"]
    detected = AuditEvent.objects.get(action="drift.detected", cluster_name=fleet.clusters["stg-1"].name)
    assert "ConfigMap web changed" in detected.message
    assert (
        AuditEvent.objects.filter(action="drift.healed", cluster_name=fleet.clusters["stg-1"].name).count()
        == 1
    )

    # --- the audit log holds every step of the prod rollout, in order.
    prod_actions = _actions(target_type="rollout", target_id=str(prod_r["id"]))
    expected = [
        "rollout.created",
        "rollout.rendered",
        "rollout.evaluated",
        "rollout.awaiting_approval",
        "rollout.approval",
        "rollout.approval",
        "rollout.queued",
        "rollout.syncing",
        "rollout.synced",
    ]
    assert [a for a in prod_actions if a in expected] == expected, prod_actions
    assert AuditEvent.objects.filter(action="rollout.blocked").count() == 3
    assert AuditEvent.objects.filter(action="sync.succeeded", scope_group_name="prod").count() == 4
    assert AuditEvent.objects.filter(action="policy.decision").exists()
    assert AuditEvent.objects.filter(action="waiver.used").exists()
