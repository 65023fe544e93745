"""Credential disclosure through the Django admin.

Attack class: a staff user who may only view clusters and repositories, or anyone reading a superuser's
rendered change page (browser cache, a screenshot, an XSS elsewhere), recovers credentials the product holds:
cluster bearer tokens, client keys, kubeconfigs, repository tokens, SSH keys, webhook secrets. Peer GitOps
tools have shipped this class repeatedly: Argo CD's API and UI returned repository and cluster credentials to
users with read access (several 2022-2024 advisories about secrets leaking through application, project and
cluster endpoints), and Rancher exposed cloud and cluster credentials to read-only users through its API
(2023-2024 advisories on sensitive fields returned to users who could only view). Fleetgate's rule is the
API's: secrets are write-only everywhere, the admin included.

Every page is rendered through the real admin (Django test client, real database, real encryption) as a
superuser and as a view-only staff user, and the HTML is searched for every stored secret.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from clusters.models import Cluster
from fleet.core.fields import secret_field_names
from fleet.sources.models import Repository
from tests.factories import ClusterFactory, RepositoryFactory, UserFactory

pytestmark = pytest.mark.django_db

CLUSTER_SECRETS = {
    "token": "tok-SECRET-cluster-5b1e0c",
    "client_key": "-----BEGIN PRIVATE KEY-----\nKEYSECRET9f3a\n-----END PRIVATE KEY-----",
    "kubeconfig": "apiVersion: v1\nkind: Config\n# KUBECONFIG-SECRET-77aa\n",
}
REPOSITORY_SECRETS = {
    "token": "ghp_REPOSECRET0123456789",
    "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nSSHSECRET42c1\n-----END OPENSSH KEY-----",
    "webhook_secret": "whsec-SECRET-8d7e6f",
}


def _fragments(value: str) -> list[str]:
    """The value and its distinctive lines (a multi-line secret may be rendered line by line)."""
    return [value, *(line for line in value.splitlines() if "SECRET" in line)]


def assert_no_secret(html: str, secrets: dict[str, str]) -> None:
    for name, value in secrets.items():
        for fragment in _fragments(value):
            assert fragment not in html, f"{name} is rendered"
        assert f'name="initial-{name}"' not in html, f"initial-{name} hidden input is rendered"


@pytest.fixture
def cluster() -> Cluster:
    return ClusterFactory(name="prod-eu", api_url="https://10.1.2.3:6443", **CLUSTER_SECRETS)


@pytest.fixture
def repository() -> Repository:
    return RepositoryFactory(name="apps", **REPOSITORY_SECRETS)


@pytest.fixture
def superuser_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    return client


@pytest.fixture
def viewer_client() -> Client:
    user = UserFactory(username="auditor", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_cluster", "view_repository"])
    )
    client = Client()
    client.force_login(user)
    return client


def test_the_secret_fields_are_the_ones_the_admin_protects() -> None:
    """If a model gains a credential field that is not an EncryptedTextField, this list is the reminder."""
    assert secret_field_names(Cluster) == set(CLUSTER_SECRETS)
    assert secret_field_names(Repository) == set(REPOSITORY_SECRETS)


@pytest.mark.parametrize("who", ["superuser", "viewer"])
def test_change_pages_never_render_a_secret(
    who: str, superuser_client: Client, viewer_client: Client, cluster: Cluster, repository: Repository
) -> None:
    client = superuser_client if who == "superuser" else viewer_client
    for obj, secrets in ((cluster, CLUSTER_SECRETS), (repository, REPOSITORY_SECRETS)):
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
        response = client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert obj.name in html  # the page really shows the object
        assert_no_secret(html, secrets)


def test_a_view_only_user_sees_set_or_not_set_instead_of_the_value(
    viewer_client: Client, cluster: Cluster
) -> None:
    Cluster.objects.filter(pk=cluster.pk).update(kubeconfig="")
    response = viewer_client.get(reverse("admin:clusters_cluster_change", args=[cluster.pk]))
    html = response.content.decode()
    assert not re.search(r'<input[^>]*name="(token|client_key|kubeconfig)"', html)

    def shown(field: str) -> str:
        block = re.search(rf'field-{field}.*?<div class="readonly">(.*?)</div>', html, re.S)
        assert block, field
        return block.group(1).strip()

    assert shown("token_state") == "set"
    assert shown("client_key_state") == "set"
    assert shown("kubeconfig_state") == "not set"


def test_an_editor_gets_empty_password_inputs_that_say_whether_a_value_is_stored(
    superuser_client: Client, repository: Repository
) -> None:
    Repository.objects.filter(pk=repository.pk).update(ssh_private_key="")
    html = superuser_client.get(
        reverse("admin:sources_repository_change", args=[repository.pk])
    ).content.decode()
    for name in REPOSITORY_SECRETS:
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
        assert tag, name
        assert 'type="password"' in tag.group(0) and "value=" not in tag.group(0), tag.group(0)
    assert "A value is set" in html and "Not set." in html


def test_list_pages_never_render_a_secret(
    superuser_client: Client, viewer_client: Client, cluster: Cluster, repository: Repository
) -> None:
    for client in (superuser_client, viewer_client):
        for url, secrets in (
            (reverse("admin:clusters_cluster_changelist"), CLUSTER_SECRETS),
            (reverse("admin:sources_repository_changelist"), REPOSITORY_SECRETS),
        ):
            response = client.get(url)
            assert response.status_code == 200
            assert_no_secret(response.content.decode(), secrets)


def test_the_add_page_carries_no_generated_webhook_secret(superuser_client: Client) -> None:
    html = superuser_client.get(reverse("admin:sources_repository_add")).content.decode()
    assert 'name="initial-webhook_secret"' not in html
    tag = re.search(r'<input[^>]*name="webhook_secret"[^>]*>', html)
    assert tag and "value=" not in tag.group(0), tag


def _repository_form(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "apps",
        "url": "https://git.example.com/team/apps.git",
        "branch": "main",
        "auth_method": "token",
        "username": "bot",
        "token": "",
        "ssh_private_key": "",
        "ssh_known_hosts": "",
        "poll_interval": "60",
        "webhook_secret": "",
        "enabled": "on",
        "verification_mode": "off",
    }
    data.update(overrides)
    return data


def test_adding_with_a_blank_webhook_secret_generates_one_that_is_never_shown(
    superuser_client: Client,
) -> None:
    response = superuser_client.post(
        reverse("admin:sources_repository_add"), _repository_form(token="ghp_NEWSECRET1")
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    repo = Repository.objects.get(name="apps")
    assert len(repo.webhook_secret) >= 32 and repo.token == "ghp_NEWSECRET1"
    html = superuser_client.get(reverse("admin:sources_repository_change", args=[repo.pk])).content.decode()
    assert_no_secret(html, {"webhook_secret": repo.webhook_secret, "token": repo.token})


def test_blank_keeps_the_stored_secret_and_a_value_replaces_it(
    superuser_client: Client, repository: Repository
) -> None:
    url = reverse("admin:sources_repository_change", args=[repository.pk])
    response = superuser_client.post(url, _repository_form(branch="release"))
    assert response.status_code == 302, response.content.decode()[:2000]
    repository.refresh_from_db()
    assert repository.branch == "release"
    for name, value in REPOSITORY_SECRETS.items():
        assert getattr(repository, name) == value, name

    rotated = _repository_form(token="ghp_ROTATED42", webhook_secret="whsec-new-1")
    response = superuser_client.post(url, rotated)
    assert response.status_code == 302
    repository.refresh_from_db()
    assert repository.token == "ghp_ROTATED42" and repository.webhook_secret == "whsec-new-1"
    assert repository.ssh_private_key == REPOSITORY_SECRETS["ssh_private_key"]


def test_a_view_only_user_cannot_change_a_secret(viewer_client: Client, repository: Repository) -> None:
    url = reverse("admin:sources_repository_change", args=[repository.pk])
    response = viewer_client.post(url, _repository_form(token="ghp_ATTACKER"))
    assert response.status_code == 403
    repository.refresh_from_db()
    assert repository.token == REPOSITORY_SECRETS["token"]


def test_a_cluster_token_is_replaced_and_never_echoed_on_a_form_error(
    superuser_client: Client, cluster: Cluster
) -> None:
    url = reverse("admin:clusters_cluster_change", args=[cluster.pk])
    data = {
        "name": "Not A DNS Label!",  # invalid: the form comes back with errors
        "description": "",
        "api_url": "https://10.1.2.3:6443",
        "auth_method": "token",
        "token": "tok-TYPED-but-not-saved-99",
        "client_certificate": "",
        "client_key": "",
        "kubeconfig": "",
        "kubeconfig_context": "",
        "ca_data": "",
        "labels": "{}",
        "values": "{}",
    }
    response = superuser_client.post(url, data)
    assert response.status_code == 200  # re-rendered with errors
    html = response.content.decode()
    assert "tok-TYPED-but-not-saved-99" not in html
    assert_no_secret(html, CLUSTER_SECRETS)
    cluster.refresh_from_db()
    assert cluster.token == CLUSTER_SECRETS["token"]
