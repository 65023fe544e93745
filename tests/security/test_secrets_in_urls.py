"""Secrets in URLs: a password written into a repository URL (``https://user:secret@host/repo.git``) or a
cluster API URL must be refused wherever a URL comes in, and never shown again by the API, the UI, audit
rows or exports.

Attack class: credential exposure through URLs that are stored and displayed in clear.  Peers had the
same class of bug: Argo CD CVE-2023-25163 (repository credentials leaked in an error message when a
repository URL carried them), Rancher CVE-2023-22649 (credentials captured in clear by Rancher's audit
logs), and Flux and Argo CD guidance that credentials belong in Secrets referenced by the source, never
in its URL.

What is covered: the model validator (and so the REST API, Django admin and every form or command that
validates the model) refuses a password in https, http, ssh and scp-like URLs with a message that says
where credentials go; a user name alone stays allowed; the cluster API URL refuses userinfo; the data
migration scrubs stored URLs (moving an https password into the encrypted token field when there is none);
the audit redaction strips URL passwords from any recorded value, so no new audit row or export carries
one.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from clusters.models import Cluster
from fleet.audit.models import AuditEvent
from fleet.audit.services import record
from fleet.sources.models import Repository

pytestmark = pytest.mark.django_db

PASSWORD = "hunter2-Sup3r-s3cret"
REPO_BODY = {"name": "platform", "branch": "main", "auth_method": "none"}

PASSWORD_URLS = [
    f"https://alice:{PASSWORD}@git.example.com/team/platform.git",
    f"http://alice:{PASSWORD}@git.example.com/team/platform.git",
    f"https://:{PASSWORD}@git.example.com/team/platform.git",
    f"https://alice:{PASSWORD}@git.example.com:8443/team/platform.git",
    f"https://alice:{PASSWORD.replace('-', '%40')}@git.example.com/team/platform.git",
    f"https://alice:p@ss@{PASSWORD}@git.example.com/team/platform.git",
    f"ssh://git:{PASSWORD}@git.example.com/team/platform.git",
    f"ssh://git:{PASSWORD}@git.example.com:2222/team/platform.git",
    f"git:{PASSWORD}@git.example.com:team/platform.git",
    "https://alice:@git.example.com/team/platform.git",  # an empty password is still a password field
]

USERNAME_ONLY_URLS = [
    "https://git@git.example.com/team/platform.git",
    "https://x-access-token@git.example.com/team/platform.git",
    "ssh://git@git.example.com/team/platform.git",
    "git@git.example.com:team/platform.git",
    "https://git.example.com/team/platform.git",
]


def everything_stored() -> str:
    """Every repository row, audit row and response the test can see, as one string."""
    repos = list(Repository.objects.values())
    events = list(AuditEvent.objects.values("action", "before", "after", "message", "target_repr"))
    return json.dumps({"repos": repos, "events": events}, default=str)


@pytest.mark.parametrize("url", PASSWORD_URLS)
def test_api_refuses_a_password_in_the_repository_url_and_says_where_credentials_go(
    admin_client: Any, url: str
) -> None:
    response = admin_client.post("/api/repositories/", {**REPO_BODY, "url": url}, format="json")
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["url"])
    assert "token" in message and "ssh" in message.lower()
    assert PASSWORD not in response.content.decode()
    assert not Repository.objects.exists()
    assert PASSWORD not in everything_stored()


@pytest.mark.parametrize("url", USERNAME_ONLY_URLS)
def test_a_user_name_alone_is_accepted(admin_client: Any, url: str) -> None:
    response = admin_client.post("/api/repositories/", {**REPO_BODY, "url": url}, format="json")
    assert response.status_code == 201, response.content
    assert Repository.objects.get().url == url


def test_updating_an_existing_repository_to_a_password_url_is_refused_and_keeps_the_old_url(
    admin_client: Any,
) -> None:
    created = admin_client.post(
        "/api/repositories/", {**REPO_BODY, "url": USERNAME_ONLY_URLS[0]}, format="json"
    )
    assert created.status_code == 201
    pk = created.json()["id"]
    for method in (admin_client.patch, admin_client.put):
        response = method(
            f"/api/repositories/{pk}/", {**REPO_BODY, "url": PASSWORD_URLS[0]}, format="json"
        )
        assert response.status_code == 400, response.content
        assert "token" in " ".join(response.json()["url"])
    assert Repository.objects.get(pk=pk).url == USERNAME_ONLY_URLS[0]
    assert PASSWORD not in everything_stored()


def test_model_validation_refuses_it_for_admin_forms_and_commands(client: Any, make_user: Any) -> None:
    repo = Repository(name="platform", url=PASSWORD_URLS[0])
    with pytest.raises(ValidationError) as caught:
        repo.full_clean()
    assert "url" in caught.value.message_dict
    assert "token" in caught.value.message_dict["url"][0]

    client.force_login(make_user("superuser", superuser=True))
    page = client.post(
        "/admin/sources/repository/add/",
        {
            "name": "platform",
            "url": PASSWORD_URLS[0],
            "branch": "main",
            "auth_method": "none",
            "poll_interval": "60",
            "webhook_secret": "a-long-enough-webhook-secret",
            "enabled": "on",
        },
    )
    assert page.status_code == 200  # the form again, with the error
    assert "Remove the password from the URL" in page.content.decode()
    assert not Repository.objects.exists()


def test_cluster_api_url_with_credentials_is_refused(admin_client: Any) -> None:
    body = {
        "name": "prod-eu-1",
        "api_url": f"https://admin:{PASSWORD}@prod-eu-1.example.com:6443",
        "auth_method": "token",
        "token": "s3cr3t-cluster-token-value",
    }
    response = admin_client.post("/api/clusters/", body, format="json")
    assert response.status_code == 400, response.content
    assert "credentials" in " ".join(response.json()["api_url"])
    assert PASSWORD not in response.content.decode()
    assert not Cluster.objects.exists()


def test_audit_rows_and_exports_never_carry_a_url_password(admin_client: Any) -> None:
    """A repository stored before the fix (written behind the validators' back): changing it through the
    API records its before-snapshot, and any value recorded later; neither row nor export shows the
    password."""
    created = admin_client.post(
        "/api/repositories/", {**REPO_BODY, "url": USERNAME_ONLY_URLS[-1]}, format="json"
    )
    pk = created.json()["id"]
    Repository.objects.filter(pk=pk).update(url=PASSWORD_URLS[0])  # a legacy row
    changed = admin_client.patch(f"/api/repositories/{pk}/", {"branch": "release"}, format="json")
    assert changed.status_code == 200, changed.content
    record(
        "repository.fetch", Repository.objects.get(pk=pk),
        after={"error": {"message": f"fetch of {PASSWORD_URLS[6]} failed"}, "urls": [PASSWORD_URLS[1]]},
        message="fetch failed",
    )
    update = AuditEvent.objects.filter(action="repository.update").get()
    assert update.before["url"] == "https://alice:<redacted>@git.example.com/team/platform.git"
    assert PASSWORD not in json.dumps(list(AuditEvent.objects.values("before", "after", "message")))
    for fmt in ("csv", "jsonl"):
        export = admin_client.get(f"/api/audit/events/export/?format={fmt}")
        assert export.status_code == 200, export.content[:300]
        body = b"".join(export.streaming_content) if export.streaming else export.content
        assert b"alice:<redacted>@" in body
        assert PASSWORD.encode() not in body


def _migrate(target: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    executor.loader.build_graph()
    return executor.loader.project_state(target).apps


def _migrate_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.fixture
def latest_schema_after() -> Any:
    """The test moves the schema back and forth; every later test needs it at the latest migration again."""
    yield
    _migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_data_migration_scrubs_stored_passwords_and_keeps_fetches_working(latest_schema_after: Any) -> None:
    migration = "0003_scrub_repository_url_passwords"
    old_apps = _migrate([("sources", "0002_render_results")])
    OldRepository = old_apps.get_model("sources", "Repository")
    rows = {
        "moved": OldRepository.objects.create(name="moved", url=PASSWORD_URLS[0]),
        "has-token": OldRepository.objects.create(
            name="has-token", url=PASSWORD_URLS[3], auth_method="token", token="existing-token-value",
            username="bot",
        ),
        "ssh": OldRepository.objects.create(name="ssh", url=PASSWORD_URLS[6]),
        "scp": OldRepository.objects.create(name="scp", url=PASSWORD_URLS[8]),
        "encoded": OldRepository.objects.create(name="encoded", url=PASSWORD_URLS[4]),
        "clean": OldRepository.objects.create(name="clean", url=USERNAME_ONLY_URLS[0]),
    }
    assert OldRepository.objects.count() == len(rows) == 6
    _migrate([("sources", migration)])
    _migrate_to_latest()  # the models below are today's: the scrubbed rows must survive later migrations too

    repos = {r.name: r for r in Repository.objects.all()}
    moved = repos["moved"]
    assert moved.url == "https://alice@git.example.com/team/platform.git"
    assert (moved.auth_method, moved.token, moved.username) == ("token", PASSWORD, "alice")
    with connection.cursor() as cursor:  # the moved password is encrypted at rest, like any token
        cursor.execute("SELECT token FROM sources_repository WHERE name = %s", ["moved"])
        raw_token = cursor.fetchone()[0]
    assert raw_token.startswith("fernet:") and PASSWORD not in raw_token

    kept = repos["has-token"]
    assert kept.url == "https://alice@git.example.com:8443/team/platform.git"
    assert (kept.token, kept.username) == ("existing-token-value", "bot")
    assert repos["ssh"].url == "ssh://git@git.example.com/team/platform.git"
    assert (repos["ssh"].auth_method, repos["ssh"].token) == ("none", "")
    assert repos["scp"].url == "git@git.example.com:team/platform.git"
    assert repos["encoded"].token == PASSWORD.replace("-", "@")  # percent-decoded
    assert repos["clean"].url == USERNAME_ONLY_URLS[0] and repos["clean"].token == ""
    assert PASSWORD not in json.dumps([r.url for r in repos.values()])
    for repo in repos.values():
        repo.full_clean()  # every scrubbed URL passes today's validation
    module = importlib.import_module(f"fleet.sources.migrations.{migration}")
    assert module.split_password(USERNAME_ONLY_URLS[3]) is None
