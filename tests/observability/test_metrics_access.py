"""Who may read /metrics: a bearer token set by the operator, or a staff session; nobody else, and nothing
when it is switched off on the web port. The probes answer anyone."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.observability.scrape import Scrape

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def metrics_token(settings: Any) -> str:
    settings.FLEETGATE_METRICS_TOKEN = TOKEN
    return TOKEN


def test_anonymous_scrape_is_refused_with_a_bearer_challenge(metrics_token: str) -> None:
    response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"fleetgate_" not in response.content


def test_the_configured_bearer_token_reads_the_metrics(metrics_token: str) -> None:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert Scrape(response.content.decode()).has("fleetgate_rollouts")


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN])
def test_a_wrong_token_or_scheme_is_refused(metrics_token: str, header: str) -> None:
    assert Client().get("/metrics", HTTP_AUTHORIZATION=header).status_code == 401


def test_without_a_configured_token_no_bearer_token_is_accepted(settings: Any) -> None:
    settings.FLEETGATE_METRICS_TOKEN = ""
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer x").status_code == 401


def test_an_api_token_of_an_admin_is_not_a_metrics_token(admin_user: Any, token_client: Any) -> None:
    assert token_client(admin_user).get("/metrics").status_code == 401


def test_staff_sessions_may_scrape_other_users_may_not(make_user: Any) -> None:
    admin = make_user("boss", role="admin")  # an admin role binding without staff status
    staff = make_user("ops", superuser=True)
    client = Client()
    client.force_login(admin)
    assert client.get("/metrics").status_code == 403
    client.force_login(staff)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert Scrape(response.content.decode()).has("fleetgate_clusters")


def test_metrics_can_be_switched_off_on_the_web_port(settings: Any, metrics_token: str) -> None:
    settings.FLEETGATE_METRICS_ON_WEB = False
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 404


def test_metrics_answer_get_only(metrics_token: str) -> None:
    assert Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 405


def test_probes_answer_without_authentication() -> None:
    client = Client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json() == {
        "status": "ok",
        "checks": {
            "database": {"status": "ok"},
            "broker": {"status": "ok"},
            "policy_engine": {"status": "ok"},
        },
    }


def test_probes_answer_head_requests_too() -> None:
    assert Client().head("/healthz").status_code == 200
    assert Client().post("/healthz").status_code == 405
