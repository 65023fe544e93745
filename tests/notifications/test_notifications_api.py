"""The subscription and delivery-log API and pages: personal resources, subjects limited to what the user
may see, destinations checked by the SSRF guard, secrets written once and never shown again nor audited."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from fleet.audit.models import AuditEvent
from fleet.notifications.models import Delivery, Subscription
from tests.factories import ClusterGroupFactory, PathMappingFactory, RepositoryFactory

pytestmark = pytest.mark.django_db

URL = "/api/notifications/subscriptions/"
HOOK = "http://127.0.0.1:9/hooks/fleetgate?token=sekret-in-the-url"


@pytest.fixture
def world(make_user: Any) -> dict[str, Any]:
    staging = ClusterGroupFactory(name="staging")
    prod = ClusterGroupFactory(name="prod")
    return {
        "staging": staging,
        "prod": prod,
        "mapping": PathMappingFactory(name="web", cluster_group=staging),
        "prod_mapping": PathMappingFactory(name="web-prod", cluster_group=prod),
        "alice": make_user("alice", role="viewer", scope=staging),
        "bob": make_user("bob", role="viewer", scope=prod),
    }


def create(client: Any, **body: Any) -> Any:
    data = {"name": "team", "events": ["commit_blocked"], "channel": "webhook", "target": HOOK, **body}
    return client.post(URL, data, format="json")


def test_the_signing_secret_is_shown_once_and_the_url_never(world: dict[str, Any], token_client: Any) -> None:
    client = token_client(world["alice"])
    made = create(client, cluster_group=world["staging"].pk)
    assert made.status_code == 201, made.content
    body = made.json()
    secret = body["secret"]
    assert len(secret) >= 40 and "target" not in body
    assert body["target_hint"] == "http://127.0.0.1:9/…" and body["owner"] == "alice"
    shown = client.get(f"{URL}{body['id']}/").json()
    assert "secret" not in shown and "target" not in shown
    listed = json.dumps(client.get(URL).json())
    assert secret not in listed and "sekret-in-the-url" not in listed
    audit = AuditEvent.objects.get(action="subscription.create")
    row = json.dumps([audit.before, audit.after, audit.message])
    assert secret not in row and "sekret-in-the-url" not in row
    assert audit.scope_group_id == world["staging"].pk

    rotated = client.post(f"{URL}{body['id']}/rotate-secret/")
    assert rotated.status_code == 200 and rotated.json()["secret"] not in (secret, "")
    assert Subscription.objects.get(pk=body["id"]).secret == rotated.json()["secret"]
    assert rotated.json()["secret"] not in json.dumps(
        list(AuditEvent.objects.values_list("after", "message"))
    )

    slack = create(client, channel="slack", mapping=world["mapping"].pk)
    assert slack.status_code == 201 and slack.json()["secret"] is None
    assert client.post(f"{URL}{slack.json()['id']}/rotate-secret/").status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": "http://169.254.169.254/latest/meta-data/"}, "target"),
        ({"target": "http://metadata.google.internal/x"}, "target"),
        ({"target": "ftp://example.com/x"}, "target"),
        ({"channel": "email", "target": "not-an-address"}, "target"),
        ({"events": ["nope"]}, "events"),
        ({"events": []}, "events"),
        ({"target": 12}, "target"),
    ],
)
def test_bad_input_is_a_400_on_its_field(
    world: dict[str, Any], token_client: Any, body: Any, field: str
) -> None:
    answer = create(token_client(world["alice"]), cluster_group=world["staging"].pk, **body)
    assert answer.status_code == 400, answer.content
    assert field in answer.json(), answer.json()
    assert not Subscription.objects.exists()


def test_only_what_the_user_may_see_can_be_subscribed_to(world: dict[str, Any], token_client: Any) -> None:
    client = token_client(world["alice"])
    for subject in ({"cluster_group": world["prod"].pk}, {"mapping": world["prod_mapping"].pk}):
        answer = create(client, **subject)
        assert answer.status_code == 400 and next(iter(subject)) in answer.json(), answer.content
    both = create(client, cluster_group=world["staging"].pk, mapping=world["mapping"].pk)
    assert both.status_code == 400
    none = create(client)
    assert none.status_code == 400
    # A repository is seen through the groups it maps to.
    repo = RepositoryFactory(name="only-prod")
    PathMappingFactory(repository=repo, cluster_group=world["prod"])
    assert create(client, repository=repo.pk).status_code == 400
    assert create(token_client(world["bob"]), repository=repo.pk).status_code == 201
    assert not Subscription.objects.filter(owner=world["alice"]).exists()


def test_subscriptions_and_deliveries_are_personal(
    world: dict[str, Any], token_client: Any, make_user: Any, django_assert_max_num_queries: Any
) -> None:
    alice, bob = token_client(world["alice"]), token_client(world["bob"])
    mine = create(alice, cluster_group=world["staging"].pk).json()["id"]
    theirs = create(bob, cluster_group=world["prod"].pk).json()["id"]
    assert [r["id"] for r in alice.get(URL).json()["results"]] == [mine]
    for method in ("get", "patch", "delete"):
        assert getattr(alice, method)(f"{URL}{theirs}/", {}, format="json").status_code == 404
    # An admin role binding does not open other people's subscriptions; a superuser sees every one.
    assert token_client(make_user("adm", role="admin")).get(URL).json()["results"] == []
    superuser = token_client(make_user("su", superuser=True))
    assert {r["id"] for r in superuser.get(URL).json()["results"]} == {mine, theirs}
    # A change keeps the rules: the subject must stay visible; a renamed subscription is audited.
    assert alice.patch(f"{URL}{mine}/", {"cluster_group": world["prod"].pk}, format="json").status_code == 400
    assert alice.patch(f"{URL}{mine}/", {"name": "renamed"}, format="json").status_code == 200
    assert alice.patch(f"{URL}{mine}/", {"channel": "slack"}, format="json").status_code == 400
    moved = alice.patch(f"{URL}{mine}/", {"target": "https://hooks.example.test/new"}, format="json")
    assert moved.status_code == 200 and moved.json()["target_hint"] == "https://hooks.example.test/…"
    assert AuditEvent.objects.filter(action="subscription.update", target_id=str(mine)).count() == 2
    assert "hooks.example.test/new" not in json.dumps(list(AuditEvent.objects.values_list("before", "after")))

    sub = Subscription.objects.get(pk=mine)
    for n in range(3):
        Delivery.objects.create(
            subscription=sub,
            audit_event_id=1000 + n,
            audit_sequence=n,
            event_type="commit_blocked",
            channel="webhook",
            title=f"t{n}",
            payload={},
            status="failed" if n == 0 else "delivered",
        )
    with django_assert_max_num_queries(6):
        rows = alice.get("/api/notifications/deliveries/").json()["results"]
    assert len(rows) == 3
    assert bob.get("/api/notifications/deliveries/").json()["results"] == []
    failed = Delivery.objects.get(subscription=sub, status="failed")
    assert bob.post(f"/api/notifications/deliveries/{failed.pk}/redeliver/").status_code == 404
    again = alice.post(f"/api/notifications/deliveries/{failed.pk}/redeliver/")
    assert again.status_code == 202 and again.json()["status"] == "pending"
    done = Delivery.objects.filter(subscription=sub, status="delivered").first()
    assert done is not None
    assert alice.post(f"/api/notifications/deliveries/{done.pk}/redeliver/").status_code == 409
    assert alice.delete(f"{URL}{mine}/").status_code == 204
    assert AuditEvent.objects.filter(action="subscription.delete", target_id=str(mine)).exists()
    assert Client().get(URL).status_code in (401, 403)


def test_the_pages_create_show_and_delete_a_subscription(world: dict[str, Any], make_user: Any) -> None:
    page = Client()
    page.force_login(world["alice"])
    listed = page.get("/notifications/")
    assert listed.status_code == 200
    html = listed.content.decode()
    assert "staging" in html and ">prod<" not in html  # only the groups alice may see are offered
    form = {
        "name": "ops",
        "events": ["commit_blocked", "drift_detected"],
        "cluster_group": world["staging"].pk,
        "channel": "webhook",
        "target": HOOK,
    }
    made = page.post("/notifications/", form)
    assert made.status_code == 200
    sub = Subscription.objects.get(name="ops")
    assert sub.secret and sub.secret in made.content.decode()  # shown once, on creation
    detail = page.get(f"/notifications/{sub.pk}/").content.decode()
    assert sub.secret not in detail and "sekret-in-the-url" not in detail and "Delivery log" in detail
    refused = page.post("/notifications/", {**form, "name": "x", "cluster_group": world["prod"].pk})
    assert refused.status_code == 200 and not Subscription.objects.filter(name="x").exists()
    ssrf = page.post("/notifications/", {**form, "name": "y", "target": "http://169.254.169.254/"})
    assert "denied network" in ssrf.content.decode() and not Subscription.objects.filter(name="y").exists()

    other = Client()
    other.force_login(world["bob"])
    assert other.get(f"/notifications/{sub.pk}/").status_code == 404
    assert other.post(f"/notifications/{sub.pk}/delete/").status_code == 404
    assert page.post(f"/notifications/{sub.pk}/disable/").status_code == 302
    assert Subscription.objects.get(pk=sub.pk).enabled is False
    assert page.post(f"/notifications/{sub.pk}/delete/").status_code == 302
    assert not Subscription.objects.filter(pk=sub.pk).exists()
