"""Policy impact preview on real parts: a git repository made here, fetched and rendered by the sources app
(stored renders), rolled out by the rollout services to sandbox clusters over HTTP (SyncedState, live
objects), then a proposed policy change replayed over what each cluster runs now. The preview changes
nothing; a scheduled dryrun -> deny switch happens through the beat task and is audited."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clusters.models import Cluster, ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.rollouts.models import Rollout, SyncedState
from fleet.sources.services import fetch_repository
from policies import tasks as policy_tasks
from policies.engine.opa_server import free_port
from policies.models import Evaluation, PolicyBinding, PolicyPreview, Waiver
from policies.services import preview as pv
from policies.services.definitions import PolicyDefinition, save_policy
from tests.rollouts import conftest as rollout_fixtures
from tests.rollouts.conftest import NAMESPACE, RUNNERS, deployment, make_mapping, make_repository

# the rollout tests' fixtures on real parts: a git repository, sandbox clusters over HTTP, the task queue
git_repo = rollout_fixtures.git_repo
make_fleet = rollout_fixtures.make_fleet
sandbox_server = rollout_fixtures.sandbox_server
tasks = rollout_fixtures.tasks

pytestmark = pytest.mark.django_db(transaction=True)

NO_LATEST = """package main

import rego.v1

deny contains msg if {
    input.kind == "Deployment"
    some c in input.spec.template.spec.containers
    endswith(c.image, ":latest")
    msg := sprintf("%s: image %s uses the latest tag", [input.metadata.name, c.image])
}
"""

# v2 of the dev policy: the image rule is gone, every Namespace needs a team label
TEAM_LABEL = """package main

import rego.v1

deny contains msg if {
    input.kind == "Namespace"
    not input.metadata.labels.team
    msg := sprintf("namespace %s has no team label", [input.metadata.name])
}
"""

# Only an UPDATE sees the live object: the preview reviews what the sync would do
ECHO_OPERATION = """package main

import rego.v1

warn contains msg if {
    input.kind == "Deployment"
    msg := sprintf("%s reviewed as %s", [input.metadata.name, data.fleetgate.review.operation])
}
"""


def conftest_policy(name: str, source: str) -> Any:
    return save_policy(name, PolicyDefinition(style="conftest", modules=((f"{name}.rego", source),))).policy


@pytest.fixture
def world(git_repo: Any, make_fleet: Any, tasks: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """prod-1, prod-2 (group prod) and dev-1, dev-2 (group dev) run web at one synced commit."""
    monkeypatch.setitem(RUNNERS, policy_tasks.RUN_PREVIEW, pv.run)
    fleet = make_fleet(
        {
            "prod-1": {"env": "prod"},
            "prod-2": {"env": "prod"},
            "dev-1": {"env": "dev"},
            "dev-2": {"env": "dev"},
        }
    )
    prod = ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})
    dev = ClusterGroup.objects.create(name="dev", selector={"matchLabels": {"env": "dev"}})
    repo = make_repository(git_repo)
    web_prod = make_mapping(repo, "web-prod", "apps/web", prod)
    web_dev = make_mapping(repo, "web-dev", "apps/web", dev)
    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/web.yaml": deployment("web", "nginx:latest")},
        "web on latest",
    )
    assert fetch_repository(repo).ok
    tasks.drain()
    for mapping in (web_prod, web_dev):
        rollout = Rollout.objects.get(mapping=mapping)
        assert rollout.state == "synced", rollout.reason
    assert SyncedState.objects.filter(commit__isnull=False).count() == 4
    return {"fleet": fleet, "prod": prod, "dev": dev, "web_prod": web_prod, "web_dev": web_dev, "repo": repo}


def _short(name: str) -> str:
    return name.split("-", 1)[1]


def _blocked_objects(report: dict[str, Any], status: str) -> list[tuple[str, str, str, str]]:
    return sorted(
        (_short(t["cluster"]), t["mapping"], f["kind"], f["name"])
        for t in report["targets"]
        for f in t["objects"]
        if f["status"] == status
    )


def test_a_new_deny_policy_shows_what_it_would_block_and_enforces_nothing(
    world: dict[str, Any], tasks: Any, admin_user: Any
) -> None:
    policy = conftest_policy("no-latest", NO_LATEST)
    echo = conftest_policy("echo-operation", ECHO_OPERATION)
    PolicyBinding.objects.create(policy=echo, cluster_group=world["prod"], enforcement="warn")
    evaluations, bindings = Evaluation.objects.count(), PolicyBinding.objects.count()
    proposal = pv.binding_proposal(None, policy=policy, cluster_group=world["prod"], enforcement="deny")

    preview = pv.start(admin_user, proposal)
    assert preview.status == "pending"
    tasks.drain()
    preview.refresh_from_db()
    assert (preview.status, preview.done, preview.total) == ("done", 2, 2), preview.error
    report = preview.report
    # exactly the prod clusters, exactly the Deployment; dev is not in scope
    assert _blocked_objects(report, "new_block") == [
        ("prod-1", "web-prod", "Deployment", "web"),
        ("prod-2", "web-prod", "Deployment", "web"),
    ]
    counts = report["counts"]
    assert (counts["targets"], counts["clusters"], counts["blocked_today"], counts["blocked_proposed"]) == (
        2,
        2,
        0,
        2,
    )
    assert (counts["newly_blocked"], counts["new_blocks"], counts["resolved_blocks"]) == (2, 2, 0)
    assert counts["unchanged_warnings"] == 2  # the echo policy's warning stands on both sides
    for target in report["targets"]:
        # reviewed against the live cluster: both objects exist there, so each is an UPDATE
        assert target["review"] == "live"
        assert target["operations"] == {"CREATE": 0, "UPDATE": 2, "DELETE": 0}
        assert (target["today"], target["proposed"], target["change"]) == (
            "warned",
            "blocked",
            "newly_blocked",
        )
        messages = {f["message"] for f in target["objects"]}
        assert "web reviewed as UPDATE" in messages
    # nothing enforced or stored as a decision; the start and the result are audited
    assert (Evaluation.objects.count(), PolicyBinding.objects.count()) == (evaluations, bindings)
    actions = set(AuditEvent.objects.filter(target_id=str(preview.pk)).values_list("action", flat=True))
    assert {"policypreview.create", "policypreview.finish"} <= actions


def test_a_waiver_in_force_is_shown_applying_and_an_unreachable_cluster_is_said(
    world: dict[str, Any], admin_user: Any
) -> None:
    policy = conftest_policy("no-latest", NO_LATEST)
    prod1 = world["fleet"].clusters["prod-1"]
    waiver = Waiver.objects.create(
        policy=policy,
        kind="Deployment",
        name_pattern="web",
        cluster_pattern=prod1.name,
        expires_at=timezone.now() + timedelta(days=5),
        justification="migrating off latest",
    )
    prod2 = world["fleet"].clusters["prod-2"]
    Cluster.objects.filter(pk=prod2.pk).update(api_url=f"http://127.0.0.1:{free_port()}")  # gone away
    report = pv.compute(
        pv.binding_proposal(None, policy=policy, cluster_group=world["prod"], enforcement="deny")
    )
    rows = {_short(t["cluster"]): t for t in report["targets"]}
    assert rows["prod-1"]["proposed"] == "passed"
    assert [(f["status"], f["waived_by"]) for f in rows["prod-1"]["objects"]] == [("waived", waiver.pk)]
    assert report["waivers"][str(waiver.pk)]["justification"] == "migrating off latest"
    assert rows["prod-2"]["review"] == "unreachable"
    assert "could not be read" in rows["prod-2"]["reason"]
    assert rows["prod-2"]["proposed"] == "unknown"
    assert (report["counts"]["waived"], report["counts"]["unreachable"]) == (1, 1)


def test_a_new_version_shows_new_and_resolved_blocks(world: dict[str, Any]) -> None:
    policy = conftest_policy("dev-rules", NO_LATEST)
    PolicyBinding.objects.create(policy=policy, cluster_group=world["dev"], enforcement="deny")
    v2 = PolicyDefinition(style="conftest", modules=(("dev-rules.rego", TEAM_LABEL),)).as_content()
    report = pv.compute(pv.Proposal(policy.pk, policy.name, v2), live=True)
    assert _blocked_objects(report, "resolved_block") == [
        ("dev-1", "web-dev", "Deployment", "web"),
        ("dev-2", "web-dev", "Deployment", "web"),
    ]
    assert _blocked_objects(report, "new_block") == [
        ("dev-1", "web-dev", "Namespace", "apps"),
        ("dev-2", "web-dev", "Namespace", "apps"),
    ]
    counts = report["counts"]
    assert (counts["blocked_today"], counts["blocked_proposed"], counts["newly_blocked"]) == (2, 2, 0)
    assert (counts["new_blocks"], counts["resolved_blocks"], counts["unchanged_blocks"]) == (2, 2, 0)
    assert policy.versions.count() == 1  # the new version was not saved


def test_a_pinned_version_change_and_a_scope_change(world: dict[str, Any]) -> None:
    policy = conftest_policy("dev-rules", NO_LATEST)
    v1 = policy.current
    v2 = save_policy(
        "dev-rules", PolicyDefinition(style="conftest", modules=(("dev-rules.rego", TEAM_LABEL),))
    ).policy.current
    binding = PolicyBinding.objects.create(
        policy=policy, cluster_group=world["dev"], enforcement="deny", pinned_version=v1
    )
    pin = pv.binding_proposal(
        binding, policy=policy, cluster_group=world["dev"], enforcement="deny", pinned_version=v2
    )
    report = pv.compute(pin, live=False)
    assert [t["review"] for t in report["targets"]] == ["rendered", "rendered"]
    assert _blocked_objects(report, "resolved_block") == [
        ("dev-1", "web-dev", "Deployment", "web"),
        ("dev-2", "web-dev", "Deployment", "web"),
    ]
    assert _blocked_objects(report, "new_block") == [
        ("dev-1", "web-dev", "Namespace", "apps"),
        ("dev-2", "web-dev", "Namespace", "apps"),
    ]
    assert report["policies"]["today"] == [{"policy": "dev-rules", "version": 1, "enforcement": "deny"}]
    assert report["policies"]["proposed"] == [{"policy": "dev-rules", "version": 2, "enforcement": "deny"}]
    # moving the binding (pinned to v1) from dev to prod: dev's blocks resolve, prod's are new
    move = pv.binding_proposal(
        binding, policy=policy, cluster_group=world["prod"], enforcement="deny", pinned_version=v1
    )
    report = pv.compute(move, live=False)
    assert _blocked_objects(report, "resolved_block") == [
        ("dev-1", "web-dev", "Deployment", "web"),
        ("dev-2", "web-dev", "Deployment", "web"),
    ]
    assert _blocked_objects(report, "new_block") == [
        ("prod-1", "web-prod", "Deployment", "web"),
        ("prod-2", "web-prod", "Deployment", "web"),
    ]
    assert (report["counts"]["newly_blocked"], report["counts"]["unblocked"]) == (2, 2)


def test_the_report_and_api_show_only_the_clusters_in_the_users_scope(
    world: dict[str, Any], admin_client: Any, make_user: Any, token_client: Any, tasks: Any
) -> None:
    policy = conftest_policy("no-latest", NO_LATEST)
    started = admin_client.post(
        "/api/policy-previews/",
        {"policy": policy.pk, "enforcement": "deny", "cluster_group": None},
        format="json",
    )
    assert started.status_code == 201, started.content
    body = started.json()
    assert body["status"] == "pending"
    tasks.drain()
    full = admin_client.get(f"/api/policy-previews/{body['id']}/").json()
    assert (full["status"], full["done"], full["total"]) == ("done", 4, 4)
    assert full["report"]["counts"]["newly_blocked"] == 4

    dev_viewer = token_client(make_user("dev-viewer", "viewer", world["dev"]))
    narrowed = dev_viewer.get(f"/api/policy-previews/{body['id']}/")
    # a global preview is visible to every viewer, its report only where they may see evaluations
    assert narrowed.status_code == 200
    report = narrowed.json()["report"]
    assert {_short(t["cluster"]) for t in report["targets"]} == {"dev-1", "dev-2"}
    assert (report["counts"]["targets"], report["counts"]["newly_blocked"]) == (2, 2)
    # a scoped viewer may not start one
    refused = dev_viewer.post(
        "/api/policy-previews/", {"policy": policy.pk, "enforcement": "deny"}, format="json"
    )
    assert refused.status_code == 403
    bad = admin_client.post("/api/policy-previews/", {"policy": policy.pk, "enforcement": "x"}, format="json")
    assert bad.status_code == 400 and "enforcement" in bad.json()
    bad = admin_client.post("/api/policy-previews/", {"policy": policy.pk, "content": "x"}, format="json")
    assert bad.status_code == 400 and "content" in bad.json(), bad.content
    listed = admin_client.get("/api/policy-previews/").json()
    assert [(p["id"], p["report"]) for p in listed["results"]] == [(body["id"], None)]  # no reports


def test_a_deny_binding_starts_as_dryrun_and_the_beat_task_switches_it(
    world: dict[str, Any], admin_client: Any, admin_user: Any, tasks: Any
) -> None:
    policy = conftest_policy("no-latest", NO_LATEST)
    created = admin_client.post(
        "/api/policy-bindings/",
        {"policy": policy.pk, "cluster_group": world["prod"].pk, "enforcement": "deny", "dryrun_days": 7},
        format="json",
    )
    assert created.status_code == 201, created.content
    binding = PolicyBinding.objects.get(pk=created.json()["id"])
    assert (binding.enforcement, binding.enforce_as) == ("dryrun", "deny")
    assert binding.enforce_at is not None and binding.enforce_at > timezone.now() + timedelta(days=6)
    tasks.drain()
    binding.preview.refresh_from_db()
    assert binding.preview.status == "done"
    assert binding.preview.report["counts"]["newly_blocked"] == 2  # what deny will block on prod
    page = Client()
    page.force_login(admin_user)
    shown = page.get(f"/policies/bindings/{binding.pk}/")
    assert shown.status_code == 200
    assert b"switches to deny" in shown.content
    assert f"/policies/previews/{binding.preview.pk}/".encode() in shown.content
    # the binding page previews a change of its enforcement
    changed = page.post(f"/policies/{policy.pk}/bindings/{binding.pk}/preview/", {"enforcement": "warn"})
    assert changed.status_code == 302
    assert PolicyPreview.objects.filter(binding=binding, proposal__binding__enforcement="warn").exists()

    assert policy_tasks.enforce_scheduled_bindings() == []  # not due yet
    PolicyBinding.objects.filter(pk=binding.pk).update(enforce_at=timezone.now() - timedelta(minutes=1))
    assert policy_tasks.enforce_scheduled_bindings() == [binding.pk]
    binding.refresh_from_db()
    assert (binding.enforcement, binding.enforce_as, binding.enforce_at) == ("deny", "", None)
    event = AuditEvent.objects.filter(action="policybinding.enforce", target_id=str(binding.pk)).get()
    assert (event.before["enforcement"], event.after["enforcement"]) == ("dryrun", "deny")
    assert event.change_context == "task"
    assert policy_tasks.enforce_scheduled_bindings() == []  # once
    assert AuditEvent.objects.filter(action="policybinding.schedule", target_id=str(binding.pk)).exists()

    # a binding scheduled again, then given an enforcement by hand, forgets the schedule (audited)
    again = admin_client.patch(
        f"/api/policy-bindings/{binding.pk}/", {"enforcement": "deny", "dryrun_days": 2}, format="json"
    )
    assert again.status_code == 200, again.content
    assert (again.json()["enforcement"], again.json()["enforce_as"]) == ("dryrun", "deny")
    by_hand = admin_client.patch(
        f"/api/policy-bindings/{binding.pk}/", {"enforcement": "warn"}, format="json"
    )
    assert (by_hand.json()["enforcement"], by_hand.json()["enforce_at"]) == ("warn", None)
    assert AuditEvent.objects.filter(action="policybinding.unschedule", target_id=str(binding.pk)).exists()
    PolicyBinding.objects.filter(pk=binding.pk).update(enforce_at=None)
    assert policy_tasks.enforce_scheduled_bindings() == []


def test_import_policies_preview_prints_the_report_and_changes_nothing(
    world: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "no-latest.rego").write_text(NO_LATEST)
    out = io.StringIO()
    call_command(
        "import_policies",
        str(tmp_path / "no-latest.rego"),
        "--enforcement",
        "deny",
        "--group",
        "dev",
        "--preview",
        "--json",
        stdout=out,
    )
    reports = json.loads(out.getvalue())
    assert _blocked_objects(reports[0], "new_block") == [
        ("dev-1", "web-dev", "Deployment", "web"),
        ("dev-2", "web-dev", "Deployment", "web"),
    ]
    from policies.models import Policy

    assert not Policy.objects.filter(name="no-latest").exists()
    text = io.StringIO()
    call_command(
        "import_policies", str(tmp_path / "no-latest.rego"), "--enforcement", "deny", "--preview", stdout=text
    )
    assert "4 target(s) on 4 cluster(s): 4 would be blocked (0 today), 4 newly" in text.getvalue()
    assert "NEW BLOCK" in text.getvalue()


def test_the_preview_page_renders_with_counts(world: dict[str, Any], admin_user: Any, tasks: Any) -> None:
    policy = conftest_policy("no-latest", NO_LATEST)
    page = Client()
    page.force_login(admin_user)
    started = page.post(
        f"/policies/{policy.pk}/preview/", {"enforcement": "deny", "cluster_group": world["prod"].pk}
    )
    assert started.status_code == 302
    preview = PolicyPreview.objects.get()
    running = page.get(started["Location"])
    assert b"0 / 0" in running.content or b"pending" in running.content
    tasks.drain()
    shown = page.get(started["Location"])
    assert shown.status_code == 200
    text = shown.content.decode()
    assert "new block" in text and "Deployment" in text and 'class="badge bad"' in text
    assert f"preview #{preview.pk}" in text

    # the editor's "Preview impact": the edited source as the next version, nothing saved
    PolicyBinding.objects.create(policy=policy, cluster_group=world["dev"], enforcement="deny")
    edited = page.post(
        f"/policies/{policy.pk}/edit/",
        {"name": policy.name, "module_path": "no-latest.rego", "source": TEAM_LABEL, "preview": "1"},
    )
    assert edited.status_code == 302, edited.content
    tasks.drain()
    text = page.get(edited["Location"]).content.decode()
    assert "new version of no-latest" in text
    assert text.count("resolved block") == 2 and text.count("new block") >= 2
    assert policy.versions.count() == 1


def test_queries_do_not_grow_with_the_clusters(db: Any) -> None:
    from bench.bench_preview import build_fleet

    counts = []
    for clusters in (3, 12):
        proposal = build_fleet(clusters=clusters, mappings=2, prefix=f"q{clusters}")
        with CaptureQueriesContext(connection) as ctx:
            report = pv.compute(proposal, live=False)
        assert report["counts"]["targets"] == clusters * 2
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts


def test_progress_is_reported_per_chunk_and_stored(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.bench_preview import build_fleet

    monkeypatch.setattr(pv, "CHUNK", 2)
    proposal = build_fleet(clusters=3, mappings=2, prefix="progress")
    seen: list[tuple[int, int]] = []
    pv.compute(proposal, live=False, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 6), (2, 6), (4, 6), (6, 6)]
    preview = PolicyPreview.objects.create(
        policy_name=proposal.policy_name, proposal={**proposal.as_dict(), "live": False}
    )
    stored: list[tuple[str, int, int]] = []
    original = pv.compute

    def watching(*args: Any, **kwargs: Any) -> dict[str, Any]:
        report_progress = kwargs["progress"]

        def spy(done: int, total: int) -> None:
            report_progress(done, total)
            row = PolicyPreview.objects.get(pk=preview.pk)
            stored.append((row.status, row.done, row.total))

        return original(*args, **{**kwargs, "progress": spy})

    monkeypatch.setattr(pv, "compute", watching)
    pv.run(preview.pk)
    assert stored == [("running", 0, 6), ("running", 2, 6), ("running", 4, 6), ("running", 6, 6)]
    preview.refresh_from_db()
    assert (preview.status, preview.done, preview.total) == ("done", 6, 6)
