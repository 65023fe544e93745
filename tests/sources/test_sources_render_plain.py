"""Plain YAML rendering, substitution, fleetgate.yaml customizations and the safety limits."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.git import RepositoryCache
from fleet.sources.render import (
    ClusterContext,
    DirectoryOptions,
    RenderError,
    RenderRequest,
    SourceTree,
    compute_input_hash,
    detect_renderer,
    expand_mapping_path,
    render,
)

EU = ClusterContext(name="eu-1", labels={"region": "eu", "env": "prod"}, group="prod",
                    repository="https://git.example.com/org/fleet.git", commit="c" * 40)
US = ClusterContext(name="us-1", labels={"region": "us", "env": "prod"}, group="prod",
                    repository="https://git.example.com/org/fleet.git", commit="c" * 40)


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(content))
    return root


def cm(name: str, extra: str = "") -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{extra}"


def names(result: Any) -> list[tuple[str, str]]:
    return [(o.kind, o.name) for o in result.objects]


def test_plain_directory_with_multi_document_files_and_subdirectories(tmp_path: Path) -> None:
    write(tmp_path, {
        "apps/web/all.yaml": """\
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: web
            spec:
              replicas: 2
            ---
            ---
            # only a comment
            ---
            apiVersion: v1
            kind: Service
            metadata:
              name: web
              namespace: frontend
            """,
        "apps/web/sub/dir/cm.yml": cm("nested"),
        "apps/web/list.json": '{"apiVersion": "v1", "kind": "List", "items": ['
                              '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}]}',
        "apps/web/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: frontend\n",
        "apps/web/fleetgate.yaml": "namespace: null\n",
        "apps/web/README.md": "not yaml at all: [",
        "apps/web/.github/workflows/ci.yml": "on: push\njobs: {}\n",
    })
    result = render(tmp_path, RenderRequest(path="apps/web", cluster=EU))
    assert result.renderer == "plain"
    # sorted by (API group, kind, namespace, name): core group first
    assert names(result) == [("ConfigMap", "nested"), ("Namespace", "frontend"), ("Secret", "s"),
                             ("Service", "web"), ("Deployment", "web")]
    by_name = {(o.kind, o.name): o for o in result.objects}
    assert by_name[("Service", "web")].source == "apps/web/all.yaml"
    assert by_name[("Service", "web")].document == 3  # empty documents still count
    assert by_name[("Service", "web")].namespace == "frontend"
    assert by_name[("Deployment", "web")].namespace is None  # filled at apply time
    assert by_name[("ConfigMap", "nested")].source == "apps/web/sub/dir/cm.yml"
    assert detect_renderer(tmp_path, "apps/web") == "plain"
    # the same inputs render byte-for-byte the same, in the same order
    assert render(tmp_path, RenderRequest(path="apps/web", cluster=EU)).to_dict() == result.to_dict()


def test_a_document_without_kind_is_an_error_with_file_document_and_line(tmp_path: Path) -> None:
    write(tmp_path, {"p/a.yaml": cm("ok") + "---\napiVersion: v1\nmetadata:\n  name: x\n"})
    with pytest.raises(RenderError) as err:
        render(tmp_path, RenderRequest(path="p", cluster=EU))
    e = err.value
    assert (e.file, e.document, e.line) == ("p/a.yaml", 1, 6)
    assert "no kind" in e.message
    write(tmp_path, {"q/a.yaml": "- just\n- a list\n"})
    with pytest.raises(RenderError, match="not a Kubernetes object"):
        render(tmp_path, RenderRequest(path="q", cluster=EU))


def test_malformed_yaml_reports_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, {"p/good.yaml": cm("good"),
                     "p/bad.yaml": cm("bad") + "data:\n  key: [unclosed\n  other: 1\n"})
    with pytest.raises(RenderError) as err:
        render(tmp_path, RenderRequest(path="p", cluster=EU))
    assert err.value.file == "p/bad.yaml"
    assert err.value.line == 7
    assert "invalid YAML" in str(err.value) and "p/bad.yaml:7" in str(err.value)
    assert err.value.to_dict()["line"] == 7


def test_yaml_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    write(tmp_path, {"bomb/cm.yaml": cm("bomb", "data:\n") + "\n".join("  " + ln for ln in lines) + "\n"})
    with pytest.raises(RenderError) as err:
        render(tmp_path, RenderRequest(path="bomb", cluster=EU))
    assert "YAML bomb" in err.value.message and err.value.file == "bomb/cm.yaml"
    # ordinary anchors and merge keys still work
    write(tmp_path, {"anchors/cm.yaml": cm("y", "metadata2: &d\n  a: '1'\ndata:\n  <<: *d\n  b: '2'\n")})
    result = render(tmp_path, RenderRequest(path="anchors", cluster=EU))
    assert result.objects[0].body["data"] == {"a": "1", "b": "2"}


def test_file_size_limit_and_duplicate_keys_and_duplicate_objects(tmp_path: Path) -> None:
    write(tmp_path, {"big/cm.yaml": cm("big", "data:\n  v: '" + "x" * (9 * 1024 * 1024) + "'\n")})
    with pytest.raises(RenderError, match="more than the limit"):
        render(tmp_path, RenderRequest(path="big", cluster=EU))
    write(tmp_path, {"dupkey/cm.yaml": cm("d", "data:\n  a: '1'\n  a: '2'\n")})
    with pytest.raises(RenderError, match="duplicate key 'a'") as err:
        render(tmp_path, RenderRequest(path="dupkey", cluster=EU))
    assert err.value.line == 7
    write(tmp_path, {"dupobj/a.yaml": cm("same"), "dupobj/b.yaml": cm("same")})
    with pytest.raises(RenderError, match="duplicate object ConfigMap same"):
        render(tmp_path, RenderRequest(path="dupobj", cluster=EU))


def test_mapping_paths_may_not_leave_the_repository(tmp_path: Path) -> None:
    repo = write(tmp_path / "repo", {"apps/a.yaml": cm("a")})
    write(tmp_path, {"outside/secret.yaml": cm("secret")})
    for bad in ("../outside", "/etc", "apps/../../outside", "~/x"):
        with pytest.raises(RenderError):
            render(repo, RenderRequest(path=bad, cluster=EU))
    (repo / "linkdir").symlink_to(tmp_path / "outside")
    with pytest.raises(RenderError, match="outside the repository"):
        render(repo, RenderRequest(path="linkdir", cluster=EU))


def test_symlink_leaving_the_repository_is_refused_after_git_export(tmp_path: Path, make_repo: Any) -> None:
    origin = make_repo()
    origin.write({"apps/web/cm.yaml": cm("web")})
    (origin.path / "apps/web/inside.yaml").symlink_to("../shared.yaml")
    origin.write({"apps/shared.yaml": cm("shared")})
    origin.git("add", "-A")
    ok = origin.commit("inside symlink")
    (origin.path / "apps/web/passwd.yaml").symlink_to("/etc/passwd")
    origin.git("add", "-A")
    bad = origin.commit("escaping symlink")
    cache = RepositoryCache(tmp_path / "cache", "r", origin.url)
    cache.fetch()
    with cache.export(ok) as tree:
        result = render(tree, RenderRequest(path="apps/web", cluster=EU))
        assert names(result) == [("ConfigMap", "shared"), ("ConfigMap", "web")]
        assert {o.source for o in result.objects} == {"apps/web/inside.yaml", "apps/web/cm.yaml"}
    with cache.export(bad) as tree:
        with pytest.raises(RenderError) as err:
            render(tree, RenderRequest(path="apps/web", cluster=EU))
        assert err.value.file == "apps/web/passwd.yaml"
        assert "symlink points outside the repository" in err.value.message
        with pytest.raises(RenderError):
            compute_input_hash(tree, RenderRequest(path="apps/web", cluster=EU))


def test_substitution_in_plain_yaml(tmp_path: Path) -> None:
    write(tmp_path, {"p/cm.yaml": cm("settings-${cluster.name}", textwrap.dedent("""\
        data:
          cluster: ${cluster.name}
          region: ${cluster.labels.region}
          zone: ${cluster.labels.zone:-none}
          group: ${group.name}
          commit: ${commit.short}
          repo: ${repository.url}
          level: ${values.log.level}
          escaped: $${cluster.name}
          script: echo ${HOME} and $HOME
          number: '${values.replicas}'
        """))})
    req = RenderRequest(path="p", cluster=EU, values=({"log": {"level": "info"}, "replicas": 1},
                                                      {"replicas": 3}))
    obj = render(tmp_path, req).objects[0]
    assert obj.name == "settings-eu-1"
    assert obj.body["data"] == {
        "cluster": "eu-1", "region": "eu", "zone": "none", "group": "prod", "commit": "c" * 12,
        "repo": "https://git.example.com/org/fleet.git", "level": "info",
        "escaped": "${cluster.name}", "script": "echo ${HOME} and $HOME", "number": "3",
    }
    write(tmp_path, {"q/cm.yaml": cm("x", "data:\n  zone: ${cluster.labels.zone}\n")})
    with pytest.raises(RenderError) as err:
        render(tmp_path, RenderRequest(path="q", cluster=EU))
    assert "unknown variable ${cluster.labels.zone}" in err.value.message
    assert err.value.file == "q/cm.yaml" and "data.zone" in err.value.message


FLEETGATE = """\
namespace: apps
helm:
  valuesFiles: [values-extra.yaml]
patches:
  - target: {kind: ConfigMap, name: common}
    patch: {data: {everywhere: "yes"}}
targetCustomizations:
  - name: europe
    clusterSelector:
      matchLabels: {region: eu}
      matchExpressions:
        - {key: env, operator: In, values: [prod]}
    namespace: apps-eu
    patches:
      - target: {kind: Deployment, name: web}
        patch:
          spec:
            replicas: 5
            template:
              spec:
                containers:
                  - name: web
                    image: web:eu
      - target: {kind: Service, name: web}
        jsonPatch:
          - {op: replace, path: /spec/type, value: NodePort}
          - {op: add, path: /metadata/labels, value: {region: eu}}
  - name: eu-again
    clusterSelector: {matchLabels: {region: eu}}
    namespace: never-used
  - name: quiet
    clusterName: us-quiet
    doNotDeploy: true
"""

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  template:
    spec:
      containers:
        - name: web
          image: web:1
        - name: sidecar
          image: proxy:1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: ClusterIP
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: common
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: web-reader
"""


def test_fleetgate_yaml_customizes_two_clusters_with_different_labels(tmp_path: Path) -> None:
    write(tmp_path, {"app/fleetgate.yaml": FLEETGATE, "app/deploy.yaml": DEPLOY,
                     "app/values-extra.yaml": "not: a manifest\n"})
    eu = render(tmp_path, RenderRequest(path="app", cluster=EU, namespace="default-ns"))
    us = render(tmp_path, RenderRequest(path="app", cluster=US, namespace="default-ns"))

    assert eu.target == "europe" and us.target is None
    assert eu.namespace == "apps-eu" and us.namespace == "apps" and eu.namespace_forced
    eu_objs = {(o.kind, o.name): o for o in eu.objects}
    us_objs = {(o.kind, o.name): o for o in us.objects}
    assert set(eu_objs) == set(us_objs) == {("Deployment", "web"), ("Service", "web"),
                                            ("ConfigMap", "common"), ("ClusterRole", "web-reader")}
    dep = eu_objs[("Deployment", "web")].body
    assert dep["spec"]["replicas"] == 5
    assert dep["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "web:eu"}, {"name": "sidecar", "image": "proxy:1"}]
    assert us_objs[("Deployment", "web")].body["spec"]["replicas"] == 1
    assert eu_objs[("Service", "web")].body["spec"]["type"] == "NodePort"
    assert eu_objs[("Service", "web")].body["metadata"]["labels"] == {"region": "eu"}
    assert us_objs[("Service", "web")].body["spec"]["type"] == "ClusterIP"
    assert eu_objs[("ConfigMap", "common")].body["data"] == {"everywhere": "yes"}
    assert us_objs[("ConfigMap", "common")].body["data"] == {"everywhere": "yes"}
    # namespace override forced onto namespaced objects, never onto cluster-scoped ones
    assert eu_objs[("Service", "web")].namespace == "apps-eu"
    assert us_objs[("Service", "web")].namespace == "apps"
    assert eu_objs[("ClusterRole", "web-reader")].namespace is None

    quiet = ClusterContext(name="us-quiet", labels={"region": "us"}, group="prod")
    skipped = render(tmp_path, RenderRequest(path="app", cluster=quiet))
    assert skipped.skipped and skipped.objects == () and skipped.target == "quiet"


def test_bad_fleetgate_yaml_and_unmatched_patch_are_errors(tmp_path: Path) -> None:
    write(tmp_path, {"a/fleetgate.yaml": "targetCustomizations:\n  - namespace: x\n", "a/d.yaml": DEPLOY})
    with pytest.raises(RenderError, match="needs clusterSelector, clusterName or clusterGroup") as err:
        render(tmp_path, RenderRequest(path="a", cluster=EU))
    assert err.value.file == "a/fleetgate.yaml"
    write(tmp_path, {"b/fleetgate.yaml": "namspace: typo\n", "b/d.yaml": DEPLOY})
    with pytest.raises(RenderError, match="unknown key"):
        render(tmp_path, RenderRequest(path="b", cluster=EU))
    write(tmp_path, {"c/fleetgate.yaml": "patches:\n  - target: {kind: Deployment, name: nope}\n"
                                         "    patch: {spec: {replicas: 2}}\n", "c/d.yaml": DEPLOY})
    with pytest.raises(RenderError, match="matches no rendered object"):
        render(tmp_path, RenderRequest(path="c", cluster=EU))
    write(tmp_path, {"d/fleetgate.yaml": "patches:\n  - target: {kind: Service}\n"
                                         "    jsonPatch: [{op: remove, path: /spec/missing}]\n",
                     "d/d.yaml": DEPLOY})
    with pytest.raises(RenderError, match="jsonPatch"):
        render(tmp_path, RenderRequest(path="d", cluster=EU))


def test_input_hash_is_stable_and_changes_with_inputs(tmp_path: Path) -> None:
    write(tmp_path, {"plain/cm.yaml": cm("static"), "vars/cm.yaml": cm("v", "data:\n  c: ${cluster.name}\n")})
    tree = SourceTree(tmp_path)
    h_eu = compute_input_hash(tree, RenderRequest(path="plain", cluster=EU))
    # nothing references the cluster: one render serves every cluster
    assert h_eu == compute_input_hash(tree, RenderRequest(path="plain", cluster=US))
    assert h_eu == render(tree, RenderRequest(path="plain", cluster=EU)).input_hash
    assert h_eu != compute_input_hash(tree, RenderRequest(path="plain", cluster=EU, values=({"a": 1},)))
    assert h_eu != compute_input_hash(tree, RenderRequest(path="plain", cluster=EU, namespace="x"))
    # a ${...} reference makes the cluster part of the inputs
    assert (compute_input_hash(tree, RenderRequest(path="vars", cluster=EU))
            != compute_input_hash(tree, RenderRequest(path="vars", cluster=US)))
    write(tmp_path, {"plain/cm.yaml": cm("static", "data:\n  changed: 'yes'\n")})
    assert h_eu != compute_input_hash(SourceTree(tmp_path), RenderRequest(path="plain", cluster=EU))


def test_a_nested_chart_in_a_plain_directory_is_refused_unless_left_out(tmp_path: Path) -> None:
    """Neither Flux nor Argo CD renders a chart below a plain path: kustomize-controller reads Chart.yaml and
    the templates as manifests (and fails to decode them); Argo CD detects Helm only at an application's
    root and, recursing, reads them as manifests too. Refused, naming the chart's directory, rather than
    left out silently; what recurse off, the globs or .sourceignore leave out is not read. A Fleet bundle
    (a fleet.yaml at the path) leaves the chart out, as Fleet makes it a bundle of its own.
    (A nested kustomization is built as a base: test_sources_render_layouts.py.)"""
    write(tmp_path, {
        "p/a.yaml": cm("a"),
        "p/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
        "p/sub/templates/cm.yaml": cm("{{ .Release.Name }}"),
    })
    for renderer in ("plain", "auto"):
        with pytest.raises(RenderError, match="map p/sub on its own") as err:
            render(tmp_path, RenderRequest(path="p", cluster=EU, renderer=renderer))
        assert err.value.file == "p/sub/Chart.yaml"
    for options in (DirectoryOptions(recurse=False), DirectoryOptions(exclude="sub/*")):
        result = render(tmp_path, RenderRequest(path="p", cluster=EU, directory=options))
        assert names(result) == [("ConfigMap", "a")]
    # mapped on its own, the chart renders with Helm
    assert names(render(tmp_path, RenderRequest(path="p/sub", cluster=EU))) == [("ConfigMap", "sub")]
    write(tmp_path, {"p/.sourceignore": "sub/\n"})
    assert names(render(tmp_path, RenderRequest(path="p", cluster=EU))) == [("ConfigMap", "a")]
    os.remove(tmp_path / "p" / ".sourceignore")
    write(tmp_path, {"p/fleet.yaml": "labels: {team: a}\n"})
    assert names(render(tmp_path, RenderRequest(path="p", cluster=EU))) == [("ConfigMap", "a")]


def test_glob_mapping_paths_expand_to_directories(tmp_path: Path) -> None:
    write(tmp_path, {"apps/a/x.yaml": cm("a"), "apps/b/x.yaml": cm("b"), "apps/b/deep/y.yaml": cm("y"),
                     "other/z.yaml": cm("z")})
    assert expand_mapping_path(tmp_path, "apps/*") == ["apps/a", "apps/b"]
    assert expand_mapping_path(tmp_path, "apps") == ["apps"]
    with pytest.raises(RenderError, match="glob"):
        render(tmp_path, RenderRequest(path="apps/*", cluster=EU))
    assert os.path.isdir(tmp_path / "apps/b/deep")
