"""The state gauges of /metrics are read from the database at scrape time, with a fixed number of queries
whatever the size of the fleet, and say what the database holds."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from clusters.models import Cluster
from fleet.audit.services import record, verify
from fleet.rollouts.models import Rollout, SyncedState
from policies.models import Evaluation, Violation
from tests.factories import ClusterFactory, CommitFactory, PathMappingFactory
from tests.observability.scrape import Scrape, scrape

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-state-tests"


@pytest.fixture
def client(settings: Any) -> Client:
    settings.FLEETGATE_METRICS_TOKEN = TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def build_fleet(clusters: int) -> dict[str, Any]:
    """``clusters`` clusters (a third unreachable), one mapping synced to all (a quarter drifted), rollouts in
    several states, and evaluations: the latest of each cluster denies by policy A on every cluster and by B
    on the first, C's deny is waived, D only warns; E denied in an older evaluation only."""
    mapping = PathMappingFactory()
    commits = [CommitFactory(repository=mapping.repository) for _ in range(2)]
    rows = [
        ClusterFactory.build(status="unreachable" if i % 3 == 0 else "reachable") for i in range(clusters)
    ]
    Cluster.objects.bulk_create(rows)
    created = list(Cluster.objects.filter(name__in=[c.name for c in rows]).order_by("name"))
    SyncedState.objects.bulk_create(
        SyncedState(mapping=mapping, cluster=c, drift_status="drifted" if i % 4 == 0 else "in_sync")
        for i, c in enumerate(created)
    )
    states = ["synced", "synced", "failed", "syncing", "blocked"]
    Rollout.objects.bulk_create(Rollout(mapping=mapping, commit=commits[1], state=s) for s in states)
    old = Evaluation.objects.bulk_create(
        Evaluation(commit=commits[0], mapping=mapping, cluster=c, decision="blocked") for c in created
    )
    new = Evaluation.objects.bulk_create(
        Evaluation(commit=commits[1], mapping=mapping, cluster=c, decision="blocked") for c in created
    )
    violations = [Violation(evaluation=e, policy_name="E", enforcement="deny") for e in old]
    for i, e in enumerate(new):
        violations.append(Violation(evaluation=e, policy_name="A", enforcement="deny"))
        violations.append(Violation(evaluation=e, policy_name="D", enforcement="warn"))
        if i == 0:
            violations.append(Violation(evaluation=e, policy_name="B", enforcement="deny"))
    Violation.objects.bulk_create(violations)
    return {"clusters": created, "mapping": mapping}


def test_state_gauges_say_what_the_database_holds(client: Client) -> None:
    build_fleet(12)
    for i in range(3):
        record("system.ping", message=f"event {i}")
    s = scrape(client)
    assert s.value("fleetgate_rollouts", state="synced") == 2
    assert s.value("fleetgate_rollouts", state="syncing") == 1
    assert s.value("fleetgate_rollouts", state="blocked") == 1
    assert s.value("fleetgate_rollouts", state="failed") == 1
    assert s.has("fleetgate_rollouts") and ("fleetgate_rollouts", (("state", "halted"),)) in s.samples
    assert s.value("fleetgate_clusters", reachability="unreachable") == 4
    assert s.value("fleetgate_clusters", reachability="reachable") == 8
    assert s.value("fleetgate_clusters_by_drift", drift="drifted") == 3
    assert s.value("fleetgate_clusters_by_drift", drift="in_sync") == 9
    assert s.value("fleetgate_policies_blocking") == 2  # A and B; not C (waived), D (warn), E (superseded)
    assert s.value("fleetgate_audit_chain_length") == 3
    assert s.value("fleetgate_broker_up") == 1
    assert s.value("fleetgate_celery_queue_length", queue="celery") >= 0
    assert ("fleetgate_celery_queue_length", (("queue", "celery"),)) in s.samples


def test_a_scrape_runs_the_same_queries_for_ten_or_five_hundred_clusters(
    client: Client, django_assert_num_queries: Any
) -> None:
    build_fleet(10)
    with django_assert_num_queries(5):  # rollouts, clusters, drift, blocking policies, audit chain head
        small = scrape(client)
    build_fleet(490)
    with django_assert_num_queries(5):
        large = scrape(client)
    assert small.total("fleetgate_clusters") == 10
    assert large.total("fleetgate_clusters") == 500


def test_audit_verification_sets_its_time_and_result(client: Client) -> None:
    record("system.ping", message="one")
    before = scrape(client)
    assert verify().ok
    after = scrape(client)
    assert after.value("fleetgate_audit_verifications_total", result="ok") == (
        before.value("fleetgate_audit_verifications_total", result="ok") + 1
    )
    assert after.value("fleetgate_audit_last_verification_ok") == 1
    assert after.value("fleetgate_audit_last_verification_timestamp_seconds") > 0


def test_webhook_deliveries_are_counted_by_result(client: Client) -> None:
    mapping = PathMappingFactory()
    url = f"/api/hooks/git/{mapping.repository.pk}/"
    before = scrape(client)
    forged = Client().post(
        url,
        data=b"{}",
        content_type="application/json",
        HTTP_X_GITHUB_EVENT="push",
        HTTP_X_HUB_SIGNATURE_256="sha256=" + "0" * 64,
    )
    unknown = Client().post(
        "/api/hooks/git/999999/", data=b"{}", content_type="application/json", HTTP_X_GITHUB_EVENT="push"
    )
    after = scrape(client)
    forged_code, unknown_code = str(forged.status_code), str(unknown.status_code)
    assert forged_code in ("401", "403")
    assert after.value("fleetgate_webhook_deliveries_total", result="rejected", code=forged_code) == (
        before.value("fleetgate_webhook_deliveries_total", result="rejected", code=forged_code) + 1
    )
    assert unknown_code == "404"
    assert after.value("fleetgate_webhook_deliveries_total", result="not_found", code="404") == (
        before.value("fleetgate_webhook_deliveries_total", result="not_found", code="404") + 1
    )


def test_http_requests_are_counted_by_view(client: Client, admin_client: Any) -> None:
    before = scrape(client)
    assert admin_client.get("/api/clusters/").status_code == 200
    after = scrape(client)
    name = "django_http_requests_latency_seconds_by_view_method_count"
    assert after.total(name, view="clusters-api:cluster-list", method="GET") == (
        before.total(name, view="clusters-api:cluster-list", method="GET") + 1
    )


def test_openmetrics_is_answered_when_asked_for(client: Client) -> None:
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")
    Scrape  # noqa: B018 - the text format parser is for the classic format only


def test_queue_length_counts_the_tasks_waiting_in_the_broker(client: Client) -> None:
    from fleet.celery import app
    from fleet.core.tasks import ping

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge("celery")  # no worker runs here: start from empty
    empty = scrape(client)
    assert empty.value("fleetgate_broker_up") == 1
    assert empty.value("fleetgate_celery_queue_length", queue="celery") == 0
    try:
        for i in range(3):
            ping.delay(f"waiting {i}")
        waiting = scrape(client)
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge("celery")
    assert waiting.value("fleetgate_celery_queue_length", queue="celery") == 3


def test_gate_decisions_are_counted_by_outcome_and_engine(client: Client, settings: Any) -> None:
    from policies.services.evaluation import evaluate

    mapping = PathMappingFactory()
    cluster = ClusterFactory()
    engine = settings.FLEETGATE_REGO_ENGINE
    before = scrape(client)
    evaluation = evaluate(None, mapping, cluster, [])  # no policy bound: the gate passes it
    after = scrape(client)
    name = "fleetgate_gate_decisions_total"
    assert after.value(name, outcome=evaluation.decision, engine=engine) == (
        before.value(name, outcome=evaluation.decision, engine=engine) + 1
    )
    seconds = "fleetgate_gate_evaluation_duration_seconds_count"
    assert after.value(seconds, engine=engine) == before.value(seconds, engine=engine) + 1
