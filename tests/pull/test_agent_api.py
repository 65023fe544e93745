"""Pull mode, issue 18: the agent API and the rollout of pull-mode legs, end to end on the server side.

Real parts: a real git repository rendered by the fetch, the real gate, the rollout services with the
in-process task queue of tests/rollouts, and the agent API called over Django's test client with real
tokens. The agent's apply is what these tests send as its result (the agent process is tested in
tests/agent and end to end in tests/integration)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connections
from django.test import Client
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from clusters import agent_tokens
from clusters.agent.digest import work_digest
from clusters.agent.work import restrict_rules
from clusters.models import AgentCredential
from clusters.tenancy import rules_for, save_allow_list
from fleet.audit.models import AuditEvent
from fleet.rollouts import dispatch, doorbell, services
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState
from fleet.rollouts.services import agentwork, control
from fleet.sources.services import fetch_repository
from tests.pull.conftest import BASE, pull_cluster
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)


def world(git_repo: Any, tasks: Any, n: int = 2, **group_settings: Any) -> tuple[Any, list[Any], Rollout]:
    """``n`` pull clusters in group "edge" and the first rollout of mapping "web" (prepared)."""
    clusters = [pull_cluster(f"edge-{i}") for i in range(1, n + 1)]
    group = make_group("edge", "edge", **group_settings)
    mapping = make_mapping(make_repository(git_repo), "web", "apps/web", group)
    git_repo.commit({"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"})},
                    "one")
    repo = mapping.repository
    assert fetch_repository(repo).ok
    tasks.drain()
    return mapping, clusters, Rollout.objects.get(mapping=mapping)


def actions(**filters: Any) -> list[str]:
    return list(AuditEvent.objects.filter(**filters).order_by("sequence").values_list("action", flat=True))


# -- access --------------------------------------------------------------------------------------------------
def _paths() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    out = []
    for path, ops in schema["paths"].items():
        if path.startswith("/api/agent/") or "{" in path:
            continue
        method = "get" if "get" in ops else next(iter(m for m in ops if m in ("post", "put", "patch")), "")
        if method:
            out.append((path, method))
    return out


def test_agent_tokens_refused_by_every_other_api_family(make_agent: Any) -> None:
    agent = make_agent(pull_cluster("edge-auth"))
    boot, _ = agent_tokens.issue_bootstrap(pull_cluster("edge-auth-2"))
    paths = _paths()
    assert len(paths) > 20
    families = {p.split("/")[2] for p, _m in paths}
    assert {"clusters", "rollouts", "policies", "audit", "access"} <= families
    for token in (agent.token, boot):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        for path, method in paths:
            resp = getattr(client, method)(path, {}, format="json") if method != "get" else client.get(path)
            assert resp.status_code in (401, 403), (path, method, resp.status_code)
    # with a cluster id too
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent.token}")
    assert client.get(f"/api/clusters/{agent.cluster.pk}/").status_code in (401, 403)
    assert client.post(f"/api/clusters/{agent.cluster.pk}/agent/bootstrap/").status_code in (401, 403)


def test_users_refused_on_agent_endpoints(make_agent: Any, admin_user: Any, admin_client: Any) -> None:
    agent = make_agent(pull_cluster("edge-users"))
    session = Client()
    session.force_login(admin_user)
    calls = [("get", "work"), ("get", "managed"), ("post", "report"), ("post", "rotate"),
             ("post", "work/1/heartbeat"), ("post", "work/1/result"), ("post", "register")]
    for who in (admin_client, session, APIClient()):
        for method, path in calls:
            resp = getattr(who, method)(BASE + path, {}, content_type="application/json") \
                if who is session else getattr(who, method)(BASE + path, {}, format="json")
            assert resp.status_code in (401, 403), (who, path, resp.status_code)
    # an agent token is no bootstrap token, and a bootstrap token no agent credential
    assert agent.post("register", {"agent_version": "x"}).status_code == 401
    boot, _ = agent_tokens.issue_bootstrap(agent.cluster)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {boot}")
    assert other.get(BASE + "work").status_code == 401


def test_register_single_use_expiry_rotation_and_revocation(make_agent: Any) -> None:
    cluster = pull_cluster("edge-reg")
    boot, _cred = agent_tokens.issue_bootstrap(cluster)
    client = APIClient()
    first = client.post(BASE + "register", {"agent_version": "1.0", "kubernetes_version": "v1.30.2"},
                        format="json", HTTP_AUTHORIZATION=f"Bearer {boot}")
    assert first.status_code == 201
    body = first.json()
    assert body["cluster"] == "edge-reg" and body["token"].startswith("fga_a_")
    assert body["poll_wait"] == 20 and body["report_interval"] == 60
    again = client.post(BASE + "register", {"agent_version": "1.0"}, format="json",
                        HTTP_AUTHORIZATION=f"Bearer {boot}")
    assert again.status_code == 401
    expired, cred2 = agent_tokens.issue_bootstrap(cluster)
    AgentCredential.objects.filter(pk=cred2.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    late = client.post(BASE + "register", {"agent_version": "1.0"}, format="json",
                       HTTP_AUTHORIZATION=f"Bearer {expired}")
    assert late.status_code == 401 and "expired" in late.json()["detail"]
    # registration is audited with the cluster as actor
    event = AuditEvent.objects.get(action="agent.registered")
    assert event.actor_name == "agent:edge-reg" and event.actor_id is None
    # rotation: the new token works, the old one for 60 s more
    old = body["token"]
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {old}")
    rotated = agent.post(BASE + "rotate")
    assert rotated.status_code == 200
    new = rotated.json()["token"]
    assert new != old
    assert agent.get(BASE + "managed").status_code == 200  # the old one, in its grace period
    AgentCredential.objects.filter(prefix=old[:12]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert agent.get(BASE + "managed").status_code == 401
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {new}")
    assert agent.get(BASE + "managed").status_code == 200
    # revoked: refused at once
    agent_tokens.revoke(cluster)
    assert agent.get(BASE + "work").status_code == 401
    assert agent.post(BASE + "report", {}).status_code == 401


# -- the leg's life ------------------------------------------------------------------------------------------
def test_rollout_to_two_pull_clusters_is_claimed_heartbeated_and_recorded(
    git_repo: Any, tasks: Any, make_agent: Any
) -> None:
    mapping, (one, two), rollout = world(git_repo, tasks)
    agents = {c.name: make_agent(c) for c in (one, two)}
    rollout.refresh_from_db()
    assert rollout.state == "syncing", rollout.reason
    legs = list(ClusterSync.objects.filter(rollout=rollout))
    assert {cs.state for cs in legs} == {"queued"}
    assert not [q for q in tasks.items if q.name == dispatch.SYNC_CLUSTER]  # no Celery task for pull legs
    # a stray task for a pull leg does nothing
    assert services.run_cluster_sync(legs[0].pk) == "a pull-mode cluster: its agent claims the leg"
    assert ClusterSync.objects.get(pk=legs[0].pk).state == "queued"

    a = agents["edge-1"]
    work = a.work()
    assert len(work) == 1
    item = work[0]
    leg = ClusterSync.objects.get(pk=item["id"])
    assert leg.cluster_id == one.pk and leg.state == "syncing" and leg.attempts == item["attempt"] == 1
    assert item["digest"] == work_digest(item["objects"], item["inventory"], item["prune"])
    assert item["mapping"] == "apps-web" and item["rollout"] == rollout.pk
    assert {o["kind"] for o in item["objects"]} == {"Namespace", "ConfigMap"}
    assert a.work() == []  # one leg, one poll: nothing more for this cluster
    # the other cluster's agent cannot touch this leg
    b = agents["edge-2"]
    assert b.heartbeat(item).status_code == 404
    assert b.result(item).status_code == 404
    assert a.heartbeat(item).status_code == 200
    assert a.heartbeat(item, attempt=7).status_code == 409
    assert a.result(item, attempt=7).status_code == 409
    assert a.result(item, digest="sha256:" + "0" * 64).status_code == 409
    resp = a.result(item)
    assert resp.status_code == 200 and resp.json() == {"recorded": "synced"}
    assert a.result(item).status_code == 409  # finished: nothing recorded twice
    assert a.heartbeat(item).status_code == 409
    rollout.refresh_from_db()
    assert rollout.state == "syncing"
    work_b = b.work()
    assert len(work_b) == 1 and b.result(work_b[0]).json() == {"recorded": "synced"}
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    state = SyncedState.objects.get(mapping=mapping, cluster=one)
    assert state.commit_id == rollout.commit_id and {r["kind"] for r in state.inventory} == {"Namespace",
                                                                                             "ConfigMap"}
    # audited with the cluster as actor
    started = AuditEvent.objects.filter(action="sync.started", cluster_name="edge-1").get()
    assert started.actor_name == "agent:edge-1" and started.actor_id is None
    assert AuditEvent.objects.filter(action="sync.succeeded", actor_name="agent:edge-2").exists()
    assert {"agent.polled", "agent.heartbeat", "agent.result"} <= set(actions(actor_name="agent:edge-1"))
    # what the agent manages now
    managed = a.client.get(BASE + "managed").json()["mappings"]
    assert [m["mapping"] for m in managed] == ["apps-web"] and managed[0]["self_heal"] is False
    assert managed[0]["restrict"] is None  # an unrestricted group
    # a group with an allow-list: the agent's self-heal gets it, as Work does
    root = User.objects.create_superuser("root-a", "root-a@example.com", "x")
    source = {"repository": mapping.repository.name, "path": "apps/*"}
    save_allow_list(root, mapping.cluster_group, {"namespaces": ["apps"], "sources": [source]})
    (entry,) = a.client.get(BASE + "managed").json()["mappings"]
    assert entry["restrict"]["namespaces"] == ["apps"]
    assert restrict_rules(entry["restrict"]) == rules_for(mapping.cluster_group)


def test_push_and_pull_clusters_in_one_rollout(git_repo: Any, tasks: Any, make_fleet: Any,
                                               make_agent: Any) -> None:
    fleet = make_fleet({"p": {"env": "edge"}})
    _mapping, (one,), rollout = world(git_repo, tasks, n=1)
    rollout.refresh_from_db()
    push_leg = ClusterSync.objects.get(rollout=rollout, cluster=fleet.clusters["p"])
    assert push_leg.state == "synced"  # the worker (the in-process queue) synced the push cluster
    assert fleet.sandbox("p").get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}
    assert rollout.state == "syncing"
    agent = make_agent(one)
    (item,) = agent.work()
    assert agent.result(item).json()["recorded"] == "synced"
    rollout.refresh_from_db()
    assert rollout.state == "synced"
    # the periodic drift check skips the pull cluster (its agent checks and reports)
    tasks.clear()
    assert services.check_all_drift() == 1
    assert [q.args for q in tasks.items] == [[SyncedState.objects.get(cluster=fleet.clusters["p"]).pk]]


def test_approval_required_nothing_handed_out_before_approval(
    git_repo: Any, tasks: Any, make_agent: Any, make_user: Any
) -> None:
    mapping, (one, _two), rollout = world(git_repo, tasks, approval_required=True)
    rollout.refresh_from_db()
    assert rollout.state == "awaiting_approval", rollout.reason
    agent = make_agent(one)
    assert agent.work() == []
    # the plan shown for approval: no agent report yet, reviewed as CREATE and saying so
    leg = ClusterSync.objects.get(rollout=rollout, cluster=one)
    assert "no report from the agent" in str(leg.evaluation), leg.evaluation
    control.approve(rollout, make_user("carol", role="approver", scope=mapping.cluster_group))
    tasks.drain()
    (item,) = agent.work()
    assert item["rollout"] == rollout.pk


def test_failed_result_counts_toward_the_halt_threshold(git_repo: Any, tasks: Any, make_agent: Any) -> None:
    _mapping, (one, two), rollout = world(git_repo, tasks, batch_size=1, failure_threshold=0)
    first, second = make_agent(one), make_agent(two)
    (item,) = first.work()
    assert second.work() == []  # batch 2 has not started
    resp = first.result(item, ok=False)
    assert resp.json() == {"recorded": "failed"}
    rollout.refresh_from_db()
    assert rollout.state == "halted" and "failure threshold" in rollout.reason
    assert "admission webhook denied" in ClusterSync.objects.get(pk=item["id"]).error
    assert second.work() == []


def test_transient_failure_is_retried_by_the_agent(git_repo: Any, tasks: Any, make_agent: Any) -> None:
    _mapping, (one,), _rollout = world(git_repo, tasks, n=1)
    agent = make_agent(one)
    (item,) = agent.work()
    resp = agent.result(item, ok=False, transient=True, error="connection refused")
    assert resp.json() == {"recorded": "retrying"}
    ClusterSync.objects.filter(pk=item["id"]).update(retry_at=timezone.now())
    (again,) = agent.work()
    assert again["id"] == item["id"] and again["attempt"] == 2
    assert agent.result(again).json() == {"recorded": "synced"}


def test_lease_expiry_requeues_and_refuses_the_old_attempt(
    git_repo: Any, tasks: Any, make_agent: Any
) -> None:
    _mapping, (one,), rollout = world(git_repo, tasks, n=1)
    agent = make_agent(one)
    (item,) = agent.work()
    ClusterSync.objects.filter(pk=item["id"]).update(lease_until=timezone.now() - timedelta(seconds=1))
    outcome = services.reconcile()
    assert outcome["requeued_for_agents"] == 1 and outcome["redispatched"] == 0
    leg = ClusterSync.objects.get(pk=item["id"])
    assert leg.state == "queued" and leg.finished_at is None
    assert "sync.agent_lost" in actions(target_id=str(leg.pk))
    assert not [q for q in tasks.items if q.name == dispatch.SYNC_CLUSTER]
    # the lost attempt's answer is refused and records nothing
    assert agent.heartbeat(item).status_code == 409
    assert agent.result(item).status_code == 409
    assert ClusterSync.objects.get(pk=item["id"]).state == "queued"
    (again,) = agent.work()
    assert again["attempt"] == 2
    # a poll requeues its own cluster's expired legs too (no reconcile needed)
    ClusterSync.objects.filter(pk=item["id"]).update(lease_until=timezone.now() - timedelta(seconds=1))
    (third,) = agent.work()
    assert third["attempt"] == 3
    assert agent.result(again).status_code == 409
    assert agent.result(third).json() == {"recorded": "synced"}
    rollout.refresh_from_db()
    assert rollout.state == "synced"


def test_empty_poll_queries_and_audit_coalescing(make_agent: Any, django_assert_max_num_queries: Any) -> None:
    agent = make_agent(pull_cluster("edge-q"))
    cache.delete(f"agent-polled:{agent.cluster.pk}")
    assert agent.work() == []
    # an empty poll: the credential (with its cluster), lost leases, queued legs
    with django_assert_max_num_queries(3):
        assert agent.work() == []
    assert actions(action="agent.polled", actor_name="agent:edge-q") == ["agent.polled"]


def test_long_poll_wakes_when_work_is_queued(git_repo: Any, tasks: Any, make_agent: Any, make_user: Any,
                                             settings: Any) -> None:
    """A poll waiting for work is woken by the doorbell the approval's advance rings: it returns the leg
    (were it not woken it would return nothing after its wait)."""
    mapping, (one,), rollout = world(git_repo, tasks, n=1, approval_required=True)
    agent = make_agent(one)
    settings.FLEETGATE_AGENT_POLL_WAIT = 120
    got: list[Any] = []
    started = threading.Event()

    def wait_for_work() -> None:
        try:
            started.set()
            got.extend(agentwork.poll(one, 120))
        finally:
            connections.close_all()

    waiter = threading.Thread(target=wait_for_work)
    waiter.start()
    started.wait()
    before = doorbell.current(one.pk)
    control.approve(rollout, make_user("carol", role="approver", scope=mapping.cluster_group))
    tasks.drain()
    assert doorbell.current(one.pk) != before
    waiter.join(timeout=150)
    assert [w["rollout"] for w in got] == [rollout.pk]
    settings.FLEETGATE_AGENT_POLL_WAIT = 1
    assert agent.work(wait=500) == []  # capped at FLEETGATE_AGENT_POLL_WAIT; nothing more to hand out


def test_report_records_live_state_drift_and_heal_and_plans_use_it(
    git_repo: Any, tasks: Any, make_agent: Any, make_user: Any
) -> None:
    mapping, (one,), rollout = world(git_repo, tasks, n=1, approval_required=True)
    control.approve(rollout, make_user("carol", role="approver", scope=mapping.cluster_group))
    tasks.drain()
    agent = make_agent(one)
    (item,) = agent.work()
    agent.result(item)
    live_cm = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "web", "namespace": "apps", "uid": "u1", "resourceVersion": "9"},
               "data": {"color": "red"}}
    live_ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}
    drifted = {"ref": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "apps", "name": "web"},
               "state": "modified", "fields": [{"path": "data.color", "expected": "blue", "actual": "red"}]}
    resp = agent.post("report", {"agent_version": "test-agent/2", "kubernetes_version": "v1.31.1",
                                 "mappings": [
        {"mapping": "apps-web", "live": [live_ns, live_cm],
         "drift": {"drifted": True, "objects": [drifted], "errors": []}, "healed": None},
        {"mapping": "someone-else", "live": []},
    ]})
    assert resp.status_code == 200 and resp.json() == {"accepted": 1}
    one.refresh_from_db()
    assert one.status == "reachable" and one.kubernetes_version == "v1.31.1"
    assert one.agent_version == "test-agent/2"
    state = SyncedState.objects.get(mapping=mapping, cluster=one)
    assert state.drift_status == "drifted" and state.live_reported_at is not None
    detected = AuditEvent.objects.get(action="drift.detected")
    assert detected.actor_name == "agent:edge-1" and "ConfigMap web modified" in detected.message
    healed = agent.post("report", {"mappings": [{"mapping": "apps-web", "live": [live_ns, live_cm],
                                                 "drift": {"drifted": True, "objects": [drifted]},
                                                 "healed": {"counts": {"configured": 1}}}]})
    assert healed.status_code == 200
    assert "drift.healed" in actions(actor_name="agent:edge-1")
    state.refresh_from_db()
    assert state.drift_status == "in_sync"
    # a new commit: the plan and the gate's review come from the report (UPDATE of the reported object)
    git_repo.commit({"apps/web/cm.yaml": configmap("web", {"color": "green"})}, "two")
    assert fetch_repository(mapping.repository).ok
    tasks.drain()
    second = Rollout.objects.filter(mapping=mapping).order_by("-id").first()
    assert second.pk != rollout.pk and second.state == "awaiting_approval", second.reason
    leg = ClusterSync.objects.get(rollout=second, cluster=one)
    assert leg.plan["source"] == "agent report" and leg.plan["reported_at"]
    by_kind = {i["ref"]["kind"]: i for i in leg.plan["items"]}
    assert by_kind["ConfigMap"]["action"] == "update" and "+  color: green" in by_kind["ConfigMap"]["diff"]
    assert by_kind["Namespace"]["action"] == "unchanged"
    assert leg.evaluation.get("reviewed") == {"create": [], "delete": []}
    # rollback to the first commit works for the pull leg too
    control.approve(second, make_user("carol", role="approver", scope=mapping.cluster_group))
    tasks.drain()
    (item2,) = agent.work()
    assert agent.result(item2).json()["recorded"] == "synced"
    deployer = make_user("rolf", role="deployer", scope=mapping.cluster_group)
    back = control.rollback(second, rollout.commit, deployer)
    tasks.drain()
    control.approve(back, make_user("dave", role="approver", scope=mapping.cluster_group))
    tasks.drain()
    (item3,) = agent.work()
    assert item3["rollout"] == back.pk
    assert {o["data"]["color"] for o in item3["objects"] if o["kind"] == "ConfigMap"} == {"blue"}
    assert agent.result(item3).json()["recorded"] == "synced"
    back.refresh_from_db()
    assert back.state == "synced"


def test_body_limit_is_16_mib(make_agent: Any) -> None:
    agent = make_agent(pull_cluster("edge-big"))
    big = {"mappings": [{"mapping": "x", "live": [{"kind": "ConfigMap", "data": {"k": "v" * (6 << 20)}}]}]}
    assert agent.post("report", big).status_code == 200  # over the 5 MiB of the rest of the API
    huge = {"mappings": [{"mapping": "x", "live": [{"kind": "ConfigMap", "data": {"k": "v" * (17 << 20)}}]}]}
    resp = agent.post("report", huge)
    assert resp.status_code == 413 and "larger than the limit" in resp.json()["detail"]
