"""Repository and commit pages: commits with their per-mapping status, restricted like the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from fleet.rollouts.models import Rollout
from fleet.sources.models import MappingRender
from tests.factories import ClusterGroupFactory, CommitFactory, PathMappingFactory, RepositoryFactory

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def repo_world() -> dict[str, Any]:
    staging = ClusterGroupFactory(name="staging")
    prod = ClusterGroupFactory(name="prod")
    repo = RepositoryFactory(name="platform")
    web = PathMappingFactory(repository=repo, name="web-staging", cluster_group=staging)
    prod_map = PathMappingFactory(repository=repo, name="web-prod", cluster_group=prod)
    commit = CommitFactory(repository=repo, message="bump web")
    MappingRender.objects.create(commit=commit, mapping=web, status="rendered", cluster_count=2)
    MappingRender.objects.create(
        commit=commit,
        mapping=prod_map,
        status="failed",
        error_message="bad indent",
        error_file="a.yaml",
        error_line=3,
    )
    Rollout.objects.create(mapping=web, commit=commit, state="synced")
    return {"staging": staging, "repo": repo, "commit": commit}


def test_repository_page_shows_per_mapping_status(admin_user: Any, repo_world: dict[str, Any]) -> None:
    html = client_for(admin_user).get(f"/repositories/{repo_world['repo'].pk}/").content.decode()
    assert "bump web" in html and "web-staging" in html and "web-prod" in html
    assert 'class="badge synced"' in html and 'class="badge failed"' in html
    assert "depends-on" not in html


def test_repository_page_shows_what_each_mapping_comes_after(
    admin_user: Any, repo_world: dict[str, Any]
) -> None:
    from fleet.sources.models import PathMapping

    repo = repo_world["repo"]
    staging = PathMapping.objects.get(repository=repo, name="web-staging")
    prod = PathMapping.objects.get(repository=repo, name="web-prod")
    prod.depends_on.set([staging])
    PathMapping.objects.filter(pk=prod.pk).update(declared_depends_on=["crds", "infra/namespaces"])
    html = client_for(admin_user).get(f"/repositories/{repo.pk}/").content.decode()
    assert (
        '<span class="muted small depends-on">after infra/namespaces, platform/crds, platform/web-staging'
        "</span>" in html
    )


def test_commit_page_shows_render_errors_with_file_and_line(
    admin_user: Any, repo_world: dict[str, Any]
) -> None:
    html = client_for(admin_user).get(f"/commits/{repo_world['commit'].pk}/").content.decode()
    assert "a.yaml:3 bad indent" in html


def test_scoped_viewer_sees_only_their_mappings(make_user: Any, repo_world: dict[str, Any]) -> None:
    client = client_for(make_user("sv", role="viewer", scope=repo_world["staging"]))
    html = client.get(f"/repositories/{repo_world['repo'].pk}/").content.decode()
    assert "web-staging" in html and "web-prod" not in html
    assert "bad indent" not in client.get(f"/commits/{repo_world['commit'].pk}/").content.decode()
    other = RepositoryFactory(name="elsewhere")
    assert client.get(f"/repositories/{other.pk}/").status_code == 404


@pytest.mark.parametrize("commits", [10, 200])
def test_repository_page_runs_constant_queries(
    commits: int, admin_user: Any, repo_world: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    for _ in range(commits):
        CommitFactory(repository=repo_world["repo"])
    client = client_for(admin_user)
    with django_assert_max_num_queries(12):
        assert client.get(f"/repositories/{repo_world['repo'].pk}/").status_code == 200


def test_commit_page_groups_policy_results_by_policy(admin_user: Any, repo_world: dict[str, Any]) -> None:
    from clusters.models import Cluster
    from fleet.rollouts.models import ClusterSync

    rollout = Rollout.objects.get(commit=repo_world["commit"])
    for name in ("c-a", "c-b"):
        ClusterSync.objects.create(
            rollout=rollout,
            cluster=Cluster.objects.create(name=name, api_url="https://x:6443", token="t"),
            state="blocked",
            evaluation={
                "violations": [
                    {
                        "policy_name": "no-latest",
                        "enforcement": "deny",
                        "message": f"latest on {name}",
                        "object": {
                            "kind": "Deployment",
                            "namespace": "apps",
                            "name": "web",
                            "source_file": "web.yaml",
                        },
                        "waived_by": None,
                    },
                ]
            },
        )
    html = client_for(admin_user).get(f"/commits/{repo_world['commit'].pk}/").content.decode()
    assert "Policy results: web-staging" in html
    assert html.count("<h3>no-latest") == 1 and "latest on c-a" in html and "latest on c-b" in html


def test_repository_page_shows_a_mappings_directory_options(
    admin_user: Any, repo_world: dict[str, Any]
) -> None:
    from fleet.sources.models import PathMapping

    repo = repo_world["repo"]
    PathMapping.objects.filter(repository=repo, name="web-prod").update(
        directory_recurse=False, directory_include="{a,b/*}.yaml", directory_exclude="<x>.yaml")
    html = client_for(admin_user).get(f"/repositories/{repo.pk}/").content.decode()
    assert ('<span class="muted small directory-options" title="Argo CD directory options (docs/sources.md)">'
            "not recursive; include {a,b/*}.yaml; exclude &lt;x&gt;.yaml</span>") in html
    assert html.count("directory-options") == 1  # the other mapping keeps the defaults
