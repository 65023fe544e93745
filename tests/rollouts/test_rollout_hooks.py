"""Hooks and sync waves through the whole flow, on real parts: a git repository made here with Argo CD hooks
(PreSync/PostSync Jobs, one named by the server), sync waves and a plain ``generateName`` object; the real
fetch and render, the policy gate (regorus) reviewing hooks like any object, plans that show the steps (API
and UI), sandbox clusters whose event history gives the order of operations, a second commit that runs the
hooks again, drift that ignores hooks, a rollback that runs the earlier commit's hooks, and a Helm chart with
weighted hooks synced by a real Celery worker (tests/workers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from fleet.rollouts import services
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState
from fleet.sources.models import Commit
from fleet.sources.services import fetch_repository
from policies.models import PolicyBinding
from policies.services.definitions import PolicyDefinition, save_policy
from tests.connector.test_connector_hooks import CHART
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository
from tests.workers import Worker, wait_for

NO_DEBUG_HOOKS = """package main

deny[msg] {
    input.kind == "Job"
    startswith(input.metadata.generateName, "debug-")
    msg := sprintf("hook %s may not run here", [input.metadata.generateName])
}
"""


def hook_job(name: str, hook: str, *, generate: bool = False, wave: int = 0, policy: str = "") -> str:
    meta = f"  generateName: {name}-" if generate else f"  name: {name}"
    notes = [f"    argocd.argoproj.io/hook: {hook}", f'    argocd.argoproj.io/sync-wave: "{wave}"']
    if policy:
        notes.append(f"    argocd.argoproj.io/hook-delete-policy: {policy}")
    return "\n".join([
        "apiVersion: batch/v1", "kind: Job", "metadata:", meta, "  namespace: apps", "  annotations:", *notes,
        "spec:", "  backoffLimit: 0", "  template:", "    spec:", "      restartPolicy: Never",
        "      containers:", "        - {name: run, image: 'busybox:1.36', command: ['true']}", "",
    ])


def waved(name: str, wave: int, data: dict[str, str]) -> str:
    text = configmap(name, data)
    notes = f'metadata:\n  annotations:\n    argocd.argoproj.io/sync-wave: "{wave}"\n'
    return text.replace("metadata:\n", notes, 1)


ONE_SHOT = """apiVersion: v1
kind: ConfigMap
metadata:
  generateName: audit-
  namespace: apps
data:
  note: created on each sync
"""


def argo_files(color: str) -> dict[str, str]:
    return {
        "app/ns.yaml": NAMESPACE,
        "app/db.yaml": waved("db", -1, {"ready": "yes"}),
        "app/web.yaml": waved("web", 1, {"color": color}),
        "app/hooks.yaml": hook_job("migrate", "PreSync") + "---\n"
        + hook_job("smoke", "PostSync", generate=True, policy="HookSucceeded"),
        "app/one-shot.yaml": ONE_SHOT,
    }


def first_event(
    box: Any, kind: str, name_prefix: str, *, event: str = "ADDED", complete: bool = False
) -> int:
    """The resourceVersion of the first event of ``kind`` whose name starts with ``name_prefix``."""
    for ev in box.state.history:
        meta = ev.obj["metadata"]
        if ev.obj.get("kind") != kind or not meta.get("name", "").startswith(name_prefix) or ev.type != event:
            continue
        conditions = (ev.obj.get("status") or {}).get("conditions") or []
        conds = {c["type"] for c in conditions if c["status"] == "True"}
        if not complete or "Complete" in conds:
            return int(ev.rv)
    raise AssertionError(f"no {event} {kind}/{name_prefix}* in the history")


def base(name: str) -> str:
    """A server-assigned name without its random 5-character suffix (the generateName it came from)."""
    return name[:-5] if any(p in name for p in ("smoke-", "audit-", "notify-")) else name


def live_names(box: Any, api_version: str, kind: str) -> list[str]:
    return sorted(o["metadata"]["name"] for o in box.list_objects(api_version, kind, "apps"))


@pytest.mark.django_db(transaction=True)
def test_argo_hooks_and_waves_through_gate_plan_sync_drift_and_rollback(
    git_repo: Any, make_fleet: Any, tasks: Any, admin_client: Any, make_user: Any
) -> None:
    fleet = make_fleet({"h-1": {"env": "hooks"}}, history_size=1000)
    box = fleet.sandbox("h-1")
    group = make_group("hooks", "hooks", prune=True)
    mapping = make_mapping(make_repository(git_repo), "app", "app", group)
    definition = PolicyDefinition(style="conftest", modules=(("hooks.rego", NO_DEBUG_HOOKS),))
    policy = save_policy("no-debug-hooks", definition).policy
    PolicyBinding.objects.create(policy=policy, cluster_group=None, enforcement="deny")

    git_repo.commit(argo_files("blue"), "app with hooks and waves")
    assert fetch_repository(mapping.repository).ok
    tasks.drain()
    first = Rollout.objects.get(mapping=mapping)
    assert first.state == "synced", first.reason
    leg = ClusterSync.objects.get(rollout=first)
    # the gate reviewed the hooks and the generateName objects as creations, like any new object
    assert leg.evaluation["review"]["operations"]["CREATE"] >= 4
    # the order on the cluster: namespace, PreSync hook (completed), wave -1, wave 0 (the one-shot object),
    # wave 1, then the PostSync hook
    migrate_done = first_event(box, "Job", "migrate", event="MODIFIED", complete=True)
    assert first_event(box, "Namespace", "apps") < first_event(box, "Job", "migrate") < migrate_done
    assert migrate_done < first_event(box, "ConfigMap", "db") < first_event(box, "ConfigMap", "audit-")
    assert first_event(box, "ConfigMap", "audit-") < first_event(box, "ConfigMap", "web")
    assert first_event(box, "ConfigMap", "web") < first_event(box, "Job", "smoke-")
    # HookSucceeded: deleted once it completed
    assert first_event(box, "Job", "smoke-", event="DELETED") > first_event(box, "Job", "smoke-")
    assert live_names(box, "batch/v1", "Job") == ["migrate"]
    state = SyncedState.objects.get(mapping=mapping)
    assert sorted(r["name"] for r in state.inventory) == ["apps", "db", "web"]  # hooks: never pruned by name
    assert sorted(b["metadata"]["name"] for b in state.applied) == ["apps", "db", "web"]  # nor drift-checked
    results = {base(r["ref"]["name"]): r for r in leg.results}
    assert results["smoke-"]["step"] == {"phase": "PostSync", "wave": 0, "hook": "argocd",
                                         "delete_policies": ["HookSucceeded"], "generated": True}

    # drift: the deleted PostSync hook and the one-shot object are not drift
    services.check_drift(state.pk)
    assert SyncedState.objects.get(pk=state.pk).drift_status == "in_sync"

    # a second commit: the hooks run again (the named one re-created, a new server-assigned name for the
    # other), a second one-shot object; prune deletes none of them; the plan shows the steps
    group.approval_required = True
    group.save(update_fields=["approval_required"])
    git_repo.commit({"app/web.yaml": waved("web", 1, {"color": "green"})}, "green")
    assert fetch_repository(mapping.repository).ok
    tasks.drain()
    second = Rollout.objects.exclude(pk=first.pk).get(mapping=mapping)
    assert second.state == "awaiting_approval", second.reason
    api_leg = admin_client.get(f"/api/cluster-syncs/?rollout={second.pk}").json()["results"][0]
    steps = [(s["phase"], s.get("wave"), s.get("hooks", 0)) for s in api_leg["plan"]["steps"]]
    assert steps == [("Sync", None, 0), ("PreSync", 0, 1), ("Sync", -1, 0), ("Sync", 0, 0), ("Sync", 1, 0),
                     ("PostSync", 0, 1)]
    smoke_plan = next(i for i in api_leg["plan"]["items"] if i["ref"]["name"] == "smoke-")
    assert smoke_plan["action"] == "create" and "create (generated name)" in smoke_plan["message"]
    browser = Client()
    browser.force_login(approver := make_user("ann", role="approver", scope=group))
    page = browser.get(f"/rollouts/{second.pk}/").content.decode()
    assert "Namespaces and CRDs first" in page and "PreSync, wave 0" in page and "PostSync, wave 0" in page
    services.approve(second, approver)
    tasks.drain()
    second.refresh_from_db()
    assert second.state == "synced", second.reason
    assert len([n for n in live_names(box, "v1", "ConfigMap") if n.startswith("audit-")]) == 2
    assert live_names(box, "batch/v1", "Job") == ["migrate"]
    assert len([e for e in box.state.history if e.type == "ADDED" and e.obj["kind"] == "Job"
                and e.obj["metadata"]["name"].startswith("smoke-")]) == 2
    assert box.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "green"}

    # a rollback runs the earlier commit's hooks again, as a sync to that commit does in Argo CD
    migrations_before = sum(1 for e in box.state.history if e.type == "ADDED" and e.obj["kind"] == "Job"
                            and e.obj["metadata"]["name"] == "migrate")
    c1 = Commit.objects.get(pk=first.commit_id)
    back = services.rollback(second, c1, make_user("rolf", role="deployer", scope=group))
    tasks.drain()  # prepared: rendered, reviewed, planned; then it awaits its approval like any rollout
    services.approve(back, approver)
    tasks.drain()
    back.refresh_from_db()
    assert back.state == "synced", back.reason
    assert box.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}
    assert sum(1 for e in box.state.history if e.type == "ADDED" and e.obj["kind"] == "Job"
               and e.obj["metadata"]["name"] == "migrate") == migrations_before + 1

    # a hook the policy denies blocks the commit like any object: nothing of it is applied
    group.approval_required = False
    group.save(update_fields=["approval_required"])
    git_repo.commit({"app/debug.yaml": hook_job("debug", "PreSync", generate=True),
                     "app/web.yaml": waved("web", 1, {"color": "red"})}, "debug hook")
    assert fetch_repository(mapping.repository).ok
    tasks.drain()
    blocked = Rollout.objects.filter(mapping=mapping).order_by("-id").first()
    assert blocked is not None and blocked.state == "blocked"
    assert "hook debug- may not run here" in blocked.reason
    assert box.get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "blue"}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_on_a_worker_a_helm_chart_runs_its_weighted_hooks_as_install_then_upgrade(
    tmp_path: Path, git_repo: Any, make_fleet: Any
) -> None:
    fleet = make_fleet({"w-1": {"env": "helmhooks"}}, history_size=1000)
    box = fleet.sandbox("w-1")
    for sandbox in fleet.sandboxes.values():
        sandbox.settings.rollout_delay = 0.3  # a hook Job completes a little after it is created
    group = make_group("helmhooks", "helmhooks")
    mapping = make_mapping(make_repository(git_repo), "shop", "chart", group)
    git_repo.commit(CHART, "chart with hooks")
    worker = Worker(tmp_path / "worker.log", concurrency=1)
    try:
        assert fetch_repository(mapping.repository).ok
        wait_for(lambda: Rollout.objects.filter(mapping=mapping, state__in=("synced", "failed", "halted"))
                 .count() == 1, timeout=180, what="the install rollout to finish on the worker")
        install = Rollout.objects.get(mapping=mapping)
        assert install.state == "synced", install.reason
        added = [base(e.obj["metadata"]["name"]) for e in box.state.history
                 if e.type == "ADDED" and e.obj["metadata"].get("namespace") == "default"
                 and e.obj["kind"] in ("ConfigMap", "Job")]
        assert added == ["shop-settings", "shop-db-init", "shop-app", "shop-notify-"]
        assert first_event(box, "Job", "shop-db-init", event="MODIFIED", complete=True) < first_event(
            box, "ConfigMap", "shop-app")
        assert box.get_object("batch/v1", "Job", "shop-db-init", "default") is None  # hook-succeeded
        leg = ClusterSync.objects.get(rollout=install)
        assert {r["ref"]["name"]: r["action"] for r in leg.results}["shop-db-migrate"] == "skipped"

        git_repo.commit({"chart/values.yaml": "color: green\n"}, "green")
        assert fetch_repository(mapping.repository).ok
        wait_for(lambda: Rollout.objects.filter(mapping=mapping, state__in=("synced", "failed", "halted"))
                 .count() == 2, timeout=180, what="the upgrade rollout to finish on the worker")
    finally:
        worker.stop()
    upgrade = Rollout.objects.filter(mapping=mapping).order_by("-id").first()
    assert upgrade is not None and upgrade.state == "synced", upgrade.reason
    assert "fleet.rollouts.sync_cluster" in worker.log
    later = [e.obj["metadata"]["name"] for e in box.state.history if e.type == "ADDED"
             and e.obj["kind"] == "Job" and e.obj["metadata"].get("namespace") == "default"][2:]
    # an upgrade: pre-upgrade, not pre-install
    assert [base(n) for n in later] == ["shop-db-migrate", "shop-notify-"]
    assert box.get_object("v1", "ConfigMap", "shop-app", "default")["data"] == {"color": "green"}
    jobs = sorted(o["metadata"]["name"] for o in box.list_objects("batch/v1", "Job", "default"))
    assert len(jobs) == 2 and all(j.startswith("shop-notify-") for j in jobs)  # generated, kept
