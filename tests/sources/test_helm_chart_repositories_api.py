"""Chart repository credentials through the API (encrypted at rest, never in answers or audit rows), their
look-up by URL prefix, and the mapping's Helm release name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection

from fleet.audit.models import AuditEvent
from fleet.sources.charts import RepoCredentials
from fleet.sources.models import ChartRepository
from fleet.sources.services.charts import CredentialTable, matches

pytestmark = pytest.mark.django_db
SECRET = "chart-repo-p4ssword-value"


def test_credentials_are_write_only_encrypted_and_audited_without_them(admin_client: Any) -> None:
    response = admin_client.post(
        "/api/chart-repositories/",
        {
            "name": "internal",
            "url": "https://charts.example.com/stable/",
            "username": "robot",
            "password": SECRET,
            "description": "team charts",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert "password" not in body and body["password_set"] is True
    assert body["url"] == "https://charts.example.com/stable"  # normalized without the trailing slash
    repo = ChartRepository.objects.get(name="internal")
    assert repo.password == SECRET
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM sources_chartrepository WHERE id = %s", [repo.pk])
        raw = cursor.fetchone()[0]
    assert raw.startswith("fernet:") and SECRET not in raw

    # an update without the password keeps it
    assert (
        admin_client.patch(
            f"/api/chart-repositories/{repo.pk}/", {"password": "", "description": "x"}, format="json"
        ).status_code
        == 200
    )
    repo.refresh_from_db()
    assert repo.password == SECRET
    listed = admin_client.get("/api/chart-repositories/")
    assert SECRET not in listed.content.decode()
    events = AuditEvent.objects.filter(action__startswith="chartrepository.")
    assert {e.action for e in events} == {"chartrepository.create", "chartrepository.update"}
    for event in events:
        assert SECRET not in json.dumps([event.before, event.after, event.message])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///srv/charts", "https://"),
        ("https://robot:pw@charts.example.com", "not in the URL"),
        ("https://169.254.169.254/charts", "denied network"),
        ("oci://", "https://"),
    ],
)
def test_bad_repository_urls_are_refused(admin_client: Any, url: str, message: str) -> None:
    response = admin_client.post("/api/chart-repositories/", {"name": "bad", "url": url}, format="json")
    assert response.status_code == 400
    assert message in json.dumps(response.json())


def test_a_password_needs_a_user_name_and_the_ca_must_be_pem(admin_client: Any) -> None:
    response = admin_client.post(
        "/api/chart-repositories/",
        {"name": "x", "url": "oci://registry.example.com", "password": SECRET},
        format="json",
    )
    assert response.status_code == 400 and "username" in response.json()
    assert SECRET not in response.content.decode()
    response = admin_client.post(
        "/api/chart-repositories/",
        {"name": "x", "url": "oci://registry.example.com", "ca_bundle": "not a certificate"},
        format="json",
    )
    assert response.status_code == 400 and "ca_bundle" in response.json()
    response = admin_client.post(  # text that is not ASCII is not PEM either (it used to be a 500)
        "/api/chart-repositories/",
        {"name": "x", "url": "oci://registry.example.com", "ca_bundle": "\u00a5 not ascii"},
        format="json",
    )
    assert response.status_code == 400 and response.json()["ca_bundle"] == ["Not PEM certificates."]


def test_credentials_are_found_by_the_longest_url_prefix() -> None:
    ChartRepository.objects.create(name="host", url="oci://registry.example.com", username="all")
    ChartRepository.objects.create(name="team", url="oci://registry.example.com/team", username="team")
    ChartRepository.objects.create(name="index", url="https://charts.example.com/stable", username="idx")
    table = CredentialTable()
    found = {
        url: (table(url) or RepoCredentials()).username
        for url in (
            "oci://registry.example.com/team/web",
            "oci://registry.example.com/teams/web",
            "oci://registry.example.com/other/web",
            "https://charts.example.com/stable",
            "https://charts.example.com/stable/web-1.0.0.tgz",
            "https://charts.example.com/stablex",
            "https://charts.example.com:8443/stable",
            "http://charts.example.com/stable",
        )
    }
    assert found == {
        "oci://registry.example.com/team/web": "team",
        "oci://registry.example.com/teams/web": "all",
        "oci://registry.example.com/other/web": "all",
        "https://charts.example.com/stable": "idx",
        "https://charts.example.com/stable/web-1.0.0.tgz": "idx",
        "https://charts.example.com/stablex": "",
        "https://charts.example.com:8443/stable": "",
        "http://charts.example.com/stable": "",
    }
    assert matches("oci://Registry.Example.com/", "oci://registry.example.com/x")


def test_the_mapping_helm_release_name_is_validated(
    admin_client: Any, make_mapping: Any, make_repository: Any, origin: Any, fleet: dict[str, Any]
) -> None:
    origin.commit("initial", {"apps/web/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"})
    mapping = make_mapping(make_repository(origin), "web", "apps/web", fleet["prod"])
    url = f"/api/mappings/{mapping.pk}/"
    response = admin_client.patch(url, {"helm_release_name": "Not_Valid"}, format="json")
    assert response.status_code == 400 and "helm_release_name" in response.json()
    response = admin_client.patch(url, {"helm_release_name": "x" * 54}, format="json")
    assert response.status_code == 400
    response = admin_client.patch(url, {"helm_release_name": "shop.v2"}, format="json")
    assert response.status_code == 200 and response.json()["helm_release_name"] == "shop.v2"


CHART = "apiVersion: v2\nname: {name}\nversion: 0.1.0\n"
LIB_CM = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-lib\n"
    "data:\n  value: {{ .Values.value | quote }}\n"
)


def test_a_file_dependency_outside_the_path_is_watched_and_the_release_name_is_the_mappings(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    from fleet.sources.models import RenderedManifest
    from fleet.sources.services import fetch_repository

    app_chart = CHART.format(name="app") + (
        "dependencies:\n  - name: lib\n    version: 0.1.0\n    repository: file://../../libs/lib\n"
    )
    origin.commit(
        "initial",
        {
            "charts/app/Chart.yaml": app_chart,
            "charts/app/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            "  name: {{ .Release.Name }}-app\n"
            "  namespace: {{ .Release.Namespace }}\n",
            "libs/lib/Chart.yaml": CHART.format(name="lib"),
            "libs/lib/values.yaml": "value: one\n",
            "libs/lib/templates/cm.yaml": LIB_CM,
            "other/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
        },
    )
    repo = make_repository(origin)
    app = make_mapping(repo, "app", "charts/app", fleet["prod"])
    app.helm_release_name = "shop"
    app.target_namespace = "store"
    app.save()
    make_mapping(repo, "other", "other", fleet["prod"])
    fetch_repository(repo)
    app.refresh_from_db()
    assert app.watched_paths == ["libs/lib"]
    row = RenderedManifest.objects.filter(mapping=app).first()
    objects = {o["name"]: o for o in row.resources}
    assert set(objects) == {"shop-app", "shop-lib"}
    assert objects["shop-app"]["namespace"] == "store" and row.namespace == "store"

    changed = origin.commit("lib change", {"libs/lib/values.yaml": "value: two\n"})
    outcome = fetch_repository(repo)
    assert [(r.mapping, r.commit, r.reason) for r in outcome.renders] == [("app", changed, "paths")]
    row = RenderedManifest.objects.filter(mapping=app, commit__sha=changed).first()
    assert next(o for o in row.resources if o["name"] == "shop-lib")["object"]["data"] == {"value": "two"}


def test_the_admin_never_renders_the_password_and_blank_keeps_it() -> None:
    import re

    from django.test import Client
    from django.urls import reverse

    from fleet.core.fields import secret_field_names
    from tests.factories import UserFactory

    assert secret_field_names(ChartRepository) == {"password"}
    repo = ChartRepository.objects.create(
        name="internal", url="oci://registry.example.com", username="robot", password=SECRET
    )
    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    change = reverse("admin:sources_chartrepository_change", args=[repo.pk])
    for url in (change, reverse("admin:sources_chartrepository_changelist")):
        html = client.get(url).content.decode()
        assert "internal" in html and SECRET not in html
    tag = re.search(r'<input[^>]*name="password"[^>]*>', client.get(change).content.decode())
    assert tag and 'type="password"' in tag.group(0) and "value=" not in tag.group(0)
    response = client.post(
        change,
        {
            "name": "internal",
            "url": "oci://registry.example.com",
            "username": "robot",
            "password": "",
            "ca_bundle": "",
            "description": "x",
        },
    )
    assert response.status_code == 302, response.content.decode()[:1000]
    repo.refresh_from_db()
    assert repo.password == SECRET and repo.description == "x"
    event = AuditEvent.objects.filter(action__startswith="chartrepository.").latest("sequence")
    assert SECRET not in json.dumps([event.before, event.after, event.message])


def test_offline_the_mapping_fails_with_network_required_naming_chart_and_repository(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any], admin_client: Any
) -> None:
    from fleet.sources.models import MappingRender
    from fleet.sources.services import fetch_repository
    from tests.chart_servers import free_port

    url = f"https://127.0.0.1:{free_port()}/charts"  # nothing listens there: the repository is unreachable
    origin.commit(
        "initial", {"apps/web/fleetgate.yaml": f"helm: {{chart: web, repo: '{url}', version: 1.0.0}}\n"}
    )
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    fetch_repository(repo)
    render = MappingRender.objects.get(mapping=web)
    assert render.status == "failed"
    assert render.error_message.startswith(f"network_required: chart 'web' version 1.0.0 from {url}: ")
    assert "cannot be reached" in render.error_message
    assert render.error_file == "apps/web/fleetgate.yaml"
    shown = admin_client.get(f"/api/commits/{render.commit_id}/rendered/?mapping={web.pk}&cluster=eu-1")
    assert shown.status_code == 200
    assert shown.json()["status"] == "failed"
    assert shown.json()["error"]["message"].startswith(
        f"network_required: chart 'web' version 1.0.0 from {url}"
    )
