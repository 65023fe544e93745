"""Helm rendering with the real helm-python-sdk (Helm v4 in-process)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.sources.render import (
    ClusterContext,
    RenderError,
    RenderRequest,
    SourceTree,
    compute_input_hash,
    helm_hook_phases,
    render,
)

EU = ClusterContext(name="eu-1", labels={"region": "eu", "tier": "gold"}, group="prod",
                    repository="https://git.example.com/fleet.git", commit="b" * 40)
US = ClusterContext(name="us-1", labels={"region": "us", "tier": "silver"}, group="prod",
                    repository="https://git.example.com/fleet.git", commit="b" * 40)

CHART = {
    "charts/web/Chart.yaml": """\
        apiVersion: v2
        name: web
        version: 0.1.0
        dependencies:
          - name: cache
            version: 0.1.0
        """,
    "charts/web/values.yaml": """\
        replicas: 1
        image: {repository: web, tag: "1.0"}
        region: unknown
        """,
    "charts/web/values-gold.yaml": "tierReplicas: 9\n",
    "charts/web/crds/widgets.yaml": """\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: widgets.example.com
        spec:
          group: example.com
          scope: Namespaced
          names: {kind: Widget, plural: widgets}
          versions: [{name: v1, served: true, storage: true}]
        """,
    "charts/web/templates/deployment.yaml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {{ .Release.Name }}
          namespace: {{ .Release.Namespace }}
          labels:
            cluster: {{ .Values.fleetgate.cluster.name }}
            region: {{ .Values.fleetgate.cluster.labels.region }}
        spec:
          replicas: {{ .Values.tierReplicas | default .Values.replicas }}
          template:
            spec:
              containers:
                - name: web
                  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
                  env:
                    - {name: REGION, value: "{{ .Values.region }}"}
        ---
        """,
    "charts/web/templates/widget.yaml": """\
        apiVersion: example.com/v1
        kind: Widget
        metadata:
          name: {{ .Release.Name }}-widget
        """,
    "charts/web/templates/migrate-job.yaml": """\
        apiVersion: batch/v1
        kind: Job
        metadata:
          name: {{ .Release.Name }}-migrate
          annotations:
            helm.sh/hook: pre-install,pre-upgrade
        """,
    "charts/web/templates/tests/test-connection.yaml": """\
        apiVersion: v1
        kind: Pod
        metadata:
          name: {{ .Release.Name }}-test
          annotations:
            helm.sh/hook: test
        """,
    "charts/web/templates/cleanup.yaml": """\
        apiVersion: batch/v1
        kind: Job
        metadata:
          name: {{ .Release.Name }}-cleanup
          annotations:
            helm.sh/hook: pre-delete
        """,
    "charts/web/templates/NOTES.txt": "Thanks for installing {{ .Release.Name }}\n",
    "charts/web/charts/cache/Chart.yaml": "apiVersion: v2\nname: cache\nversion: 0.1.0\n",
    "charts/web/charts/cache/templates/cm.yaml": """\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: cache-{{ .Values.global.fleetgate.cluster.name }}
        """,
    "charts/web/fleetgate.yaml": """\
        helm:
          releaseName: shop
          values: {region: "${cluster.labels.region}"}
        targetCustomizations:
          - clusterSelector: {matchLabels: {tier: gold}}
            helm:
              valuesFiles: [values-gold.yaml]
        """,
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for rel, content in CHART.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(content))
    return tmp_path


def objects_by_kind(result: object) -> dict[tuple[str, str], dict]:
    return {(o.kind, o.name): o.body for o in result.objects}  # type: ignore[attr-defined]


def test_chart_renders_per_cluster_values_crds_and_subcharts(repo: Path) -> None:
    tree = SourceTree(repo)
    layers = ({"image": {"tag": "2.0"}}, {"replicas": 3}, {"image": {"repository": "registry.eu/web"}})
    eu = render(tree, RenderRequest(path="charts/web", cluster=EU, values=layers, namespace="shop"))
    assert eu.renderer == "helm"
    objs = objects_by_kind(eu)
    assert set(objs) == {
        ("CustomResourceDefinition", "widgets.example.com"), ("Deployment", "shop"),
        ("Widget", "shop-widget"), ("Job", "shop-migrate"), ("ConfigMap", "cache-eu-1")}
    dep = objs[("Deployment", "shop")]
    assert dep["metadata"]["namespace"] == "shop"
    assert dep["metadata"]["labels"] == {"cluster": "eu-1", "region": "eu"}
    assert dep["spec"]["replicas"] == 9  # gold tier values file from the matched target
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.eu/web:2.0"  # mapping -> group -> cluster layers merged
    assert container["env"] == [{"name": "REGION", "value": "eu"}]  # ${...} substituted in values
    sources = {(o.kind, o.name): o.source for o in eu.objects}
    assert sources[("CustomResourceDefinition", "widgets.example.com")] == "charts/web/crds/widgets.yaml"
    assert sources[("ConfigMap", "cache-eu-1")] == "charts/web/charts/cache/templates/cm.yaml"
    assert helm_hook_phases(objs[("Job", "shop-migrate")]) == ["pre-install", "pre-upgrade"]
    assert any("hook" in w for w in eu.warnings)  # test and delete hooks dropped
    assert eu.values["region"] == "eu"

    us = render(tree, RenderRequest(path="charts/web", cluster=US, values=layers, namespace="shop"))
    us_dep = objects_by_kind(us)[("Deployment", "shop")]
    assert us_dep["spec"]["replicas"] == 3 and us_dep["metadata"]["labels"]["region"] == "us"
    assert ("ConfigMap", "cache-us-1") in objects_by_kind(us)
    # helm reads the cluster context, so each cluster has its own input hash
    assert eu.input_hash != us.input_hash
    same = RenderRequest(path="charts/web", cluster=EU, values=layers, namespace="shop")
    assert eu.input_hash == compute_input_hash(tree, same)


def test_missing_and_remote_dependencies_are_clear_errors(repo: Path) -> None:
    chart = repo / "charts/web"
    for f in sorted((chart / "charts").rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    with pytest.raises(RenderError, match="missing from charts/") as err:
        render(repo, RenderRequest(path="charts/web", cluster=US))
    assert err.value.file == "charts/web/Chart.yaml"
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n"
        "  - name: redis\n    version: 1.0.0\n    repository: https://charts.example.com\n")
    with pytest.raises(RenderError, match=r"needs network access.*helm dependency build"):
        render(repo, RenderRequest(path="charts/web", cluster=US))


def test_template_error_names_the_template_and_line(repo: Path) -> None:
    (repo / "charts/web/templates/broken.yaml").write_text("a: 1\nb: {{ .Values.image.tag }\n")
    with pytest.raises(RenderError) as err:
        render(repo, RenderRequest(path="charts/web", cluster=US))
    assert err.value.file == "charts/web/templates/broken.yaml"
    assert err.value.line == 2
    assert "helm render failed" in err.value.message


def test_rendered_output_that_is_not_an_object_is_an_error(repo: Path) -> None:
    (repo / "charts/web/templates/junk.yaml").write_text("just: a mapping\n")
    with pytest.raises(RenderError, match="no apiVersion") as err:
        render(repo, RenderRequest(path="charts/web", cluster=US))
    assert err.value.file == "charts/web/templates/junk.yaml"


def test_invalid_release_name_is_refused(repo: Path) -> None:
    with pytest.raises(RenderError, match="release name"):
        render(repo, RenderRequest(path="charts/web", cluster=US, release_name="Not_Valid!"))
