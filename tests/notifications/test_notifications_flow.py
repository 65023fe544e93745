"""Notifications raised by the real flow (real git, the regorus gate, sandbox clusters over HTTP, the
queued tasks run in this process), delivered to a real HTTP receiver and a real SMTP server: a commit
blocked by a deny policy, an approval needed, a rollout failed on an unreachable cluster, drift; the sync
window and waiver scans; RBAC on what each subscriber hears; no secret in a payload or an audit row."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from clusters.models import ClusterGroup
from fleet.access.models import RoleBinding
from fleet.audit.models import AuditEvent
from fleet.notifications import services
from fleet.notifications.models import Delivery, Subscription
from fleet.rollouts import services as rollout_services
from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from policies.models import PolicyBinding, Waiver
from policies.services.definitions import PolicyDefinition, save_policy
from tests.factories import UserFactory
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)

NO_RED = """package main

import rego.v1

deny contains msg if {
    input.kind == "ConfigMap"
    input.data.color == "red"
    msg := sprintf("%s: red is not allowed", [input.metadata.name])
}
"""


def user(name: str, role: str, scope: ClusterGroup | None, email: str = "") -> Any:
    u = UserFactory(username=name, email=email or f"{name}@example.test")
    RoleBinding.objects.create(user=u, role=role, scope=scope)
    return u


def subscribe(
    owner: Any, channel: str, target: str, events: list[str], **subject: Any
) -> tuple[Subscription, str]:
    sub = Subscription(name=f"{owner.username}-{channel}", channel=channel, events=events, **subject)
    secret = services.save_subscription(owner, sub, target=target)
    return sub, secret


def secrets_of(fleet: Any) -> list[str]:
    return [c.token for c in fleet.clusters.values()]


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text


def down_after_the_gate(tasks: Any, mapping: Any, sandbox: Any) -> None:
    """Run the flow until the gate has passed, then take the cluster down: its sync fails (the gate reads
    the live objects, so a cluster down from the start would be blocked there, not failed)."""
    tasks.drain(
        until=lambda: Rollout.objects.filter(mapping=mapping, state__in=["queued", "syncing"]).exists()
    )
    sandbox.faults.down = True
    tasks.drain(include_delayed=True)


def test_a_commit_blocked_by_a_deny_policy_reaches_a_signed_webhook_of_the_group(
    git_repo: Any, make_fleet: Any, tasks: Any, receiver: Any
) -> None:
    fleet = make_fleet({"p1": {"env": "prod"}, "p2": {"env": "prod"}})
    prod = make_group("prod", "prod")
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", prod)
    policy = save_policy("no-red", PolicyDefinition(style="conftest", modules=(("r.rego", NO_RED),))).policy
    PolicyBinding.objects.create(policy=policy, cluster_group=prod, enforcement="deny")
    owner = user("olga", "viewer", prod)
    sub, secret = subscribe(owner, "webhook", receiver.url, ["commit_blocked"], cluster_group=prod)
    assert secret
    with connection.cursor() as cursor:  # stored encrypted, both the URL and the key
        cursor.execute("SELECT target, secret FROM notifications_subscription WHERE id = %s", [sub.pk])
        stored = cursor.fetchone()
    assert all(v.startswith("fernet:") for v in stored) and secret not in "".join(stored)
    receiver.secret = secret

    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "red"})}, "red"
    )
    assert fetch_repository(repo).ok
    tasks.drain(include_delayed=True)

    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "blocked", rollout.reason
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.signature_ok is True
    assert got.headers["X-Fleetgate-Event"] == "commit_blocked"
    payload = got.json()
    assert payload["event"] == "commit_blocked"
    assert payload["group"] == "prod" and payload["mapping"] == "web" and payload["repository"] == repo.name
    assert payload["commit"] == rollout.commit.sha
    assert set(payload["clusters"]) == {c.name for c in fleet.clusters.values()}
    violation = payload["clusters"][fleet.clusters["p1"].name]["violations"][0]
    assert violation == {
        "policy": "no-red",
        "object": "ConfigMap/apps/web",
        "message": "web: red is not allowed",
    }
    assert payload["url"] == f"https://fleetgate.example.test/commits/{rollout.commit_id}/"
    assert_no_secret(got.body.decode(), [*secrets_of(fleet), secret])

    delivery = Delivery.objects.get(subscription=sub)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 1, 200)
    audited = AuditEvent.objects.get(action="notification.delivered")
    assert audited.after["event"] == "commit_blocked" and audited.after["response_code"] == 200
    rows = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert_no_secret(rows, [*secrets_of(fleet), secret, receiver.url])

    # Idempotent: the fan-out and the delivery run again (a redelivered task) send nothing twice.
    decision = AuditEvent.objects.get(action="policy.decision")
    assert services.fan_out(decision.pk) == 0
    assert services.deliver(delivery.pk) == "delivered"
    # A worker that died mid-send leaves a lapsed lease; the scan queues it again and it is sent once.
    Delivery.objects.filter(pk=delivery.pk).update(status="sending", lease_until=timezone.now())
    assert services.scan()["redispatched"] == 1
    tasks.drain(include_delayed=True)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(receiver.received)) == ("delivered", 2, 2)
    ids = {r.headers["X-Fleetgate-Delivery"] for r in receiver.received}
    assert ids == {str(delivery.pk)}  # at least once: the receiver can drop the repeat by its delivery id

    # A receiver that does not know the secret refuses: a wrong key is a 401 and not retried.
    receiver.secret = "not-the-secret"
    git_repo.commit({"apps/web/cm.yaml": configmap("web", {"color": "red", "size": "2"})}, "red again")
    assert fetch_repository(repo).ok
    tasks.drain(include_delayed=True)
    second = Delivery.objects.filter(subscription=sub).order_by("-id").first()
    assert second is not None and second.pk != delivery.pk
    assert (second.status, second.attempts, second.response_code) == ("failed", 1, 401)


def test_a_failed_rollout_on_an_unreachable_cluster_is_retried_to_a_slack_webhook(
    git_repo: Any, make_fleet: Any, tasks: Any, receiver: Any
) -> None:
    fleet = make_fleet({"a": {"env": "dev"}, "b": {"env": "dev"}})
    dev = make_group("dev", "dev", failure_threshold=5)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", dev)
    owner = user("dora", "deployer", dev)
    sub, secret = subscribe(
        owner, "slack", receiver.url, ["rollout_failed", "rollout_halted"], mapping=mapping
    )
    assert secret == ""
    receiver.script = [500, 503]  # the receiver fails twice, then takes it

    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"})}, "one"
    )
    assert fetch_repository(repo).ok
    down_after_the_gate(tasks, mapping, fleet.sandbox("b"))

    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "failed", rollout.reason
    assert len(receiver.received) == 3
    message = receiver.received[-1].json()
    assert message["text"] == f"Rollout {rollout.pk} of web at {rollout.commit.sha[:10]} failed"
    text = message["blocks"][0]["text"]["text"]
    assert fleet.clusters["b"].name in text and "failed" in text
    assert_no_secret(receiver.received[-1].body.decode(), secrets_of(fleet))
    delivery = Delivery.objects.get(subscription=sub)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 3, 200)
    actions = list(
        AuditEvent.objects.filter(action__startswith="notification.")
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions == ["notification.retrying", "notification.retrying", "notification.delivered"]
    retry = AuditEvent.objects.filter(action="notification.retrying").order_by("sequence").first()
    assert retry is not None and retry.after["response_code"] == 500
    # The Slack URL is a credential: neither the audit log nor the API shows it.
    assert_no_secret(json.dumps(list(AuditEvent.objects.values()), default=str), [receiver.url])


def test_a_halted_rollout_to_teams_retries_until_the_last_attempt_and_the_log_says_why(
    git_repo: Any, make_fleet: Any, tasks: Any, receiver: Any, settings: Any
) -> None:
    settings.FLEETGATE_NOTIFY_MAX_ATTEMPTS = 3
    fleet = make_fleet({"a": {"env": "dev"}})
    dev = make_group("dev", "dev")  # failure threshold 0: one failed cluster halts the rollout
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", dev)
    sub, _ = subscribe(user("tom", "viewer", dev), "teams", receiver.url, ["rollout_halted"], repository=repo)
    receiver.script = [500] * 10
    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"})}, "one"
    )
    assert fetch_repository(repo).ok
    down_after_the_gate(tasks, mapping, fleet.sandbox("a"))
    assert Rollout.objects.get(mapping=mapping).state == "halted"
    delivery = Delivery.objects.get(subscription=sub)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 3, 500)
    assert delivery.error == "answered HTTP 500"
    card = receiver.received[0].json()
    assert card["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["attachments"][0]["content"]["body"][0]["text"].endswith("halted")
    assert AuditEvent.objects.filter(action="notification.failed").count() == 1


def test_an_approval_needed_arrives_by_email_on_a_real_smtp_server(
    git_repo: Any, make_fleet: Any, tasks: Any, smtp_server: Any
) -> None:
    make_fleet({"p1": {"env": "prod"}})
    prod = make_group("prod", "prod", approval_required=True, approvals_required=1)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", prod)
    approver = user("alex", "approver", prod, email="alex@example.test")
    subscribe(
        approver, "email", "alex@example.test, oncall@example.test", ["approval_needed"], cluster_group=prod
    )

    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"})}, "one"
    )
    assert fetch_repository(repo).ok
    tasks.drain(include_delayed=True)

    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "awaiting_approval"
    assert len(smtp_server.messages) == 1
    envelope = smtp_server.messages[0]
    assert sorted(envelope.rcpt_tos) == ["alex@example.test", "oncall@example.test"]
    text = envelope.content.decode()
    assert (
        f"Subject: [Fleetgate] Rollout {rollout.pk} of web at {rollout.commit.sha[:10]} needs approval"
        in text
    )
    assert f"https://fleetgate.example.test/rollouts/{rollout.pk}/" in text
    delivery = Delivery.objects.get(event_type="approval_needed")
    assert (delivery.status, delivery.response_code) == ("delivered", 250)


def test_email_to_a_mail_server_that_is_down_is_retried_then_failed(
    git_repo: Any, make_fleet: Any, tasks: Any, settings: Any
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.FLEETGATE_NOTIFY_MAX_ATTEMPTS = 2
    make_fleet({"p1": {"env": "prod"}})
    prod = make_group("prod", "prod", approval_required=True, approvals_required=1)
    repo = make_repository(git_repo)
    make_mapping(repo, "web", "apps/web", prod)
    subscribe(
        user("alex", "approver", prod), "email", "alex@example.test", ["approval_needed"], cluster_group=prod
    )
    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"})}, "one"
    )
    assert fetch_repository(repo).ok
    tasks.drain(include_delayed=True)
    delivery = Delivery.objects.get(event_type="approval_needed")
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert delivery.error.startswith("mail server unreachable")


def test_drift_detected_reaches_the_subscribers_of_the_mapping(
    git_repo: Any, make_fleet: Any, tasks: Any, receiver: Any
) -> None:
    fleet = make_fleet({"s1": {"env": "staging"}})
    staging = make_group("staging", "staging")
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", staging)
    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "green"})}, "one"
    )
    assert fetch_repository(repo).ok
    tasks.drain(include_delayed=True)
    sub, secret = subscribe(
        user("sam", "viewer", staging), "webhook", receiver.url, ["drift_detected"], mapping=mapping
    )
    receiver.secret = secret

    fleet.sandbox("s1").apply_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "apps"},
            "data": {"color": "red"},
        },
        manager="kubectl-edit",
    )
    assert rollout_services.check_all_drift() >= 1
    tasks.drain(include_delayed=True)

    assert len(receiver.received) == 1 and receiver.received[0].signature_ok
    payload = receiver.received[0].json()
    assert payload["event"] == "drift_detected"
    cluster = fleet.clusters["s1"].name
    assert payload["title"] == f"Drift in web on {cluster}"
    objects = payload["clusters"][cluster]["objects"]
    assert objects[0]["ref"]["kind"] == "ConfigMap" and objects[0]["ref"]["name"] == "web"
    assert Delivery.objects.get(subscription=sub).status == "delivered"


def test_a_subscriber_hears_only_about_groups_their_role_sees(
    git_repo: Any, make_fleet: Any, tasks: Any, receiver: Any
) -> None:
    """One repository mapped to staging and prod; a commit blocked in both. The staging viewer subscribed to
    the repository hears about staging only; the all-clusters viewer about both."""
    fleet = make_fleet({"s1": {"env": "staging"}, "p1": {"env": "prod"}})
    staging, prod = make_group("staging", "staging"), make_group("prod", "prod")
    repo = make_repository(git_repo)
    make_mapping(repo, "web-staging", "apps/web", staging)
    make_mapping(repo, "web-prod", "apps/web", prod)
    policy = save_policy("no-red", PolicyDefinition(style="conftest", modules=(("r.rego", NO_RED),))).policy
    PolicyBinding.objects.create(policy=policy, cluster_group=None, enforcement="deny")
    narrow, _ = subscribe(
        user("nina", "viewer", staging), "slack", receiver.url + "/nina", ["commit_blocked"], repository=repo
    )
    wide, _ = subscribe(
        user("will", "viewer", None), "slack", receiver.url + "/will", ["commit_blocked"], repository=repo
    )

    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "red"})}, "red"
    )
    assert fetch_repository(repo).ok
    tasks.drain(include_delayed=True)

    nina = [r for r in receiver.received if r.path.endswith("/nina")]
    will = [r for r in receiver.received if r.path.endswith("/will")]
    assert [m.json()["text"].split(" in ")[-1] for m in nina] == ["web-staging"]
    assert sorted(m.json()["text"].split(" in ")[-1] for m in will) == ["web-prod", "web-staging"]
    assert fleet.clusters["p1"].name not in json.dumps([m.json() for m in nina])
    assert set(Delivery.objects.filter(subscription=narrow).values_list("payload__mapping", flat=True)) == {
        "web-staging"
    }
    assert Delivery.objects.filter(subscription=wide).count() == 2

    # A role taken away stops the deliveries: the staging binding is removed, the next block is not sent.
    RoleBinding.objects.filter(user__username="nina").delete()
    git_repo.commit({"apps/web/cm.yaml": configmap("web", {"color": "red", "v": "2"})}, "red again")
    assert fetch_repository(repo).ok
    tasks.drain(include_delayed=True)
    assert Delivery.objects.filter(subscription=narrow).count() == 1
    assert Delivery.objects.filter(subscription=wide).count() == 4


def test_the_scan_tells_once_of_a_window_that_opened_and_of_a_waiver_about_to_expire(
    tasks: Any, receiver: Any
) -> None:
    group = ClusterGroup.objects.create(
        name="prod",
        selector={"matchLabels": {"env": "prod"}},
        sync_windows=[{"kind": "deny", "schedule": "* * * * *", "duration": "2h"}],
    )
    other = ClusterGroup.objects.create(name="other", selector={"matchLabels": {"env": "other"}})
    owner = user("pat", "viewer", group)
    _, secret = subscribe(
        owner, "webhook", receiver.url, ["sync_window_opened", "waiver_expiring"], cluster_group=group
    )
    receiver.secret = secret
    policy = save_policy("no-red", PolicyDefinition(style="conftest", modules=(("r.rego", NO_RED),))).policy
    soon = Waiver.objects.create(
        policy=policy,
        cluster_group=group,
        justification="migration",
        expires_at=timezone.now() + timedelta(hours=5),
    )
    Waiver.objects.create(
        policy=policy,
        cluster_group=group,
        justification="later",
        expires_at=timezone.now() + timedelta(days=30),
    )
    Waiver.objects.create(
        policy=policy,
        cluster_group=other,
        justification="not theirs",
        expires_at=timezone.now() + timedelta(hours=5),
    )

    first = services.scan()  # the windows' first look: closed, remembered; two waivers expire within 72h
    assert (first["windows_opened"], first["waivers_expiring"]) == (0, 2)
    group.sync_windows = [{"kind": "allow", "schedule": "0 0 * * *", "duration": "24h"}]
    group.save()
    result = services.scan()
    assert (result["windows_opened"], result["waivers_expiring"]) == (1, 0)
    tasks.drain(include_delayed=True)
    assert services.scan() == {"windows_opened": 0, "waivers_expiring": 0, "redispatched": 0}
    tasks.drain(include_delayed=True)

    events = sorted(r.json()["event"] for r in receiver.received)
    assert events == ["sync_window_opened", "waiver_expiring"]
    assert all(r.signature_ok for r in receiver.received)
    waiver = next(r.json() for r in receiver.received if r.json()["event"] == "waiver_expiring")
    assert waiver["details"]["waiver"] == soon.pk and waiver["details"]["policy"] == "no-red"
    assert AuditEvent.objects.filter(action="syncwindow.opened", scope_group_id=group.pk).count() == 1
    assert AuditEvent.objects.filter(action="waiver.expiring").count() == 2


def _scan_a_waiver_expiring_within_the_hour(group: ClusterGroup, tasks: Any) -> None:
    """A waiver of the group that expires in an hour, found by the scan; its deliveries are made."""
    policy = save_policy("no-red", PolicyDefinition(style="conftest", modules=(("r.rego", NO_RED),))).policy
    Waiver.objects.create(
        policy=policy, cluster_group=group, justification="x", expires_at=timezone.now() + timedelta(hours=1)
    )
    services.scan()
    tasks.drain(include_delayed=True)


def test_the_ssrf_guard_is_asked_again_when_a_delivery_connects(
    tasks: Any, receiver: Any, settings: Any
) -> None:
    """A destination allowed when saved but denied when the delivery connects (the address a name resolves
    to changed, or the deny list did) is not contacted, and not retried."""
    group = ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})
    sub, _ = subscribe(
        user("pat", "viewer", group),
        "webhook",
        receiver.url.replace("127.0.0.1", "localhost"),
        ["waiver_expiring"],
        cluster_group=group,
    )
    settings.FLEETGATE_URL_DENY_CIDRS = ["127.0.0.0/8", "::1/128"]
    _scan_a_waiver_expiring_within_the_hour(group, tasks)
    delivery = Delivery.objects.get(subscription=sub)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 1, None)
    assert "denied network" in delivery.error and "localhost" in delivery.error
    assert receiver.received == []


def test_a_receiver_that_does_not_answer_in_time_is_retried(tasks: Any, receiver: Any, settings: Any) -> None:
    from tests.notifications.conftest import STALL

    settings.FLEETGATE_NOTIFY_TIMEOUT = 1
    group = ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}})
    sub, secret = subscribe(
        user("pat", "viewer", group), "webhook", receiver.url, ["waiver_expiring"], cluster_group=group
    )
    receiver.secret, receiver.script = secret, [STALL]
    _scan_a_waiver_expiring_within_the_hour(group, tasks)
    delivery = Delivery.objects.get(subscription=sub)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 2, 200)
    retry = AuditEvent.objects.get(action="notification.retrying")
    assert retry.after["error"] == "no answer within 1s" and retry.after["response_code"] is None
