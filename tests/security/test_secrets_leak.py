"""Sensitive data exposure: secrets must not leave the server through API responses, error bodies, logs,
stored plans, drift diffs, the UI, audit rows or exports.

Attack class: credentials and Kubernetes Secret values disclosed to anyone who can read a diff, a log or a
report. Peer GitOps tools have had several advisories of this kind: Argo CD disclosed Secret values in the
diff and manifest views and in application events, and repository credentials through error messages (git
prints URLs with their credentials); Flux and Rancher Fleet logged or surfaced repository and cluster
credentials in error messages and status conditions; Kargo exposed credentials through its API. Here: a
Secret is rolled out, changed and drifted on a sandbox cluster and every place that shows it is searched for
its values (plain and base64); cluster, kubeconfig and repository tokens are pushed through failing
connections and fetches with every log captured.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from django.test import Client

from fleet.audit.models import AuditEvent
from fleet.rollouts import services
from fleet.rollouts.models import ClusterSync, Rollout, SyncedState
from fleet.sources.models import Commit, Repository
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import (  # noqa: F401 (fixtures of the rollout tests, used here by name)
    NAMESPACE,
    _fast_retries,
    make_group,
    make_mapping,
    make_repository,
    sandbox_server,
)
from tests.rollouts.conftest import git_repo as git_repo
from tests.rollouts.conftest import make_fleet as make_fleet
from tests.rollouts.conftest import tasks as tasks

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD_1 = "hunter2-first-Pa55w0rd-QQQ"
PASSWORD_2 = "hunter2-second-Pa55w0rd-RRR"
API_KEY = "apikey-unchanged-ZZZ-77"
LIVE_EDIT = "edited-in-cluster-Pa55-SSS"
CLUSTER_TOKEN = "s3cr3t-cluster-token-leak-AAAA"
KUBECONFIG_TOKEN = "s3cr3t-kubeconfig-token-leak-BBBB"
GIT_TOKEN = "s3cr3t-git-token-leak-CCCC"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms(*values: str) -> list[str]:
    """A value as it could appear: plain, base64 (Secret data), and base64 without padding."""
    out = []
    for value in values:
        out += [value, b64(value), b64(value).rstrip("=")]
    return out


def secret_yaml(password: str) -> str:
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: apps\ntype: Opaque\n"
        f"stringData:\n  password: {password}\ndata:\n  apikey: {b64(API_KEY)}\n"
    )


def assert_absent(where: str, text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked in {where}"


def everything_about_rollouts(client: Any) -> dict[str, str]:
    """Every place a user can read a plan, a result or a drift: rows, API, UI page, audit, exports."""
    texts = {
        "stored plans and results": json.dumps(
            list(ClusterSync.objects.values("plan", "results", "error", "health_detail")), default=str
        ),
        "stored drift": json.dumps(list(SyncedState.objects.values("drift", "drift_error")), default=str),
        "audit rows": json.dumps(list(AuditEvent.objects.values()), default=str),
        "API cluster-syncs": client.get("/api/cluster-syncs/?limit=100").content.decode(),
        "API synced-states": client.get("/api/synced-states/?limit=100").content.decode(),
        "API audit events": client.get("/api/audit/events/?limit=500").content.decode(),
    }
    for rollout in Rollout.objects.all():
        texts[f"API rollout {rollout.pk}"] = client.get(f"/api/rollouts/{rollout.pk}/").content.decode()
    for fmt in ("csv", "jsonl"):
        response = client.get(f"/api/audit/events/export/?format={fmt}")
        assert response.status_code == 200
        texts[f"audit export {fmt}"] = b"".join(response.streaming_content).decode()
    return texts


def test_secret_values_never_appear_in_plans_drift_api_ui_audit_or_exports(
    git_repo: Any,
    make_fleet: Any,
    tasks: Any,
    make_user: Any,
    token_client: Any,
    admin_user: Any,
    admin_client: Any,
    caplog: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    fleet = make_fleet({"s-1": {"env": "sec"}})
    # Approval required: the gate stores a plan for the approvers to read (the thing under test).
    group = make_group("sec", "sec", approval_required=True, approvals_required=1)
    mapping = make_mapping(make_repository(git_repo), "db", "apps/db", group)
    repo = mapping.repository
    approver = token_client(make_user("alice", role="approver"))

    def land(files: dict[str, str], message: str) -> Rollout:
        git_repo.commit(files, message)
        assert fetch_repository(repo).ok
        tasks.drain()
        rollout = Rollout.objects.order_by("-pk").first()
        assert rollout is not None and rollout.state == "awaiting_approval", rollout and rollout.reason
        assert approver.post(f"/api/rollouts/{rollout.pk}/approve/").status_code == 200
        tasks.drain()
        rollout.refresh_from_db()
        assert rollout.state == "synced", rollout.reason
        return rollout

    land({"apps/db/ns.yaml": NAMESPACE, "apps/db/secret.yaml": secret_yaml(PASSWORD_1)}, "db")
    box = fleet.sandbox("s-1")
    live = box.get_object("v1", "Secret", "db", "apps")
    assert live is not None and live["data"]["password"] == b64(PASSWORD_1)  # really applied

    # A new commit changes one key: its plan says that the key changed, never to or from what.
    second = land({"apps/db/secret.yaml": secret_yaml(PASSWORD_2)}, "rotate the password")
    assert box.get_object("v1", "Secret", "db", "apps")["data"]["password"] == b64(PASSWORD_2)
    plan = ClusterSync.objects.get(rollout=second).plan
    update = next(i for i in plan["items"] if i["ref"]["kind"] == "Secret")
    assert update["action"] == "update"
    diff_lines = update["diff"].splitlines()
    changed = [line for line in diff_lines if line.startswith("+") and "changed" in line]
    assert any("password" in line for line in changed), diff_lines
    assert not any("apikey" in line for line in changed), diff_lines

    # Someone edits the Secret in the cluster: drift reports the field, not the values.
    box.apply_object(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "apps"},
            "data": {"password": b64(LIVE_EDIT)},
        },
        manager="kubectl-edit",
        force=True,
    )
    assert services.check_all_drift() >= 1
    tasks.drain()
    state = SyncedState.objects.get(mapping=mapping)
    assert state.drift_status == "drifted"

    texts = everything_about_rollouts(admin_client)
    ui = Client()
    ui.force_login(admin_user)
    for rollout in Rollout.objects.all():
        page = ui.get(f"/rollouts/{rollout.pk}/")
        assert page.status_code == 200
        texts[f"UI rollout {rollout.pk}"] = page.content.decode()
    for commit in Commit.objects.all():
        for where, response in (
            (f"API commit {commit.pk}", admin_client.get(f"/api/commits/{commit.pk}/")),
            (f"UI commit {commit.pk}", ui.get(f"/commits/{commit.pk}/")),
        ):
            assert response.status_code == 200, where
            texts[where] = response.content.decode()
    texts["API evaluations"] = admin_client.get("/api/evaluations/?limit=100").content.decode()
    texts["logs"] = caplog.text
    secrets = forms(PASSWORD_1, PASSWORD_2, API_KEY, LIVE_EDIT)
    for where, text in texts.items():
        assert_absent(where, text, secrets)
    # The searches looked at real content: the plan and the drift are there, by key.
    assert any(d["path"].startswith(".data.password") for o in state.drift for d in o.get("fields", []))
    assert "password" in texts["API cluster-syncs"] and ".data.password" in texts["API synced-states"]
    assert "(changed)" in texts[f"UI rollout {second.pk}"]  # the rollout page shows the masked diff


def test_cluster_and_kubeconfig_tokens_stay_out_of_responses_errors_and_logs(
    admin_client: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    created = admin_client.post(
        "/api/clusters/",
        {"name": "leaky", "api_url": "https://127.0.0.1:1", "auth_method": "token", "token": CLUSTER_TOKEN},
        format="json",
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    texts = {
        "create response": created.content.decode(),
        "detail": admin_client.get(f"/api/clusters/{pk}/").content.decode(),
        "list": admin_client.get("/api/clusters/").content.decode(),
    }
    tested = admin_client.post(f"/api/clusters/{pk}/test-connection/")
    assert tested.status_code in (200, 400, 502), tested.content
    texts["failed connection test"] = tested.content.decode()
    bad_kubeconfig = f"apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user: {{token: {KUBECONFIG_TOKEN}\n"
    refused = admin_client.post(
        "/api/clusters/",
        {"name": "broken-kc", "api_url": "", "auth_method": "kubeconfig", "kubeconfig": bad_kubeconfig},
        format="json",
    )
    assert refused.status_code == 400, refused.content
    texts["kubeconfig error body"] = refused.content.decode()
    texts["audit rows"] = json.dumps(list(AuditEvent.objects.values()), default=str)
    texts["logs"] = caplog.text
    for where, text in texts.items():
        assert_absent(where, text, [CLUSTER_TOKEN, KUBECONFIG_TOKEN])


def test_repository_token_stays_out_of_git_errors_logs_api_and_audit(admin_client: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    created = admin_client.post(
        "/api/repositories/",
        {
            "name": "private",
            "url": "https://127.0.0.1:1/org/private.git",
            "branch": "main",
            "username": "bot",
            "token": GIT_TOKEN,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    repo = Repository.objects.get(pk=created.json()["id"])
    outcome = fetch_repository(repo)  # git fails to connect; its message names the URL it used
    assert not outcome.ok
    repo.refresh_from_db()
    texts = {
        "create response": created.content.decode(),
        "detail": admin_client.get(f"/api/repositories/{repo.pk}/").content.decode(),
        "fetch outcome": repr(outcome),
        "stored repository error": json.dumps(
            {k: v for k, v in repo.__dict__.items() if k not in ("token", "_state")}, default=str
        ),
        "audit rows": json.dumps(list(AuditEvent.objects.values()), default=str),
        "logs": caplog.text,
    }
    assert "127.0.0.1" in texts["logs"] + texts["fetch outcome"]  # the error was reported, with its URL
    for where, text in texts.items():
        assert_absent(where, text, [GIT_TOKEN])


def test_api_token_key_is_shown_once_and_never_listed_or_audited(admin_client: Any) -> None:
    created = admin_client.post("/api/access/tokens/", {"description": "ci"}, format="json")
    assert created.status_code == 201, created.content
    key = created.json()["key"]
    assert key
    texts = {
        "list": admin_client.get("/api/access/tokens/").content.decode(),
        "detail": admin_client.get(f"/api/access/tokens/{created.json()['id']}/").content.decode(),
        "audit rows": json.dumps(list(AuditEvent.objects.values()), default=str),
    }
    for where, text in texts.items():
        assert_absent(where, text, [key, key.split("_", 1)[-1]])
