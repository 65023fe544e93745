"""The rules of a rollout, each on real parts (git repository, sandbox clusters over HTTP, the real gate):
halting on the failure threshold, retries of transient errors only, health timeouts, sync windows,
pause/resume/cancel, supersede, manual sync, and who may approve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleet.audit.models import AuditEvent
from fleet.rollouts.models import Approval, ClusterSync, Rollout
from fleet.sources.models import Commit
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import (
    NAMESPACE,
    configmap,
    deployment,
    make_group,
    make_mapping,
    make_repository,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _two_attempts(settings: Any) -> None:
    settings.FLEETGATE_SYNC_MAX_ATTEMPTS = 2


class World:
    def __init__(self, git_repo: Any, make_fleet: Any, names: list[str], **group: Any) -> None:
        self.git_repo = git_repo
        self.fleet = make_fleet(
            {n: {"env": "t", **({"canary": "true"} if n == "canary" else {})} for n in names}
        )
        self.group = make_group(f"{self.fleet.prefix}-g", "t", **group)
        self.repo = make_repository(git_repo, name=f"{self.fleet.prefix}-repo")
        self.mapping = make_mapping(self.repo, "web", "apps/web", self.group)
        self.version = 0

    def push(
        self, color: str = "", email: str = "dev@example.com", extra: dict[str, str] | None = None
    ) -> Commit:
        self.version += 1
        files = {
            "apps/web/ns.yaml": NAMESPACE,
            "apps/web/cm.yaml": configmap("web", {"color": color or f"v{self.version}"}),
            **(extra or {}),
        }
        self.git_repo.commit(files, f"change {self.version}", email=email)
        assert fetch_repository(self.repo).ok
        return Commit.objects.get(repository=self.repo, sha=self.git_repo.git("rev-parse", "HEAD"))

    def rollout(self, commit: Commit) -> Rollout:
        return Rollout.objects.get(mapping=self.mapping, commit=commit, trigger__in=["commit", "manual"])

    def legs(self, rollout: Rollout) -> dict[str, str]:
        return {
            name.split("-", 1)[1]: state
            for name, state in ClusterSync.objects.filter(rollout=rollout).values_list(
                "cluster__name", "state"
            )
        }


def test_halts_when_failures_pass_the_threshold_and_resume_retries(
    git_repo: Any, make_fleet: Any, tasks: Any, admin_client: Any
) -> None:
    w = World(git_repo, make_fleet, ["a", "b", "c", "d"], batch_size=2, failure_threshold=1)
    w.fleet.sandbox("a").faults.down = True
    w.fleet.sandbox("b").faults.down = True
    rollout = w.rollout(c := w.push())
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "halted"
    assert "failure threshold of 1" in rollout.reason
    assert w.fleet.clusters["a"].name in rollout.reason and "connection" in rollout.reason
    assert w.legs(rollout) == {"a": "failed", "b": "failed", "c": "pending", "d": "pending"}
    assert w.fleet.sandbox("c").get_object("v1", "ConfigMap", "web", "apps") is None  # never reached
    # Transient errors were retried (with backoff) before failing; the halt is audited with its reason.
    a_name = w.fleet.clusters["a"].name
    assert AuditEvent.objects.filter(action="sync.retrying", cluster_name=a_name).count() == 1
    assert (
        AuditEvent.objects.get(action="rollout.halted", target_id=str(rollout.pk)).message == rollout.reason
    )

    for short in ("a", "b"):
        w.fleet.sandbox(short).faults.down = False
    response = admin_client.post(f"/api/rollouts/{rollout.pk}/resume/")
    assert response.status_code == 200 and response.json()["state"] == "syncing"
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    assert set(w.legs(rollout).values()) == {"synced"}
    assert c.pk == rollout.commit_id


def test_an_unreachable_cluster_fails_alone_and_others_sync(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    w = World(git_repo, make_fleet, ["a", "b", "c"], failure_threshold=5)
    w.fleet.sandbox("b").faults.down = True
    rollout = w.rollout(w.push())
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "failed"
    assert rollout.reason == "2 cluster(s) synced, 1 failed"
    assert w.legs(rollout) == {"a": "synced", "b": "failed", "c": "synced"}
    leg = ClusterSync.objects.get(rollout=rollout, cluster=w.fleet.clusters["b"])
    assert "connection" in leg.error and leg.attempts == 2


def test_validation_errors_are_not_retried_transient_ones_are(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    w = World(git_repo, make_fleet, ["a", "b"], failure_threshold=5)
    w.fleet.sandbox("a").faults.configure(error_rate=1.0, error_codes=(422,))
    w.fleet.sandbox("b").faults.fail_next(1, code=503)
    rollout = w.rollout(w.push())
    tasks.drain(include_delayed=True)
    a = ClusterSync.objects.get(rollout=rollout, cluster=w.fleet.clusters["a"])
    b = ClusterSync.objects.get(rollout=rollout, cluster=w.fleet.clusters["b"])
    assert a.state == "failed" and a.attempts == 1 and "422" in a.error
    assert b.state == "synced", (b.error, b.attempts)
    assert not AuditEvent.objects.filter(
        action="sync.retrying", cluster_name=w.fleet.clusters["a"].name
    ).exists()


def test_health_timeout_fails_the_cluster_with_the_reason(git_repo: Any, make_fleet: Any, tasks: Any) -> None:
    w = World(git_repo, make_fleet, ["a"], health_timeout_seconds=1, failure_threshold=5)
    w.fleet.sandbox("a").settings.update(never_ready=True)
    rollout = w.rollout(w.push(extra={"apps/web/deploy.yaml": deployment("web", "nginx:1.27")}))
    tasks.drain(include_delayed=True)
    leg = ClusterSync.objects.get(rollout=rollout)
    assert leg.state == "failed"
    assert "not healthy" in leg.error and "HealthTimeout" in leg.error
    assert leg.health == "Degraded"


def _cron_at(moment: datetime) -> str:
    return f"{moment.minute} {moment.hour} * * *"


def test_sync_windows_deny_now_waits_until_the_end(
    git_repo: Any, make_fleet: Any, tasks: Any, admin_client: Any
) -> None:
    w = World(git_repo, make_fleet, ["a"])
    w.group.sync_windows = [
        {"kind": "deny", "schedule": "0 0 * * *", "duration": "1h"},
        {"kind": "deny", "schedule": _cron_at(datetime.now(UTC) - timedelta(minutes=5)), "duration": "2h"},
    ]
    w.group.save()
    rollout = w.rollout(w.push())
    tasks.drain()
    body = admin_client.get(f"/api/rollouts/{rollout.pk}/").json()
    assert body["state"] == "queued"
    until = datetime.fromisoformat(body["wait_until"])
    assert timedelta(minutes=100) < until - datetime.now(UTC) <= timedelta(minutes=115)
    assert "outside the group's sync windows until" in body["reason"]
    assert AuditEvent.objects.filter(action="rollout.waiting", target_id=str(rollout.pk)).count() == 1
    assert [q.name for q in tasks.delayed()] == ["fleet.rollouts.advance"]  # resumes itself at `until`
    assert w.fleet.sandbox("a").get_object("v1", "ConfigMap", "web", "apps") is None
    # The window is gone (as if its time had passed): the scheduled advance syncs.
    w.group.sync_windows = []
    w.group.save()
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "synced" and rollout.wait_until is None
    assert AuditEvent.objects.filter(action="rollout.window_open", target_id=str(rollout.pk)).exists()


def test_sync_windows_allow_later_waits_for_the_next_start(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    w = World(git_repo, make_fleet, ["a"])
    later = datetime.now(UTC) + timedelta(hours=3)
    w.group.sync_windows = [{"kind": "allow", "schedule": _cron_at(later), "duration": "30m"}]
    w.group.save()
    rollout = w.rollout(w.push())
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "queued"
    assert abs((rollout.wait_until - later.replace(second=0, microsecond=0)).total_seconds()) < 1
    w.group.sync_windows = [{"kind": "allow", "schedule": "* * * * *", "duration": "1h"}]
    w.group.save()
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "synced"


def test_pause_resume_and_cancel(
    git_repo: Any, make_fleet: Any, tasks: Any, make_user: Any, token_client: Any
) -> None:
    w = World(git_repo, make_fleet, ["a", "b", "c"], batch_size=1)
    deployer = token_client(make_user("dep", role="deployer", scope=w.group))
    viewer = token_client(make_user("view", role="viewer", scope=w.group))
    rollout = w.rollout(w.push())
    tasks.drain(until=lambda: ClusterSync.objects.filter(rollout=rollout, state="synced").exists())
    assert viewer.post(f"/api/rollouts/{rollout.pk}/pause/").status_code == 403
    paused = deployer.post(f"/api/rollouts/{rollout.pk}/pause/")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert deployer.post(f"/api/rollouts/{rollout.pk}/pause/").status_code == 409
    tasks.drain(include_delayed=True)
    assert sorted(w.legs(rollout).values()) == ["pending", "pending", "synced"]  # nothing new started
    assert deployer.post(f"/api/rollouts/{rollout.pk}/resume/").status_code == 200
    tasks.drain(include_delayed=True)
    rollout.refresh_from_db()
    assert rollout.state == "synced"

    second = w.rollout(w.push())
    tasks.drain(until=lambda: ClusterSync.objects.filter(rollout=second, state="synced").exists())
    cancelled = deployer.post(f"/api/rollouts/{second.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    tasks.drain(include_delayed=True)
    assert sorted(w.legs(second).values()) == ["cancelled", "cancelled", "synced"]
    assert deployer.post(f"/api/rollouts/{second.pk}/cancel/").status_code == 409
    actions = set(AuditEvent.objects.filter(target_type="rollout").values_list("action", flat=True))
    assert {"rollout.paused", "rollout.resumed", "rollout.cancelled"} <= actions


def test_newer_commit_supersedes_and_approvals_lapse(
    git_repo: Any, make_fleet: Any, tasks: Any, make_user: Any, token_client: Any
) -> None:
    w = World(git_repo, make_fleet, ["a"], approval_required=True, approvals_required=2)
    alice = make_user("alice", role="approver", scope=w.group)
    first = w.rollout(w.push())
    tasks.drain()
    assert token_client(alice).post(f"/api/rollouts/{first.pk}/approve/").status_code == 200
    second = w.rollout(w.push())
    tasks.drain()
    first.refresh_from_db()
    assert first.state == "superseded" and first.superseded_by_id == second.pk
    assert "1 approval(s) lapsed" in first.reason
    assert Approval.objects.get(rollout=first).lapsed is True
    second.refresh_from_db()
    assert second.state == "awaiting_approval"
    body = token_client(alice).get(f"/api/rollouts/{second.pk}/").json()
    assert body["approvals_given"] == 0
    assert token_client(alice).post(f"/api/rollouts/{first.pk}/approve/").status_code == 409


def test_queued_rollout_is_superseded(git_repo: Any, make_fleet: Any, tasks: Any) -> None:
    w = World(git_repo, make_fleet, ["a"])
    w.group.sync_windows = [{"kind": "deny", "schedule": "* * * * *", "duration": "1h"}]
    w.group.save()
    first = w.rollout(w.push())
    tasks.drain()
    first.refresh_from_db()
    assert first.state == "queued"
    second = w.rollout(w.push())
    tasks.drain()
    first.refresh_from_db()
    assert first.state == "superseded" and first.superseded_by_id == second.pk
    assert ClusterSync.objects.get(rollout=first).state == "superseded"


def test_manual_group_waits_for_a_sync_request(
    git_repo: Any, make_fleet: Any, tasks: Any, make_user: Any, token_client: Any
) -> None:
    w = World(git_repo, make_fleet, ["a"], sync_mode="manual")
    rollout = w.rollout(w.push())
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "evaluated" and rollout.manual
    leg = ClusterSync.objects.get(rollout=rollout)
    assert leg.plan["counts"]["create"] == 2  # the plan is there before anyone syncs
    assert w.fleet.sandbox("a").get_object("v1", "ConfigMap", "web", "apps") is None
    viewer = token_client(make_user("v", role="viewer", scope=w.group))
    assert viewer.post(f"/api/rollouts/{rollout.pk}/sync/").status_code == 403
    deployer = token_client(make_user("d", role="deployer", scope=w.group))
    started = deployer.post(f"/api/rollouts/{rollout.pk}/sync/")
    assert started.status_code == 200 and started.json()["state"] == "queued"
    tasks.drain()
    rollout.refresh_from_db()
    assert rollout.state == "synced"
    assert deployer.post(f"/api/rollouts/{rollout.pk}/sync/").status_code == 409


def test_approval_rules(
    git_repo: Any, make_fleet: Any, tasks: Any, make_user: Any, token_client: Any
) -> None:
    w = World(git_repo, make_fleet, ["a"], approval_required=True, approvals_required=2)
    other_group = make_group(f"{w.fleet.prefix}-other", "nothing")
    author = make_user("author", role="approver", scope=w.group)
    author.email = "Author@Example.com"
    author.save()
    starter = make_user("starter", role="admin", scope=w.group)
    approvers = [make_user(n, role="approver", scope=w.group) for n in ("ann", "ben")]
    elsewhere = make_user("elsewhere", role="approver", scope=other_group)
    first = w.rollout(w.push(email="author@example.com"))
    tasks.drain()
    url = f"/api/rollouts/{first.pk}"
    refused = token_client(author).post(f"{url}/approve/")
    assert refused.status_code == 403 and "author" in refused.json()["detail"]
    assert token_client(elsewhere).post(f"{url}/approve/").status_code == 404
    # Rejection needs a reason.
    no_reason = token_client(approvers[0]).post(f"{url}/reject/", {"reason": "  "}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()
    rejected = token_client(approvers[0]).post(f"{url}/reject/", {"reason": "wrong color"}, format="json")
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    assert "wrong color" in rejected.json()["reason"]
    assert AuditEvent.objects.filter(action="rollout.rejected", message__contains="wrong color").exists()
    # A rollback started by a user: that user cannot approve it; two others can.
    second = w.push()
    tasks.drain()
    started = token_client(starter).post(
        f"/api/rollouts/{w.rollout(second).pk}/rollback/", {"commit": first.commit_id}, format="json"
    )
    assert started.status_code == 201
    tasks.drain()
    back = started.json()["id"]
    assert Rollout.objects.get(pk=back).state == "awaiting_approval"
    own = token_client(starter).post(f"/api/rollouts/{back}/approve/")
    assert own.status_code == 403 and "started" in own.json()["detail"]
    for user in approvers:
        assert token_client(user).post(f"/api/rollouts/{back}/approve/").status_code == 200
    tasks.drain()
    assert Rollout.objects.get(pk=back).state == "synced"
    assert Approval.objects.filter(rollout_id=back, decision="approve").count() == 2


def test_sync_now_for_a_cluster_and_a_group(
    git_repo: Any, make_fleet: Any, tasks: Any, make_user: Any, token_client: Any
) -> None:
    w = World(git_repo, make_fleet, ["a", "b"])
    commit = w.push()
    tasks.drain()
    w.fleet.sandbox("a").delete_object("v1", "ConfigMap", "web", "apps")
    deployer = token_client(make_user("dep", role="deployer", scope=w.group))
    viewer = token_client(make_user("view", role="viewer", scope=w.group))
    cluster = w.fleet.clusters["a"]
    assert viewer.post("/api/rollouts/sync-now/", {"cluster": cluster.pk}, format="json").status_code == 403
    assert deployer.post("/api/rollouts/sync-now/", {}, format="json").status_code == 400
    response = deployer.post("/api/rollouts/sync-now/", {"cluster": cluster.pk}, format="json")
    assert response.status_code == 201, response.content
    [made] = response.json()["rollouts"]
    assert made["trigger"] == "sync_now" and made["commit"]["sha"] == commit.sha
    tasks.drain()
    assert w.fleet.sandbox("a").get_object("v1", "ConfigMap", "web", "apps") is not None
    assert ClusterSync.objects.filter(rollout_id=made["id"]).count() == 1
    group = deployer.post("/api/rollouts/sync-now/", {"group": w.group.pk}, format="json")
    assert group.status_code == 201
    tasks.drain()
    assert Rollout.objects.get(pk=group.json()["rollouts"][0]["id"]).state == "synced"
    # The original rollout is not superseded by a sync now.
    assert w.rollout(commit).state == "synced"


def test_a_newer_commit_takes_over_the_clusters_a_syncing_rollout_has_not_reached(
    git_repo: Any, make_fleet: Any, tasks: Any
) -> None:
    w = World(git_repo, make_fleet, ["a", "b", "c"], batch_size=1)
    first = w.rollout(w.push(color="old"))
    tasks.drain(until=lambda: ClusterSync.objects.filter(rollout=first, state="synced").exists())
    second = w.rollout(w.push(color="new"))
    tasks.drain(include_delayed=True)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == "superseded" and first.superseded_by_id == second.pk
    # The leg already dispatched when the newer commit came finished; the ones not started were handed over.
    assert sorted(w.legs(first).values()) == ["superseded", "synced", "synced"]
    assert f"1 left to rollout {second.pk}" in first.reason
    assert second.state == "synced"
    for short in ("a", "b", "c"):
        assert w.fleet.sandbox(short).get_object("v1", "ConfigMap", "web", "apps")["data"] == {"color": "new"}
