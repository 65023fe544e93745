"""The real path, in real processes: a commit fetched here queues the rollout's tasks on the broker; a real
Celery worker prepares it (render, gate, plan against a sandbox cluster over HTTP), the rollout waits for
approval, the audit event's hook queues the fan-out, and the worker delivers the signed notification to
the receiver, retrying after the receiver's 503 (a countdown on the broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.access.models import RoleBinding
from fleet.audit.models import AuditEvent
from fleet.notifications import services
from fleet.notifications.models import Delivery, Subscription
from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from tests.factories import UserFactory
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository
from tests.workers import Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_worker_delivers_an_approval_needed_with_a_retry(
    tmp_path: Path, git_repo: Any, make_fleet: Any, receiver: Any
) -> None:
    make_fleet({"p1": {"env": "prod"}})
    prod = make_group("prod", "prod", approval_required=True, approvals_required=1)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", prod)
    owner = UserFactory(username="ana")
    RoleBinding.objects.create(user=owner, role="approver", scope=prod)
    sub = Subscription(name="approvals", channel="webhook", events=["approval_needed"], cluster_group=prod)
    receiver.secret = services.save_subscription(owner, sub, target=receiver.url)
    receiver.script = [503]

    worker = Worker(tmp_path / "worker.log", FLEETGATE_NOTIFY_RETRY_BASE="0.5")
    try:
        git_repo.commit(
            {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"})}, "one"
        )
        assert fetch_repository(repo).ok
        delivery = wait_for(
            lambda: Delivery.objects.filter(subscription=sub, status="delivered").first(),
            timeout=120,
            what="the delivery",
        )
    finally:
        worker.stop()
    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "awaiting_approval"
    assert delivery.attempts == 2 and delivery.response_code == 200
    assert [r.signature_ok for r in receiver.received] == [True, True]
    assert receiver.received[1].json()["title"].endswith("needs approval")
    assert receiver.received[0].headers["X-Fleetgate-Delivery"] == str(delivery.pk)
    assert "fleet.notifications.deliver" in worker.log
    outcomes = AuditEvent.objects.filter(action__startswith="notification.").order_by("sequence")
    assert [(e.action, e.change_context) for e in outcomes] == [
        ("notification.retrying", "task"),
        ("notification.delivered", "task"),
    ]
