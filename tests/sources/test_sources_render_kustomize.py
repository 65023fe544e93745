"""Kustomize rendering with the real kubectl kustomize from the virtualenv."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.sources.git import affected_mappings
from fleet.sources.render import (
    ClusterContext,
    RenderError,
    RenderRequest,
    SourceTree,
    compute_input_hash,
    detect_renderer,
    kustomize_dependencies,
    render,
)

EU = ClusterContext(name="eu-1", labels={"region": "eu"}, group="prod", commit="a" * 40)
US = ClusterContext(name="us-1", labels={"region": "us"}, group="prod", commit="a" * 40)

FILES = {
    "base/kustomization.yaml": """\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [deployment.yaml, service.yaml]
        labels:
          - pairs: {app: web}
        """,
    "base/deployment.yaml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          replicas: 1
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
                - name: web
                  image: web:1
                  env:
                    - {name: CLUSTER, value: "${cluster.name}"}
        """,
    "base/service.yaml": """\
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports: [{port: 80}]
        """,
    "components/monitoring/kustomization.yaml": """\
        apiVersion: kustomize.config.k8s.io/v1alpha1
        kind: Component
        resources: [servicemonitor.yaml]
        patches:
          - target: {kind: Deployment}
            patch: |-
              - op: add
                path: /metadata/annotations
                value: {prometheus.io/scrape: "true"}
        """,
    "components/monitoring/servicemonitor.yaml": """\
        apiVersion: monitoring.coreos.com/v1
        kind: ServiceMonitor
        metadata:
          name: web
        spec:
          endpoints: [{port: http}]
        """,
    "overlays/staging/kustomization.yaml": """\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        namePrefix: staging-
        namespace: staging
        resources: [../../base]
        """,
    "overlays/prod/kustomization.yaml": """\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        namespace: prod
        resources: [../../base]
        components: [../../components/monitoring]
        replicas:
          - {name: web, count: 4}
        """,
    "overlays/fleetgate.yaml": """\
        kustomize: {dir: prod}
        targetCustomizations:
          - clusterSelector: {matchLabels: {region: eu}}
            kustomize: {dir: prod-eu}
        """,
    "overlays/prod-eu/kustomization.yaml": """\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [../prod]
        images:
          - {name: web, newTag: eu-2}
        """,
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for rel, content in FILES.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(content))
    return tmp_path


def test_base_with_two_overlays_and_a_component(repo: Path) -> None:
    tree = SourceTree(repo)
    assert detect_renderer(tree, "overlays/staging") == "kustomize"
    staging = render(tree, RenderRequest(path="overlays/staging", cluster=US))
    assert staging.renderer == "kustomize"
    assert [(o.kind, o.name, o.namespace) for o in staging.objects] == [
        ("Service", "staging-web", "staging"), ("Deployment", "staging-web", "staging")]
    dep = staging.objects[1].body
    assert dep["spec"]["replicas"] == 1 and dep["metadata"]["labels"] == {"app": "web"}
    # ${...} substitution also applies to Kustomize output
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "CLUSTER", "value": "us-1"}]
    assert staging.objects[0].source == "overlays/staging"

    prod = render(tree, RenderRequest(path="overlays/prod", cluster=US))
    kinds = {(o.kind, o.name): o for o in prod.objects}
    assert set(kinds) == {("Service", "web"), ("Deployment", "web"), ("ServiceMonitor", "web")}
    deployment = kinds[("Deployment", "web")].body
    assert deployment["spec"]["replicas"] == 4
    assert deployment["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1"

    # fleetgate.yaml in overlays/ picks the overlay directory per cluster (kustomize.dir)
    eu = render(tree, RenderRequest(path="overlays", cluster=EU))
    eu_dep = {(o.kind, o.name): o for o in eu.objects}[("Deployment", "web")].body
    assert eu_dep["spec"]["template"]["spec"]["containers"][0]["image"] == "web:eu-2"
    assert eu_dep["spec"]["replicas"] == 4 and eu.target == "#0" and eu.renderer == "kustomize"
    us = render(tree, RenderRequest(path="overlays", cluster=US))
    assert us.target is None and [o.to_dict() for o in us.objects] == [o.to_dict() for o in prod.objects]


def test_dependencies_reach_bases_and_components_and_drive_hash_and_selection(repo: Path) -> None:
    deps = kustomize_dependencies(repo, "overlays/prod")
    assert deps == ["overlays/prod", "base", "components/monitoring"]
    dependencies = {"overlays/prod": deps,
                    "overlays/staging": kustomize_dependencies(repo, "overlays/staging")}
    changed = ["components/monitoring/servicemonitor.yaml"]
    assert affected_mappings(["overlays/prod", "overlays/staging"], changed,
                             dependencies=dependencies) == {"overlays/prod"}
    before = compute_input_hash(repo, RenderRequest(path="overlays/prod", cluster=US))
    (repo / "base/service.yaml").write_text((repo / "base/service.yaml").read_text() + "  type: NodePort\n")
    assert compute_input_hash(repo, RenderRequest(path="overlays/prod", cluster=US)) != before


def test_deprecated_fields_warn_but_do_not_fail(repo: Path) -> None:
    (repo / "legacy").mkdir()
    (repo / "legacy/kustomization.yaml").write_text(
        "bases: [../base]\npatchesStrategicMerge: [patch.yaml]\n")
    (repo / "legacy/patch.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 7\n")
    result = render(repo, RenderRequest(path="legacy", cluster=US))
    assert {(o.kind, o.name) for o in result.objects} == {("Deployment", "web"), ("Service", "web")}
    assert result.warnings and any("deprecated" in w.lower() for w in result.warnings)


def test_kustomize_failure_reports_its_message(repo: Path) -> None:
    (repo / "broken").mkdir()
    (repo / "broken/kustomization.yaml").write_text(
        "resources: [../base]\npatches:\n  - path: p.yaml\n")
    (repo / "broken/p.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: does-not-exist\nspec:\n  replicas: 2\n")
    with pytest.raises(RenderError) as err:
        render(repo, RenderRequest(path="broken", cluster=US))
    assert err.value.file == "broken/kustomization.yaml"
    assert "kustomize failed" in err.value.message and "does-not-exist" in err.value.message
    assert str(repo) not in err.value.message  # paths are repository-relative


def test_helm_charts_remote_resources_and_escaping_files_are_refused(
        repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    (repo / "helmy").mkdir()
    (repo / "helmy/kustomization.yaml").write_text(
        "helmCharts:\n  - name: redis\n    repo: https://charts.example.com\n")
    with pytest.raises(RenderError, match="unsupported offline"):
        render(repo, RenderRequest(path="helmy", cluster=US))
    (repo / "remote").mkdir()
    (repo / "remote/kustomization.yaml").write_text(
        "resources:\n  - https://github.com/org/repo//deploy?ref=v1\n")
    with pytest.raises(RenderError, match="needs the network"):
        render(repo, RenderRequest(path="remote", cluster=US))
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.yaml").write_text("apiVersion: v1\nkind: Secret\nmetadata:\n  name: stolen\n")
    (repo / "escape").mkdir()
    (repo / "escape/secret.yaml").symlink_to(outside / "secret.yaml")
    (repo / "escape/kustomization.yaml").write_text("resources: [secret.yaml]\n")
    with pytest.raises(RenderError, match="outside the repository") as err:
        render(repo, RenderRequest(path="escape", cluster=US))
    assert err.value.file == "escape/secret.yaml"
    (repo / "parent").mkdir()
    (repo / "parent/kustomization.yaml").write_text("resources: [../../../etc]\n")
    with pytest.raises(RenderError, match="leaves the repository"):
        render(repo, RenderRequest(path="parent", cluster=US))
