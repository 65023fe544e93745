"""Repudiation: every audited write names the person who made it, whatever the door (API token, session API,
UI form, Django admin, management command, Celery task), never a blanket `system`.

Attack class: actions that cannot be attributed (audit records without the real actor), so that a change made
through a browser session or a background task cannot be traced to the person who caused it. Peer projects
have shipped fixes of this kind: Argo CD's audit events that named the wrong or no user for some API paths,
and Rancher's audit log that missed the acting user for requests authenticated in a later layer than the one
that writes the log. Here the request context was set before Django's AuthenticationMiddleware had run, so
UI and session-API writes were recorded as `system`.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from fleet.access.models import RoleBinding
from fleet.audit.models import AuditEvent
from fleet.core.context import acting
from fleet.core.tasks import ping
from policies.models import Waiver
from policies.services.definitions import PolicyDefinition, save_policy
from tests.factories import ClusterGroupFactory
from tests.workers import ROOT, Worker, child_env, wait_for

pytestmark = pytest.mark.django_db

POLICY = """package main

deny[msg] {
    input.kind == "Pod"
    msg := "no bare pods"
}
"""


@pytest.fixture
def policy() -> Any:
    return save_policy("no-pods", PolicyDefinition(style="conftest", modules=(("p.rego", POLICY),))).policy


def waiver_data(policy: Any, group: Any) -> dict[str, Any]:
    return {
        "policy": policy.pk,
        "kind": "Pod",
        "name_pattern": "debug-*",
        "cluster_group": group.pk,
        "expires_at": (timezone.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        "justification": "debugging an incident",
    }


def only_event(action: str) -> AuditEvent:
    events = list(AuditEvent.objects.filter(action=action))
    assert len(events) == 1, [(e.action, e.actor_name) for e in events]
    return events[0]


def assert_actor(event: AuditEvent, user: Any, change_context: str) -> None:
    assert (event.actor_id, event.actor_name) == (user.pk, user.get_username())
    assert event.change_context == change_context


def test_api_token_write_names_the_token_owner(make_user: Any, token_client: Any, policy: Any) -> None:
    user = make_user("tara", role="admin")
    response = token_client(user).post("/api/waivers/", waiver_data(policy, ClusterGroupFactory(name="dev")))
    assert response.status_code == 201, response.content
    assert_actor(only_event("waiver.create"), user, "api")


def test_session_api_write_with_csrf_names_the_signed_in_user(make_user: Any, policy: Any) -> None:
    user = make_user("sam", role="admin")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    data = waiver_data(policy, ClusterGroupFactory(name="dev"))
    # Without the CSRF token the session cannot write at all.
    assert client.post("/api/waivers/", data, format="json").status_code == 403
    assert not AuditEvent.objects.filter(action="waiver.create").exists()
    client.get("/login/")  # sets the CSRF cookie, as the UI's pages do
    csrf = client.cookies["csrftoken"].value
    response = client.post("/api/waivers/", data, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 201, response.content
    assert_actor(only_event("waiver.create"), user, "api")


def test_ui_form_write_names_the_signed_in_user(make_user: Any, policy: Any) -> None:
    user = make_user("uma", role="admin")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/waivers/")
    csrf = client.cookies["csrftoken"].value
    data = {**waiver_data(policy, ClusterGroupFactory(name="dev")), "csrfmiddlewaretoken": csrf}
    assert client.post("/waivers/", data).status_code == 302
    assert Waiver.objects.get().author == user
    assert_actor(only_event("waiver.create"), user, "web")


def test_ui_policy_version_names_the_signed_in_user(make_user: Any) -> None:
    user = make_user("pia", role="admin")
    client = Client()
    client.force_login(user)
    response = client.post(
        "/policies/new/", {"name": "no-bare-pods", "module_path": "policy.rego", "source": POLICY}
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    versions = AuditEvent.objects.filter(action__startswith="policy.")
    assert versions.exists()
    for event in versions:
        assert_actor(event, user, "web")


def test_admin_change_names_the_staff_user(make_user: Any) -> None:
    staff = make_user("ada", role="admin", superuser=True)
    member = make_user("mo", role="viewer")
    binding = RoleBinding.objects.get(user=member)
    client = Client()
    client.force_login(staff)
    response = client.post(
        f"/admin/access/rolebinding/{binding.pk}/change/",
        {"user": member.pk, "group": "", "role": "deployer", "scope": ""},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    binding.refresh_from_db()
    assert binding.role == "deployer"
    assert_actor(only_event("rolebinding.update"), staff, "web")


@pytest.mark.django_db(transaction=True)
def test_management_command_names_the_person_at_the_shell(make_user: Any) -> None:
    """`manage.py` run by an operator: there is no Fleetgate user, so the event names the shell login and
    host, not `system`."""
    make_user("cora", role="admin")
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "create_token", "cora", "--days", "1"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    event = only_event("apitoken.create")
    assert event.actor_id is None
    assert event.actor_name == f"{getpass.getuser()}@{socket.gethostname()}"
    assert event.change_context == "command"
    # The key printed once is not in the audit row.
    assert result.stdout.strip() and result.stdout.strip() not in str(event.__dict__)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_celery_task_names_the_user_who_queued_it(tmp_path: Path, make_user: Any) -> None:
    user = make_user("tom", role="admin")
    worker = Worker(tmp_path / "worker.log")
    try:
        with acting(user=user, change_context="api", request_id="req-actor-task-0001"):
            queued = ping.delay("queued by tom")
        event = wait_for(
            lambda: AuditEvent.objects.filter(action="system.ping").first(), timeout=90, what="the ping task"
        )
    finally:
        worker.stop()
    assert_actor(event, user, "task")
    assert event.request_id == "req-actor-task-0001"
    assert queued.id in worker.log  # run by the worker process, not in the test's
