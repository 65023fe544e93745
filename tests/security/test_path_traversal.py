"""Path traversal and symlink escape while rendering a repository: every file a render reads must come from
the exported commit, never from the Fleetgate server's disk (``/etc/passwd``, other repositories' caches,
credentials) and never from the network.

Peers had this class repeatedly: Argo CD CVE-2022-24348 (a Helm values file path with ``..`` read files
outside the repository), CVE-2022-24904 (symlinks in a repository made the repo-server read out-of-bound
manifests) and CVE-2022-24730 (path traversal through values files of another application); Flux
kustomize-controller CVE-2022-24877 (improper path handling in Kustomization files allowed path
traversal); Helm's own ``file://`` dependencies and Kustomize's remote bases pull content from outside.

Each test builds a real git repository, lets Fleetgate fetch and export it (``git archive``, symlinks
kept as symlinks) and renders it with the production renderers: plain YAML, Kustomize (``kubectl
kustomize``) and Helm (helm-python-sdk).  Covered: absolute and relative symlinks to files and
directories outside the tree, symlink loops, ``..`` in values files, ``kustomize.dir``, Kustomize
resources and generator files, remote Kustomize bases, Helm ``file://`` dependencies and vendored
subcharts that are symlinks, ``.Files.Get`` with ``..``, ``.git`` internals, and mapping paths given to
the API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.choices import RenderStatus
from fleet.sources.git import RepositoryCache
from fleet.sources.models import MappingRender, RenderedManifest
from fleet.sources.render import ClusterContext, RenderError, RenderRequest, RenderResult, render
from fleet.sources.services import fetch_repository
from tests.sources.origin import (  # noqa: F401 - fixtures used by the tests below
    Origin,
    _git_cache,
    configmap,
    fleet,
    make_mapping,
    make_repository,
    origin,
)

CTX = ClusterContext(name="eu-1", labels={"env": "prod"}, group="prod", repository="r", commit="0" * 40)
SECRET_LINE = "fleetgate-outside-secret-line"
CHART = "apiVersion: v2\nname: app\nversion: 0.1.0\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory on the server, outside every repository, holding things a render must never read."""
    d = tmp_path / "outside"
    (d / "chart" / "templates").mkdir(parents=True)
    (d / "secret.yaml").write_text(configmap("leaked", f"line: {SECRET_LINE}"))
    (d / "chart" / "Chart.yaml").write_text("apiVersion: v2\nname: sub\nversion: 0.1.0\n")
    (d / "chart" / "templates" / "cm.yaml").write_text(configmap("leaked", f"line: {SECRET_LINE}"))
    (d / "kustomization.yaml").write_text("resources:\n  - secret.yaml\n")
    return d


def commit(origin: Origin, files: dict[str, str], links: dict[str, str] | None = None) -> str:  # noqa: F811
    for rel, target in (links or {}).items():
        p = origin.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)
        origin.git("add", rel)
    return origin.commit("tree", files)


@pytest.fixture
def export(origin: Origin, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    """Fetch the origin into a cache and export one commit, as the render service does."""
    cache = RepositoryCache(tmp_path / "cache", "traversal", origin.url)
    opened: list[Any] = []

    def run(sha: str) -> Path:
        cache.fetch()
        ctx = cache.export(sha)
        opened.append(ctx)
        return ctx.__enter__()

    yield run
    for ctx in opened:
        ctx.__exit__(None, None, None)


def render_path(tree: Path, path: str, **kwargs: Any) -> RenderResult:
    return render(tree, RenderRequest(path=path, cluster=CTX, **kwargs))


def refused(tree: Path, path: str, **kwargs: Any) -> RenderError:
    with pytest.raises(RenderError) as caught:
        render_path(tree, path, **kwargs)
    assert SECRET_LINE not in str(caught.value)
    assert "root:" not in str(caught.value)  # nothing of /etc/passwd
    return caught.value


# --------------------------------------------------------------------------- symlinks


def test_symlinks_to_files_outside_the_repository_are_refused(
    origin: Origin, export: Any, outside: Path  # noqa: F811
) -> None:
    sha = commit(origin, {"apps/web/cm.yaml": configmap("web")},
                 {"apps/web/passwd.yaml": "/etc/passwd", "apps/api/secret.yaml": str(outside / "secret.yaml"),
                  "apps/rel/up.yaml": "../../../outside/secret.yaml"})
    tree = export(sha)
    assert os.readlink(tree / "apps/web/passwd.yaml") == "/etc/passwd"  # exported as a link, not followed
    for path, link in (("apps/web", "apps/web/passwd.yaml"), ("apps/api", "apps/api/secret.yaml"),
                       ("apps/rel", "apps/rel/up.yaml")):
        error = refused(tree, path)
        assert error.file == link and "outside the repository" in error.message


def test_symlinked_directories_leaving_the_repository_are_refused(
    origin: Origin, export: Any, outside: Path  # noqa: F811
) -> None:
    sha = commit(origin, {"apps/web/cm.yaml": configmap("web")},
                 {"apps/web/etc": "/etc", "apps/web/outside": str(outside), "apps/up": "../.."})
    tree = export(sha)
    error = refused(tree, "apps/web")
    assert error.file in ("apps/web/etc", "apps/web/outside")
    error = refused(tree, "apps/up")
    assert "outside the repository" in error.message


def test_symlinks_inside_the_repository_still_work(origin: Origin, export: Any) -> None:  # noqa: F811
    sha = commit(origin, {"shared/cm.yaml": configmap("shared")},
                 {"apps/web/shared.yaml": "../../shared/cm.yaml"})
    result = render_path(export(sha), "apps/web")
    assert [o.name for o in result.objects] == ["shared"]


def test_a_symlink_loop_is_a_clear_render_error(origin: Origin, export: Any) -> None:  # noqa: F811
    sha = commit(origin, {"apps/web/cm.yaml": configmap("web")},
                 {"apps/web/a.yaml": "b.yaml", "apps/web/b.yaml": "a.yaml"})
    error = refused(export(sha), "apps/web")
    assert "symlink loop" in error.message and error.file in ("apps/web/a.yaml", "apps/web/b.yaml")


# --------------------------------------------------------------------------- Helm


def test_helm_values_files_may_not_leave_the_repository(
    origin: Origin, export: Any, outside: Path  # noqa: F811
) -> None:
    template = configmap("app", "v: {{ .Values.line | default \"none\" | quote }}")
    templates = {"chart/Chart.yaml": CHART, "chart/templates/cm.yaml": template}
    escapes = [
        "../../../../../../etc/passwd",
        "../" * 12 + str(outside / "secret.yaml").lstrip("/"),
        str(outside / "secret.yaml"),
        "~/.ssh/id_rsa",
    ]
    for i, values_file in enumerate(escapes):
        files = {**templates, "chart/fleetgate.yaml": f"helm:\n  valuesFiles:\n    - {values_file!r}\n"}
        tree = export(commit(origin, files))
        error = refused(tree, "chart")
        assert "repository" in error.message, (i, error)
    link = commit(origin, {**templates, "chart/fleetgate.yaml": "helm:\n  valuesFiles: [values-prod.yaml]\n"},
                  {"chart/values-prod.yaml": str(outside / "secret.yaml")})
    error = refused(export(link), "chart")
    assert "symlink" in error.message and "outside the repository" in error.message


def test_helm_file_dependencies_and_symlinked_subcharts_cannot_pull_in_outside_charts(
    origin: Origin, export: Any, outside: Path  # noqa: F811
) -> None:
    chart = CHART + f"dependencies:\n  - name: sub\n    version: 0.1.0\n    repository: file://{outside}/chart\n"
    tree = export(commit(origin, {"chart/Chart.yaml": chart, "chart/templates/cm.yaml": configmap("app")}))
    error = refused(tree, "chart")
    assert "missing from charts/" in error.message and error.file == "chart/Chart.yaml"

    rel_dep = CHART + "dependencies:\n  - name: sub\n    version: 0.1.0\n    repository: file://../../outside/chart\n"
    tree = export(commit(origin, {"chart/Chart.yaml": rel_dep}))
    assert "missing from charts/" in refused(tree, "chart").message

    tree = export(commit(origin, {"chart/Chart.yaml": chart}, {"chart/charts/sub": str(outside / "chart")}))
    error = refused(tree, "chart")
    assert error.file == "chart/charts/sub" and "outside the repository" in error.message


def test_helm_templates_cannot_read_files_outside_the_chart(
    origin: Origin, export: Any, outside: Path  # noqa: F811
) -> None:
    template = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: files\ndata:\n"
        '  passwd: {{ .Files.Get "../../../../../../../etc/passwd" | quote }}\n'
        f'  outside: {{{{ .Files.Get "{outside}/secret.yaml" | quote }}}}\n'
        '  glob: {{ .Files.Glob "../**" | len | quote }}\n'
    )
    sha = commit(origin, {"chart/Chart.yaml": CHART, "chart/templates/files.yaml": template})
    result = render_path(export(sha), "chart")
    assert result.objects[0].body["data"] == {"passwd": "", "outside": "", "glob": "0"}

    sha = commit(origin, {}, {"chart/templates/passwd.yaml": "/etc/passwd"})
    error = refused(export(sha), "chart")
    assert error.file == "chart/templates/passwd.yaml"


# --------------------------------------------------------------------------- Kustomize


def test_kustomize_bases_and_resources_may_not_leave_the_repository(
    origin: Origin, export: Any, outside: Path  # noqa: F811
) -> None:
    cases = {
        "relative": "resources:\n  - ../../../../../../../etc\n",
        "absolute": f"resources:\n  - {outside}\n",
        "bases": "bases:\n  - ../../..\n",
        "component": "components:\n  - ../../../../outside\n",
    }
    files = {f"k/{name}/kustomization.yaml": body for name, body in cases.items()}
    tree = export(commit(origin, files))
    for name in cases:
        error = refused(tree, f"k/{name}")
        assert "repository" in error.message, (name, error)


@pytest.mark.parametrize("entry", [
    "github.com/evil/repo//base?ref=v1",
    "https://raw.githubusercontent.com/evil/repo/main/cm.yaml",
    "git@github.com:evil/repo.git//base",
    "ssh://git@github.com/evil/repo.git",
    "git::https://example.com/evil/repo.git",
    "http://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "oci://registry.example.com/evil",
])
def test_remote_kustomize_resources_are_refused_without_touching_the_network(
    origin: Origin, export: Any, entry: str  # noqa: F811
) -> None:
    tree = export(commit(origin, {"k/remote/kustomization.yaml": f"resources:\n  - {entry}\n"}))
    error = refused(tree, "k/remote")
    assert "needs the network" in error.message and error.file == "k/remote/kustomization.yaml"


def test_kustomize_generator_and_patch_files_outside_the_root_are_refused(
    origin: Origin, export: Any, outside: Path  # noqa: F811
) -> None:
    cases = {
        "files": "configMapGenerator:\n  - name: leak\n    files:\n      - ../../../../../../../etc/passwd\n",
        "absolute": f"configMapGenerator:\n  - name: leak\n    files:\n      - {outside}/secret.yaml\n",
        "envs": "configMapGenerator:\n  - name: leak\n    envs:\n      - ../../../../../../../etc/passwd\n",
        "patch": "resources: [cm.yaml]\npatches:\n  - path: ../../../../../../../etc/passwd\n",
    }
    files = {f"k/{name}/kustomization.yaml": body for name, body in cases.items()}
    files["k/patch/cm.yaml"] = configmap("cm")
    tree = export(commit(origin, files))
    for name in cases:
        error = refused(tree, f"k/{name}")
        assert "kustomize failed" in error.message or "repository" in error.message, (name, error)

    links = commit(origin, {"k/link/kustomization.yaml": "resources: [secret.yaml]\n"},
                   {"k/link/secret.yaml": str(outside / "secret.yaml")})
    error = refused(export(links), "k/link")
    assert error.file == "k/link/secret.yaml" and "outside the repository" in error.message


def test_kustomize_dir_in_fleetgate_yaml_may_not_leave_the_repository(
    origin: Origin, export: Any  # noqa: F811
) -> None:
    sha = commit(origin, {"apps/web/fleetgate.yaml": "kustomize:\n  dir: ../../../../../../etc\n",
                          "apps/web/cm.yaml": configmap("web")})
    assert "leaves the repository" in refused(export(sha), "apps/web").message


def test_git_internals_are_not_part_of_the_rendered_tree(origin: Origin, export: Any) -> None:  # noqa: F811
    origin.git("remote", "add", "upstream", f"https://user:{SECRET_LINE}@git.example.com/x.git")
    sha = commit(origin, {"k/git/kustomization.yaml": "resources:\n  - ../../.git/config\n",
                          "apps/web/cm.yaml": configmap("web")})
    tree = export(sha)
    assert not (tree / ".git").exists()
    refused(tree, "k/git")
    with pytest.raises(RenderError):
        render_path(tree, ".git")


# --------------------------------------------------------------------------- through the API and services


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["../other", "apps/../../etc", "/etc", "C:/Windows", ".git",
                                  "apps/.git/hooks", "apps\\..\\..", "apps/\x00"])
def test_the_api_refuses_mapping_paths_that_leave_the_repository(
    admin_client: Any, fleet: dict[str, Any], path: str  # noqa: F811
) -> None:
    repo = admin_client.post("/api/repositories/", {"name": "apps", "url": "https://git.example.com/a.git"},
                             format="json")
    assert repo.status_code == 201
    body = {"repository": repo.json()["id"], "name": "web", "path": path,
            "cluster_group": fleet["prod"].pk}
    response = admin_client.post("/api/mappings/", body, format="json")
    assert response.status_code == 400, response.content
    assert "path" in response.json()


@pytest.mark.django_db
def test_an_escaping_symlink_fails_its_mapping_with_the_file_and_loses_nothing_else(
    origin: Origin, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]  # noqa: F811
) -> None:
    first = origin.commit("initial", {"apps/web/cm.yaml": configmap("web"),
                                      "apps/api/cm.yaml": configmap("api")})
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    api = make_mapping(repo, "api", "apps/api", fleet["prod"])
    assert fetch_repository(repo).ok
    bad = commit(origin, {"apps/api/cm.yaml": configmap("api", "value: changed")},
                 {"apps/web/passwd.yaml": "/etc/passwd"})
    outcome = fetch_repository(repo)
    assert outcome.ok
    failed = MappingRender.objects.get(commit__sha=bad, mapping=web)
    assert failed.status == RenderStatus.FAILED
    assert failed.error_file == "apps/web/passwd.yaml" and "outside the repository" in failed.error_message
    assert not RenderedManifest.objects.filter(commit__sha=bad, mapping=web, status="ok").exists()
    assert MappingRender.objects.get(commit__sha=bad, mapping=api).status == RenderStatus.RENDERED
    web.refresh_from_db()
    assert web.last_rendered_sha == first  # the last good render of web stays what it was
    good = RenderedManifest.objects.filter(commit__sha=first, mapping=web)
    assert good.count() == 2 and all(m.status == "ok" for m in good)
    assert "root:" not in str(list(RenderedManifest.objects.values_list("resources", flat=True)))


@pytest.mark.django_db
def test_a_file_name_that_is_not_utf8_fails_its_mapping_instead_of_the_fetch(
    origin: Origin, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]  # noqa: F811
) -> None:
    """git stores names as bytes; a name Python can only hold with surrogates crashed the input hash."""
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web"), "apps/api/cm.yaml": configmap("api")})
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    api = make_mapping(repo, "api", "apps/api", fleet["prod"])
    glob = make_mapping(repo, "all", "apps/*", fleet["prod"])
    assert fetch_repository(repo).ok
    name = os.fsdecode(b"apps/web/\xff\xfe.yaml")
    (origin.path / name).write_text(configmap("odd"))
    origin.git("add", name)
    os.mkdir(origin.path / os.fsdecode(b"apps/\xff"))
    (origin.path / os.fsdecode(b"apps/\xff/cm.yaml")).write_text(configmap("odd-dir"))
    origin.git("add", os.fsdecode(b"apps/\xff/cm.yaml"))
    bad = origin.commit("odd names", {"apps/api/cm.yaml": configmap("api", "v: 2")})
    outcome = fetch_repository(repo)
    assert outcome.ok
    failed = MappingRender.objects.get(commit__sha=bad, mapping=web)
    assert failed.status == RenderStatus.FAILED and "not UTF-8" in failed.error_message
    assert failed.error_file == "apps/web/\\xff\\xfe.yaml"
    assert MappingRender.objects.get(commit__sha=bad, mapping=glob).status == RenderStatus.FAILED
    assert MappingRender.objects.get(commit__sha=bad, mapping=api).status == RenderStatus.RENDERED
