"""``POST /api/import/gitops/`` and ``manage.py import_gitops``: RBAC (the rights to create each object),
clear 400s for malformed YAML and unknown kinds, dry runs, idempotency, audit, tenant allow-lists."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from clusters.models import AllowList, Cluster, ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.sources.models import PathMapping, Repository
from tests.sources.gitops_layouts import deployment
from tests.sources.origin import Origin

pytestmark = pytest.mark.django_db
URL = "/api/import/gitops/"


@pytest.fixture
def groups(db: Any) -> dict[str, ClusterGroup]:
    for name, env in (("st-1", "staging"), ("pr-1", "prod")):
        Cluster.objects.create(name=name, api_url=f"https://{name}:6443", token=f"t-{name}-secret",
                               labels={"env": env})
    return {
        "staging": ClusterGroup.objects.create(name="staging", selector={"matchLabels": {"env": "staging"}}),
        "prod": ClusterGroup.objects.create(name="prod", selector={"matchLabels": {"env": "prod"}}),
    }


def flux(origin: Origin) -> str:
    return f"""apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: team-a, namespace: flux-system}}
spec: {{url: {origin.url}, ref: {{branch: main}}, secretRef: {{name: team-a-deploy-key}}}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: web, namespace: flux-system}}
spec:
  sourceRef: {{kind: GitRepository, name: team-a}}
  path: ./apps/web
  prune: true
"""


@pytest.fixture
def origin_with_app(origin: Origin) -> Origin:
    origin.commit("app", {"apps/web/deploy.yaml": deployment("web", "web:1")})
    return origin


def test_dry_run_then_import_then_nothing_new(origin_with_app: Origin, groups: dict[str, Any],
                                              admin_client: Any) -> None:
    body = {"documents": flux(origin_with_app), "group": "staging"}
    dry = admin_client.post(URL, {**body, "dry_run": True}, format="json")
    assert dry.status_code == 200, dry.json()
    assert dry.json()["created"] == {"repositories": ["team-a"], "groups": [], "mappings": ["team-a/web"]}
    [secret] = dry.json()["secrets"]
    assert (secret["source"], secret["setting"], secret["name"]) == (
        "GitRepository/team-a (documents)", "spec.secretRef", "team-a-deploy-key")
    assert not Repository.objects.exists()

    done = admin_client.post(URL, body, format="json")
    assert done.status_code == 201, done.json()
    mapping = PathMapping.objects.get()
    assert (mapping.repository.url, mapping.path, mapping.cluster_group.name) == (
        origin_with_app.url, "apps/web", "staging")
    events = AuditEvent.objects.filter(
        action__in=["repository.create", "pathmapping.create", "gitops.import"])
    assert sorted(events.values_list("action", flat=True)) == ["gitops.import", "pathmapping.create",
                                                               "repository.create"]
    assert events.get(action="gitops.import").actor_name == "root"

    again = admin_client.post(URL, body, format="json")
    assert again.status_code == 200
    assert again.json()["nothing_new"] is True
    assert again.json()["existing"]["mappings"] == ["team-a/web"]
    assert PathMapping.objects.count() == 1


def test_rbac(origin_with_app: Origin, groups: dict[str, Any], make_user: Callable[..., Any],
              token_client: Callable[[Any], Any], admin_client: Any) -> None:
    body = {"documents": flux(origin_with_app), "group": "staging"}
    viewer = token_client(make_user("viewer", "viewer"))
    refused = viewer.post(URL, body, format="json")
    assert refused.status_code == 403
    assert "may not create path mappings" in refused.json()["detail"]

    # A cluster admin of staging may add mappings there, but not a repository (a write on all clusters).
    staging_admin = token_client(make_user("st-admin", "cluster-admin", groups["staging"]))
    new_repo = staging_admin.post(URL, body, format="json")
    assert new_repo.status_code == 403
    assert not Repository.objects.exists() and not PathMapping.objects.exists()
    assert not AuditEvent.objects.filter(action="gitops.import").exists()

    Repository.objects.create(name="team-a", url=origin_with_app.url, branch="main")
    ok = staging_admin.post(URL, body, format="json")
    assert ok.status_code == 201, ok.json()
    assert ok.json()["existing"]["repositories"] == ["team-a"]
    # ... and not into prod, a group outside their scope
    other = staging_admin.post(URL, {**body, "group": "prod"}, format="json")
    assert other.status_code == 400  # prod is not a group they can see: named as unknown
    assert "no cluster group named 'prod'" in str(other.json())
    assert PathMapping.objects.count() == 1


@pytest.mark.parametrize(("documents", "message"), [
    ("kind: GitRepo\napiVersion: fleet.cattle.io/v1alpha1\nmetadata: {name: x\n", "documents:"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
     "documents:1: unknown kind ConfigMap (v1): the import reads Fleet GitRepo"),
    ("apiVersion: argoproj.io/v1alpha1\nkind: AppProject\nmetadata: {name: x}\n", "unknown kind AppProject"),
    ("- just\n- a list\n", "documents:1: not a Kubernetes object"),
    ("", "Give the YAML documents"),
])
def test_malformed_yaml_and_unknown_kinds_are_400(groups: dict[str, Any], admin_client: Any, documents: str,
                                                  message: str) -> None:
    answer = admin_client.post(URL, {"documents": documents}, format="json")
    assert answer.status_code == 400
    assert message in str(answer.json()["documents"])


def test_malformed_yaml_names_the_file_and_line(groups: dict[str, Any], admin_client: Any) -> None:
    answer = admin_client.post(URL, {"files": [
        {"name": "clusters/prod/apps.yaml", "content": "apiVersion: v1\nkind: [unclosed\n"}]}, format="json")
    assert answer.status_code == 400
    assert "clusters/prod/apps.yaml:3: invalid YAML" in answer.json()["documents"][0]


def test_tenant_allow_list_refuses_the_mapping(origin_with_app: Origin, groups: dict[str, Any],
                                               admin_client: Any) -> None:
    AllowList.objects.create(cluster_group=groups["staging"], sources=[{"repository": "team-b", "path": "*"}])
    answer = admin_client.post(URL, {"documents": flux(origin_with_app), "group": "staging"}, format="json")
    assert answer.status_code == 400
    assert "mapping team-a/web: path: repository 'team-a' path 'apps/web' is not allowed for cluster group " \
           "'staging'" in answer.json()["documents"][0]
    assert not Repository.objects.exists()  # all or nothing


def test_command(origin_with_app: Origin, groups: dict[str, Any], tmp_path: Path, make_user: Any) -> None:
    path = tmp_path / "flux.yaml"
    path.write_text(flux(origin_with_app))
    out = io.StringIO()
    call_command("import_gitops", str(path), "--group", "staging", "--dry-run", stdout=out)
    assert "DRY RUN: would create 1 repositories, 0 groups, 1 mappings" in out.getvalue()
    assert "team-a-deploy-key" in out.getvalue() and not PathMapping.objects.exists()
    call_command("import_gitops", str(path), "--group", "staging", stdout=io.StringIO())
    out = io.StringIO()
    call_command("import_gitops", str(path), "--group", "staging", stdout=out)
    assert out.getvalue().startswith("nothing new")
    make_user("viewer", "viewer")
    with pytest.raises(CommandError, match="may not create path mappings"):
        call_command("import_gitops", str(path), "--group", "staging", "--user", "viewer")


def test_a_password_in_a_source_url_is_refused_and_never_echoed(groups: dict[str, Any],
                                                                admin_client: Any) -> None:
    doc = """apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: leaky}
spec:
  source: {repoURL: "https://bot:hunter2-secret@git.example.com/org/apps.git", path: apps}
  destination: {name: st-1}
"""
    answer = admin_client.post(URL, {"documents": doc, "dry_run": True}, format="json")
    assert answer.status_code == 400
    assert "holds a password" in answer.json()["documents"][0]
    assert "hunter2" not in answer.content.decode()
    assert not AuditEvent.objects.filter(message__contains="hunter2").exists()
