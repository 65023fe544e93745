"""manage.py render and manage.py fetch_repository."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from fleet.sources.models import Commit
from tests.sources.origin import configmap

REGIONAL = configmap("web", "region: ${cluster.labels.region}")


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_render_prints_what_the_cluster_receives(origin: Any, make_repository: Any, make_mapping: Any,
                                                 fleet: dict[str, Any]) -> None:
    sha = origin.commit("initial", {"apps/web/cm.yaml": REGIONAL,
                                    "apps/web/svc.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n"
                                                         "  name: web\nspec:\n  ports:\n  - port: 80\n"})
    repo = make_repository(origin)
    make_mapping(repo, "web", "apps/web", fleet["prod"], target_namespace="shop")
    # works before any fetch was recorded: the command fills the cache itself and stores nothing
    output = run("render", "apps", sha, "web", "--cluster", "us-1")
    assert output.startswith("# Namespace for namespaced objects that name none: shop\n"
                             "---\n# Source: apps/web/cm.yaml\n")
    assert "---\n# Source: apps/web/svc.yaml\n" in output
    docs = list(yaml.safe_load_all(output))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service"]
    assert docs[0]["data"] == {"region": "us"} and docs[1]["spec"]["ports"] == [{"port": 80}]
    assert not Commit.objects.exists()

    run("fetch_repository", "apps")
    assert "region: eu" in run("render", "apps", sha[:8], "web", "--cluster", "eu-1")
    assert "region: eu" in run("render", "apps", "head", "web", "--cluster", "eu-1")


def test_render_errors_name_file_and_line_and_exit_1(origin: Any, make_repository: Any, make_mapping: Any,
                                                     fleet: dict[str, Any]) -> None:
    sha = origin.commit("bad", {"apps/web/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                                    "  name: a\ndata: {broken\n"})
    repo = make_repository(origin)
    make_mapping(repo, "web", "apps/web", fleet["prod"])
    with pytest.raises(CommandError) as info:
        run("render", "apps", sha, "web", "--cluster", "eu-1")
    assert info.value.returncode == 1
    assert "apps/web/cm.yaml:" in str(info.value)

    with pytest.raises(CommandError, match="not in group 'prod'"):
        run("render", "apps", sha, "web", "--cluster", "st-1")
    with pytest.raises(CommandError, match="no mapping 'nope'"):
        run("render", "apps", sha, "nope", "--cluster", "eu-1")
    with pytest.raises(CommandError, match="not in repository"):
        run("render", "apps", "0" * 40, "web", "--cluster", "eu-1")


def test_fetch_repository_command_prints_new_commits_and_renders(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any], tmp_path: Any
) -> None:
    first = origin.commit("initial", {"apps/web/cm.yaml": REGIONAL})
    repo = make_repository(origin)
    make_mapping(repo, "web", "apps/web", fleet["prod"])
    output = run("fetch_repository", "apps")
    assert f"{first[:10]} initial" in output
    assert "render web at" in output and "rendered (new; 2 cluster(s), 2 object(s)" in output
    second = origin.commit("second", {"apps/web/more.yaml": configmap("more")})
    output = run("fetch_repository", str(repo.pk))
    assert "1 new commit(s)" in output and f"{second[:10]} second" in output
    assert "up to date" in run("fetch_repository", "apps")

    repo.url = (tmp_path / "missing").as_uri()
    repo.save()
    with pytest.raises(CommandError, match="unreachable") as info:
        run("fetch_repository", "apps")
    assert info.value.returncode == 1


def test_render_offline_renders_a_local_directory_without_any_database_row(
        tmp_path: Any, db: Any, django_assert_num_queries: Any) -> None:
    checkout = tmp_path / "checkout"
    (checkout / ".git").mkdir(parents=True)  # the enclosing work tree is the repository root
    files = {
        "clusters/staging/apps.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: apps\ndata:\n"
            "  cluster: ${cluster.name}\n  region: ${cluster.labels.region:-none}\n"),
        "clusters/staging/flux-system/kustomization.yaml": "resources: [cm.yaml]\nnamePrefix: flux-\n",
        "clusters/staging/flux-system/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sys\n",
        "clusters/staging/sub/deep.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\n",
    }
    for rel, text in files.items():
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text(text)
    target = str(checkout / "clusters/staging")
    with django_assert_num_queries(0):
        out = run("render", "--dir", target, "--cluster", "eu-1", "--label", "region=eu")
    assert "# Source: clusters/staging/apps.yaml\n" in out and "cluster: eu-1" in out and "region: eu" in out
    assert "name: flux-sys" in out and "# Source: clusters/staging/flux-system\n" in out
    assert "name: deep" in out
    out = run("render", "--dir", target, "--no-recurse")
    assert "name: deep" not in out and "flux-sys" not in out and "cluster: local" in out
    (checkout / "clusters/staging/gen.jsonnet").write_text("{}\n")
    with pytest.raises(CommandError, match=r"render failed at clusters/staging/gen\.jsonnet: unsupported"):
        run("render", "--dir", target)
    with pytest.raises(CommandError, match="--label 'x': write KEY=VALUE"):
        run("render", "--dir", target, "--label", "x")
    with pytest.raises(CommandError, match="give no repository"):
        run("render", "apps", "--dir", target)
