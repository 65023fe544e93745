"""The gate reviews what the sync will do on each cluster: the live object is read through the connector
(the plan's reads), so an object that exists is an UPDATE with oldObject, one that does not is a CREATE,
and each object the sync would prune is a DELETE. Prunes are gated like applies. A cluster whose live
state cannot be read is "cannot review" (blocked) unless its group allows create-only review.

Real parts throughout: a git repository, the rollout services, the sandbox emulator AND the real
kube-apiserver (``target``), regorus AND the OPA server (``engine_name``). Policies are written like
gatekeeper-library's templates (tests/policies/review_library.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from kubernetes import client as k8s_client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from clusters.models import Cluster, ClusterGroup
from clusters.sandbox import SandboxServer
from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from policies.engine.opa_server import free_port
from policies.models import Evaluation, PolicyBinding
from policies.services.definitions import PolicyDefinition, save_policy
from tests.kube_backends import (  # noqa: F401 - fixtures registered by import
    KubeApiServer,
    kube_apiserver,
    kube_apiserver_bin_dir,
    unique_name,
)
from tests.opa_server import opa_server  # noqa: F401
from tests.policies import review_library as rl
from tests.rollouts.conftest import make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)

_ids = itertools.count(1)


@dataclass
class Target:
    """One cluster to roll out to, registered as a Cluster, with a raw client for the test's own moves."""

    cluster: Cluster
    namespace: str
    raw: DynamicClient
    env: str

    def put(self, obj: dict[str, Any]) -> None:
        """Create an object behind Fleetgate's back (another field manager)."""
        res = self.raw.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        self.raw.server_side_apply(
            res, body=obj, namespace=obj["metadata"].get("namespace"), field_manager="someone-else"
        )

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        res = self.raw.resources.get(api_version=api_version, kind=kind)
        try:
            resp = self.raw.get(res, name=name, namespace=self.namespace, serialize=False)
        except NotFoundError:
            return None
        return json.loads(resp.data)  # type: ignore[no-any-return]


@pytest.fixture(params=["sandbox", pytest.param("kube-apiserver", marks=pytest.mark.kube_apiserver)])
def target(request: pytest.FixtureRequest, tmp_path: Path, sandbox_server: SandboxServer) -> Iterator[Target]:
    namespace = unique_name(request.node.originalname, "rv")
    env = f"review-{next(_ids)}"
    if request.param == "sandbox":
        name = f"rv{next(_ids)}-sandbox"
        token = f"tok-{name}-secret"
        box = sandbox_server.add_cluster(name, token=token, rollout_delay=0)
        cfg = k8s_client.Configuration()
        cfg.host = box.url
        cfg.api_key = {"authorization": f"Bearer {token}"}
        raw = DynamicClient(k8s_client.ApiClient(cfg), cache_file=str(tmp_path / "raw.json"))
        box.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        cluster = Cluster.objects.create(
            name=name, api_url=box.url, auth_method="token", token=token, labels={"env": env}
        )
        try:
            yield Target(cluster, namespace, raw, env)
        finally:
            sandbox_server.remove_cluster(name)
        return
    kube: KubeApiServer = request.getfixturevalue("kube_apiserver")
    raw = kube.dynamic_client(tmp_path / "raw.json")
    core = k8s_client.CoreV1Api(raw.client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    cluster = Cluster.objects.create(
        name=f"rv{next(_ids)}-kube-apiserver",
        api_url=kube.url,
        auth_method="token",
        token=kube.token,
        ca_data=kube.ca_pem,
        labels={"env": env},
    )
    try:
        yield Target(cluster, namespace, raw, env)
    finally:
        core.delete_namespace(namespace)


@pytest.fixture(params=["regorus", "opa"])
def engine_name(request: pytest.FixtureRequest, settings: Any) -> str:
    """The Rego engine the gate uses (through the settings, as in production)."""
    if request.param == "opa":
        server = request.getfixturevalue("opa_server")
        settings.FLEETGATE_REGO_ENGINE = "opa"
        settings.FLEETGATE_OPA_URL = server.url
    else:
        settings.FLEETGATE_REGO_ENGINE = "regorus"
    return str(request.param)


def _bind_library(group: ClusterGroup, engine_name: str) -> None:
    gatekeeper = {
        "immutable": (rl.IMMUTABLE_FIELDS_TEMPLATE, rl.IMMUTABLE_FIELDS_CONSTRAINT, "deny"),
        "scale-down": (rl.SCALE_DOWN_TEMPLATE, rl.SCALE_DOWN_CONSTRAINT, "deny"),
        "keep-volumes": (rl.PROTECTED_DELETE_TEMPLATE, rl.PROTECTED_DELETE_CONSTRAINT, "deny"),
        "echo": (rl.ECHO_TEMPLATE, rl.ECHO_CONSTRAINT, "warn"),
    }
    for name, (template, constraint, enforcement) in gatekeeper.items():
        definition = PolicyDefinition(style="gatekeeper", template=template, constraints=(constraint,))
        policy = save_policy(f"{name}-{engine_name}", definition).policy
        PolicyBinding.objects.create(policy=policy, cluster_group=group, enforcement=enforcement)


def _doc(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def _reviews(rollout: Rollout, cluster: Cluster) -> dict[str, str]:
    """What the echo policy saw: object name -> review operation, from the stored Evaluation."""
    evaluation = Evaluation.objects.get(commit=rollout.commit, mapping=rollout.mapping, cluster=cluster)
    return {v.name: v.message for v in evaluation.violations.all() if v.policy_name.startswith("echo-")}


def _denials(rollout: Rollout) -> list[str]:
    cs = rollout.syncs.get()
    return sorted(
        v["message"]
        for v in cs.evaluation.get("violations", [])
        if v["enforcement"] == "deny" and not v.get("waived_by")
    )


def _setup(git_repo: Any, target: Target, engine_name: str, **group_settings: Any) -> Any:
    group = ClusterGroup.objects.create(
        name=f"g-{target.env}", selector={"matchLabels": {"env": target.env}}, **group_settings
    )
    _bind_library(group, engine_name)
    repo = make_repository(git_repo)
    return make_mapping(repo, "web", "apps/web", group), repo


def test_updates_are_reviewed_against_the_live_objects(
    git_repo: Any, target: Target, engine_name: str, tasks: Any
) -> None:
    ns = target.namespace
    target.put(rl.deployment("web", replicas=10, ns=ns))
    target.put(rl.deployment("api", replicas=2, ns=ns))
    # five ConfigMaps in one namespace are read with one LIST (four or more), two of them exist
    config = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cfg-{i}", "namespace": ns},
            "data": {"i": str(i)},
        }
        for i in range(5)
    ]
    target.put(config[0])
    target.put(config[1])
    mapping, repo = _setup(git_repo, target, engine_name)
    moved_selector = rl.deployment("api", replicas=2, app="api-v2", ns=ns)
    git_repo.commit(
        {
            **{f"apps/web/cfg-{i}.yaml": _doc(c) for i, c in enumerate(config)},
            "apps/web/web.yaml": _doc(rl.deployment("web", replicas=4, ns=ns)),  # 10 -> 4
            "apps/web/api.yaml": _doc(moved_selector),
            "apps/web/settings.yaml": _doc(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns}}
            ),
        },
        "scale web down, move api's selector",
        email="ann@example.com",
    )
    assert fetch_repository(repo).ok
    tasks.drain()

    rollout = Rollout.objects.get(mapping=mapping)
    cs = rollout.syncs.get()
    assert (rollout.state, cs.state, cs.decision) == ("blocked", "blocked", "blocked"), rollout.reason
    assert _reviews(rollout, target.cluster) == {
        "web": "UPDATE",
        "api": "UPDATE",
        "settings": "CREATE",
        "cfg-0": "UPDATE",
        "cfg-1": "UPDATE",
        "cfg-2": "CREATE",
        "cfg-3": "CREATE",
        "cfg-4": "CREATE",
    }
    echo = Evaluation.objects.get(commit=rollout.commit, cluster=target.cluster).violations
    old = echo.get(name="cfg-1", policy_name__startswith="echo-").details["review"]["oldObject"]
    assert (old["apiVersion"], old["kind"], old["metadata"]["name"], old["data"]) == (
        "v1",
        "ConfigMap",
        "cfg-1",
        {"i": "1"},
    )
    assert _denials(rollout) == [
        "Deployment api: spec.selector is immutable",
        "Deployment web: scaling down from 10 to 4 replicas removes more than 50%",
    ]
    assert cs.evaluation["review"]["mode"] == "live"
    assert cs.evaluation["review"]["operations"] == {"CREATE": 4, "UPDATE": 4, "DELETE": 0}
    # nothing was applied: the live objects are as they were
    assert target.get("apps/v1", "Deployment", "web")["spec"]["replicas"] == 10  # type: ignore[index]
    assert target.get("v1", "ConfigMap", "settings") is None


def test_a_prune_of_a_volume_claim_is_denied_and_the_claim_stays(
    git_repo: Any, target: Target, engine_name: str, tasks: Any
) -> None:
    ns = target.namespace
    mapping, repo = _setup(git_repo, target, engine_name)
    settings_cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns}}
    git_repo.commit(
        {"apps/web/data.yaml": _doc(rl.pvc("data", ns=ns)), "apps/web/settings.yaml": _doc(settings_cm)},
        "a claim and a config map",
        email="ann@example.com",
    )
    assert fetch_repository(repo).ok
    tasks.drain()
    first = Rollout.objects.get(mapping=mapping)
    assert first.state == "synced", first.reason
    assert _reviews(first, target.cluster) == {"data": "CREATE", "settings": "CREATE"}
    assert target.get("v1", "PersistentVolumeClaim", "data") is not None

    git_repo.commit({}, "drop the claim", delete=("apps/web/data.yaml",), email="bob@example.com")
    assert fetch_repository(repo).ok
    tasks.drain()
    second = Rollout.objects.filter(mapping=mapping).latest("pk")
    cs = second.syncs.get()
    assert (second.state, cs.state) == ("blocked", "blocked"), second.reason
    assert _reviews(second, target.cluster) == {"data": "DELETE", "settings": "UPDATE"}
    assert _denials(second) == [
        f"PersistentVolumeClaim {ns}/data must not be deleted (requested by git:bob@example.com)"
    ]
    assert target.get("v1", "PersistentVolumeClaim", "data") is not None  # the blocked sync pruned nothing


def test_an_unreachable_cluster_cannot_be_reviewed_and_is_blocked(
    git_repo: Any, engine_name: str, tasks: Any, sandbox_server: SandboxServer, admin_user: Any
) -> None:
    env = f"review-{next(_ids)}"
    dead = Cluster.objects.create(
        name=f"rv{next(_ids)}-dead",
        api_url=f"http://127.0.0.1:{free_port()}",
        auth_method="token",
        token="tok-dead-secret",
        labels={"env": env},
    )
    group = ClusterGroup.objects.create(name=f"g-{env}", selector={"matchLabels": {"env": env}})
    _bind_library(group, engine_name)
    mapping = make_mapping(make_repository(git_repo), "web", "apps/web", group)
    git_repo.commit({"apps/web/data.yaml": _doc(rl.pvc("data"))}, "a claim")
    assert fetch_repository(mapping.repository).ok
    tasks.drain()

    rollout = Rollout.objects.get(mapping=mapping)
    cs = rollout.syncs.get()
    assert (rollout.state, cs.state, cs.decision) == ("blocked", "blocked", "blocked")
    assert cs.evaluation["outcome"] == "cannot_review"
    assert cs.evaluation["review"]["mode"] == "cannot_review"
    assert f"the live state of {dead.name} could not be read" in cs.evaluation["reasons"][0]
    assert "cannot review" in rollout.reason
    evaluation = Evaluation.objects.get(commit=rollout.commit, cluster=dead)
    assert evaluation.decision == "cannot_review" and evaluation.evaluations == 0
    assert not evaluation.violations.exists()  # nothing was evaluated, not even as CREATE
    # the UI says so, with the reason, on the rollout and the commit pages
    admin_client = Client()
    admin_client.force_login(admin_user)
    resp = admin_client.get(reverse("web:rollout-detail", args=[rollout.pk]))
    assert resp.status_code == 200, (resp.status_code, resp.get("Location"))
    page = resp.content.decode()
    assert "cannot review</span> the live state of " + dead.name in page
    page = admin_client.get(reverse("web:commit-detail", args=[rollout.commit_id])).content.decode()
    assert ">cannot review</span>" in page
    response = admin_client.get(f"/api/cluster-syncs/?rollout={rollout.pk}")
    assert response.json()["results"][0]["evaluation"]["outcome"] == "cannot_review"

    # the group allows create-only review: reviewed as CREATE, and the decision says so
    group.create_only_review = True
    group.save()
    git_repo.commit({"apps/web/more.yaml": _doc(rl.pvc("more"))}, "another claim")
    assert fetch_repository(mapping.repository).ok
    tasks.drain()
    second = Rollout.objects.filter(mapping=mapping).latest("pk")
    cs = second.syncs.get()
    assert cs.decision == "warned", cs.evaluation
    assert _reviews(second, dead) == {"data": "CREATE", "more": "CREATE"}
    assert cs.evaluation["review"]["mode"] == "create_only"
    assert any(
        r.startswith("reviewed as CREATE without the live state") and "create-only review" in r
        for r in cs.evaluation["reasons"]
    ), cs.evaluation["reasons"]


def test_live_reads_add_no_queries_per_object(
    git_repo: Any, tasks: Any, make_fleet: Any, settings: Any
) -> None:
    """Reading the live state costs HTTP requests, not database queries: the gate step of a rollout of 3
    objects and of 12 objects makes the same number of queries."""
    from fleet.rollouts.services import lifecycle

    settings.FLEETGATE_REGO_ENGINE = "regorus"
    repo = make_repository(git_repo)
    counts = []
    for size in (3, 12):
        env = f"q{size}"
        fleet = make_fleet({"one": {"env": env}, "two": {"env": env}})
        group = ClusterGroup.objects.create(name=env, selector={"matchLabels": {"env": env}})
        _bind_library(group, env)
        for box in fleet.sandboxes.values():  # every other object exists already: UPDATE reviews
            box.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
            for i in range(0, size, 2):
                box.apply_object(rl.pvc(f"c{i}"))
        mapping = make_mapping(repo, env, f"apps/{env}", group)
        git_repo.commit({f"apps/{env}/c{i}.yaml": _doc(rl.pvc(f"c{i}")) for i in range(size)}, env)
        assert fetch_repository(repo).ok
        tasks.clear()
        rollout = Rollout.objects.get(mapping=mapping)
        lifecycle._render(rollout.pk)
        with CaptureQueriesContext(connection) as ctx:
            lifecycle._evaluate(rollout.pk)
        rollout.refresh_from_db()
        assert rollout.state == "evaluated", rollout.reason
        ops = [cs.evaluation["review"]["operations"] for cs in rollout.syncs.all()]
        updates = len(range(0, size, 2))
        assert ops == [{"CREATE": size - updates, "UPDATE": updates, "DELETE": 0}] * 2
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts


def test_a_leg_whose_live_state_changed_while_it_waited_for_approval_is_reviewed_again_and_blocked(
    git_repo: Any, target: Target, engine_name: str, tasks: Any, make_user: Any
) -> None:
    """The gate reviewed web as a CREATE (absent), the rollout waited for approval, meanwhile web was
    created on the cluster with 10 replicas: at sync time the leg sees the split no longer holds, goes
    through the gate again (an UPDATE from 10 to 4 replicas, which the scale-down policy denies) and blocks
    without applying anything; recorded and audited with the reason."""
    from fleet.audit.models import AuditEvent
    from fleet.rollouts.services import control

    ns = target.namespace
    mapping, repo = _setup(git_repo, target, engine_name, approval_required=True, approvals_required=1)
    git_repo.commit(
        {"apps/web/web.yaml": _doc(rl.deployment("web", replicas=4, ns=ns))}, "web", email="ann@example.com"
    )
    assert fetch_repository(repo).ok
    tasks.drain()
    rollout = Rollout.objects.get(mapping=mapping)
    cs = rollout.syncs.get()
    assert (rollout.state, cs.decision) == ("awaiting_approval", "warned"), rollout.reason  # echo warns
    assert _reviews(rollout, target.cluster) == {"web": "CREATE"}
    assert cs.evaluation["reviewed"] == {"create": [["apps", "Deployment", ns, "web"]], "delete": []}

    target.put(rl.deployment("web", replicas=10, ns=ns))  # behind Fleetgate's back, while it waits
    control.approve(rollout, make_user("carol", role="approver", scope=mapping.cluster_group))
    tasks.drain()

    rollout.refresh_from_db()
    cs.refresh_from_db()
    assert (cs.state, cs.decision) == ("blocked", "blocked"), (cs.state, cs.error)
    assert rollout.decision == "blocked"
    reason = (
        f"live state changed since review: Deployment {ns}/web was reviewed as CREATE and exists now (UPDATE)"
    )
    assert cs.evaluation["rereviewed"] == reason
    assert cs.error == f"blocked by policy after a new review ({reason})"
    assert _denials(rollout) == ["Deployment web: scaling down from 10 to 4 replicas removes more than 50%"]
    assert _reviews(rollout, target.cluster) == {"web": "UPDATE"}  # the stored Evaluation is the new one
    event = AuditEvent.objects.get(action="sync.rereviewed", target_id=str(cs.pk))
    assert event.after["reason"] == "live state changed since review"
    assert event.after["decision"] == "blocked"
    assert "nothing was applied" in event.message
    assert target.get("apps/v1", "Deployment", "web")["spec"]["replicas"] == 10  # type: ignore[index]


def test_a_leg_whose_review_still_holds_syncs_without_a_new_review(
    git_repo: Any, target: Target, engine_name: str, tasks: Any, make_user: Any
) -> None:
    """Approved with the split unchanged (a claim created out of band is not the mapping's: neither
    applied nor pruned): no second review, the leg syncs."""
    from fleet.audit.models import AuditEvent
    from fleet.rollouts.services import control

    ns = target.namespace
    mapping, repo = _setup(git_repo, target, engine_name, approval_required=True, approvals_required=1)
    settings_cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns}}
    git_repo.commit({"apps/web/settings.yaml": _doc(settings_cm)}, "settings", email="ann@example.com")
    assert fetch_repository(repo).ok
    tasks.drain()
    rollout = Rollout.objects.get(mapping=mapping)
    target.put(rl.pvc("scratch", ns=ns))  # not the mapping's: neither applied nor pruned
    control.approve(rollout, make_user("carol", role="approver", scope=mapping.cluster_group))
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    assert not AuditEvent.objects.filter(action="sync.rereviewed").exists()
    assert target.get("v1", "ConfigMap", "settings") is not None


def test_a_new_review_at_sync_time_adds_no_queries_per_object(
    git_repo: Any, tasks: Any, make_fleet: Any, settings: Any, make_user: Any
) -> None:
    """A leg whose every object was reviewed as CREATE and exists by sync time is reviewed again: the sync
    of that leg makes the same number of queries for 3 objects and for 12."""
    from fleet.rollouts.services import control, sync
    from fleet.rollouts.services.fanout import advance

    settings.FLEETGATE_REGO_ENGINE = "regorus"
    repo = make_repository(git_repo)
    counts = []
    for size in (3, 12):
        env = f"s{size}"
        fleet = make_fleet({"one": {"env": env}})
        group = ClusterGroup.objects.create(
            name=env, selector={"matchLabels": {"env": env}}, approval_required=True, approvals_required=1
        )
        _bind_library(group, env)
        (box,) = fleet.sandboxes.values()
        box.apply_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
        mapping = make_mapping(repo, env, f"apps/{env}", group)
        git_repo.commit({f"apps/{env}/c{i}.yaml": _doc(rl.pvc(f"c{i}")) for i in range(size)}, env)
        assert fetch_repository(repo).ok
        tasks.drain()
        rollout = Rollout.objects.get(mapping=mapping)
        assert rollout.state == "awaiting_approval", rollout.reason
        for i in range(size):  # every claim appears while the rollout waits
            box.apply_object(rl.pvc(f"c{i}"))
        control.approve(rollout, make_user(f"approver-{env}", role="approver", scope=group))
        advance(rollout.pk)  # queues the leg (its task is run here, not by the test queue)
        tasks.clear()
        cs = rollout.syncs.get()
        with CaptureQueriesContext(connection) as ctx:
            assert sync.run_cluster_sync(cs.pk) == "synced"
        cs.refresh_from_db()
        assert cs.evaluation["rereviewed"].startswith(
            "live state changed since review: PersistentVolumeClaim"
        )
        assert cs.evaluation["review"]["operations"] == {"CREATE": 0, "UPDATE": size, "DELETE": 0}
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts
