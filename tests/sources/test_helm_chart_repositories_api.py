"""Chart repository credentials through the API (encrypted at rest, never in answers or audit rows), their
look-up by URL prefix, and the mapping's Helm release name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection

from fleet.access.models import RoleBinding
from fleet.audit.models import AuditEvent
from fleet.sources.charts import RepoCredentials
from fleet.sources.models import ChartRepository
from fleet.sources.services.charts import CredentialTable, matches
from tests.factories import UserFactory

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


# Who may change or delete a repository serving several groups, and a URL change needs the credentials again

def client_for(token_client: Any, group: Any, role: str = "cluster-admin") -> Any:
    user = UserFactory(username=f"{role}-{group.name}")
    RoleBinding.objects.create(user=user, role=role, scope=group)
    return token_client(user)


def shared_repository(admin_client: Any, fleet: dict[str, Any]) -> str:
    answer = admin_client.post("/api/chart-repositories/", {
        "name": "shared", "url": "https://charts.example.com/shared", "username": "robot", "password": SECRET,
        "cluster_groups": [fleet["staging"].pk, fleet["prod"].pk],
    }, format="json")
    assert answer.status_code == 201, answer.json()
    return f"/api/chart-repositories/{answer.json()['id']}/"


def test_a_group_admin_cannot_take_over_or_delete_a_shared_repository(
    fleet: dict[str, Any], token_client: Any, admin_client: Any,
) -> None:
    """The reported takeover: staging's admin narrows a staging+prod repository to staging and points it at
    their own host, keeping the stored password; every staging render would then send it there."""
    staging, prod = fleet["staging"], fleet["prod"]
    url = shared_repository(admin_client, fleet)
    client = client_for(token_client, staging)
    events = AuditEvent.objects.count()
    answer = client.patch(url, {"cluster_groups": [staging.pk], "url": "https://attacker.example.net/x"},
                          format="json")
    assert answer.status_code == 403, answer.json()
    assert "prod" in answer.json()["detail"]
    # narrowing alone (then changing the URL as the repository's only group admin) is refused as well
    answer = client.patch(url, {"cluster_groups": [staging.pk]}, format="json")
    assert answer.status_code == 403, answer.json()
    answer = client.put(url, {"name": "shared", "url": "https://attacker.example.net/x", "username": "robot",
                              "password": "", "cluster_groups": [staging.pk]}, format="json")
    assert answer.status_code == 403, answer.json()
    assert client.delete(url).status_code == 403
    repo = ChartRepository.objects.get(name="shared")
    assert repo.url == "https://charts.example.com/shared" and repo.password == SECRET
    assert set(repo.cluster_groups.all()) == {staging, prod}
    assert AuditEvent.objects.count() == events

    # an admin on all clusters still does everything (with the password again for the new URL)
    answer = admin_client.patch(url, {"cluster_groups": [staging.pk]}, format="json")
    assert answer.status_code == 200, answer.json()
    answer = admin_client.patch(url, {"url": "https://charts.example.org/moved", "password": SECRET + "2"},
                                format="json")
    assert answer.status_code == 200, answer.json()
    answer = admin_client.patch(url, {"cluster_groups": []}, format="json")
    assert answer.status_code == 200, answer.json()
    assert admin_client.delete(url).status_code == 204
    for event in AuditEvent.objects.filter(action__startswith="chartrepository."):
        dumped = json.dumps([event.before, event.after, event.message])
        assert SECRET not in dumped, event.action


@pytest.mark.parametrize("new_url", [
    "https://attacker.example.net/shared",  # host
    "http://charts.example.com/shared",  # scheme
    "https://charts.example.com:8443/shared",  # port
    "https://charts.example.com/other",  # path
])
def test_changing_the_url_needs_the_credentials_again(
    new_url: str, fleet: dict[str, Any], token_client: Any, admin_client: Any,
) -> None:
    url = shared_repository(admin_client, fleet)
    for password in (None, ""):
        body = {"url": new_url} if password is None else {"url": new_url, "password": password}
        answer = admin_client.patch(url, body, format="json")
        assert answer.status_code == 400, answer.json()
        assert "credentials again when changing the URL" in answer.json()["password"][0]
    repo = ChartRepository.objects.get(name="shared")
    assert repo.url == "https://charts.example.com/shared" and repo.password == SECRET
    # the same URL (a trailing slash, the host's case) is no change
    answer = admin_client.patch(url, {"url": "https://Charts.example.com/shared/", "description": "d"},
                                format="json")
    assert answer.status_code == 200, answer.json()
    answer = admin_client.patch(url, {"url": new_url, "password": "new-" + SECRET}, format="json")
    assert answer.status_code == 200, answer.json()
    repo.refresh_from_db()
    assert repo.url == new_url and repo.password == "new-" + SECRET and repo.username == "robot"
    # a group's admin managing every group of its own repository moves it the same way
    own = client_for(token_client, fleet["staging"])
    mine = own.post("/api/chart-repositories/", {
        "name": "mine", "url": "https://charts.example.com/mine", "username": "u", "password": "pw",
        "cluster_groups": [fleet["staging"].pk]}, format="json").json()["id"]
    answer = own.patch(f"/api/chart-repositories/{mine}/", {"url": "https://charts.example.com/m2"},
                       format="json")
    assert answer.status_code == 400 and "password" in answer.json()
    answer = own.patch(f"/api/chart-repositories/{mine}/", {"url": "https://charts.example.com/m2",
                                                             "password": "pw2"}, format="json")
    assert answer.status_code == 200, answer.json()


def test_the_admin_site_checks_the_stored_groups_and_the_url_rule(fleet: dict[str, Any]) -> None:
    from django.contrib.auth.models import Permission
    from django.test import Client
    from django.urls import reverse

    staging, prod = fleet["staging"], fleet["prod"]
    repo = ChartRepository.objects.create(name="shared", url="https://charts.example.com/shared",
                                          username="robot", password=SECRET)
    repo.cluster_groups.set([staging, prod])
    staff = UserFactory(username="staff-staging", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__endswith="_chartrepository"))
    RoleBinding.objects.create(user=staff, role="cluster-admin", scope=staging)
    client = Client()
    client.force_login(staff)
    change = reverse("admin:sources_chartrepository_change", args=[repo.pk])
    form = {"name": "shared", "url": "https://attacker.example.net/x", "username": "robot", "password": "",
            "ca_bundle": "", "description": "", "cluster_groups": [staging.pk]}
    assert client.post(change, form).status_code == 403
    delete = reverse("admin:sources_chartrepository_delete", args=[repo.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    repo.refresh_from_db()
    assert repo.url == "https://charts.example.com/shared"
    assert set(repo.cluster_groups.all()) == {staging, prod}

    root = Client()
    root.force_login(UserFactory(username="root-admin", is_superuser=True, is_staff=True))
    answer = root.post(change, {**form, "cluster_groups": [staging.pk, prod.pk]})
    assert answer.status_code == 200 and "credentials again when changing the URL" in answer.content.decode()
    answer = root.post(change, {**form, "password": "new-" + SECRET})
    assert answer.status_code == 302, answer.content.decode()[:1000]
    repo.refresh_from_db()
    assert repo.url == "https://attacker.example.net/x" and repo.password == "new-" + SECRET
    # the staff user, now managing every group the repository serves, may change it, but not widen it
    form = {**form, "description": "staging's"}
    assert client.post(change, form).status_code == 302
    assert client.post(change, {**form, "cluster_groups": [staging.pk, prod.pk]}).status_code == 403
    repo.refresh_from_db()
    assert repo.description == "staging's" and list(repo.cluster_groups.all()) == [staging]

