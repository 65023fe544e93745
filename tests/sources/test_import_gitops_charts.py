"""Importing Argo CD Applications and Flux HelmReleases of charts from a Helm repository or an OCI registry
(Argo CD source.chart + targetRevision, helm.valueFiles; Flux HelmRepository of type default and oci,
OCIRepository by chartRef and sourceRef, chart.spec.version, valuesFiles), then rendering each imported
mapping for a cluster against a real HTTPS chart repository and a real registry on 127.0.0.1: the cluster
receives what the tool would render. What cannot be expressed is skipped with the reason, as is an
ApplicationSet matrix whose second generator uses the first one's parameters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.gitops_import import ImportError_, import_gitops
from fleet.sources.models import ChartRepository, PathMapping
from tests.chart_servers import ChartRepoServer, LocalCA, OciRegistry, make_chart, package
from tests.sources.gitops_layouts import rendered

pytestmark = pytest.mark.django_db

API_CHART = {
    "charts/api/Chart.yaml": "apiVersion: v2\nname: api\nversion: 0.1.0\n",
    "charts/api/values.yaml": "replicas: 1\ntier: default\nsize: small\n",
    "charts/api/values-prod.yaml": "replicas: 3\n",
    "charts/api/templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}'}\n"
        "data: {replicas: '{{ .Values.replicas }}', tier: '{{ .Values.tier }}', size: '{{ .Values.size }}'}\n"
    ),
    "envs/prod/api.yaml": "tier: prod\n",
    "envs/prod/web.yaml": "greeting: from-the-values-ref\n",
}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def charts(tmp_path: Path, ca: LocalCA, settings: Any) -> Iterator[ChartRepoServer]:
    settings.FLEETGATE_CHART_CACHE = tmp_path / "chart-cache"
    srv = ChartRepoServer(tmp_path / "served", ca)
    for version in ("1.0.0", "1.0.3", "1.2.0"):
        srv.publish(web_chart(tmp_path / "src", version))
    ChartRepository.objects.create(name="local-charts", url=srv.url, ca_bundle=ca.ca_pem)
    yield srv
    srv.stop()


@pytest.fixture
def registry(tmp_path: Path, ca: LocalCA, settings: Any) -> Iterator[OciRegistry]:
    settings.FLEETGATE_CHART_CACHE = tmp_path / "chart-cache"
    reg = OciRegistry(tmp_path / "registry", ca)
    for version in ("2.0.0", "2.1.0"):
        reg.push(package(web_chart(tmp_path / "src", version), tmp_path / "pkg" / version), "charts")
    ChartRepository.objects.create(name="registry", url=f"oci://{reg.host}", ca_bundle=ca.ca_pem)
    yield reg
    reg.stop()


def web_chart(root: Path, version: str) -> Path:
    chart = make_chart(
        root / version, "web", version, values={"greeting": "hello", "size": "small"},
        templates={"cm.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
            "  namespace: {{ .Release.Namespace }}\n"
            "data:\n  chart: web-" + version + "\n  greeting: {{ .Values.greeting | quote }}\n"
            "  size: {{ .Values.size | quote }}\n  cluster: {{ .Values.global.fleetgate.cluster.name }}\n"
        )},
    )
    (chart / "values-big.yaml").write_text("size: big\n")
    return chart


def only_configmap(mapping: PathMapping, cluster: str) -> tuple[str, str, dict[str, Any]]:
    objects = rendered(mapping, cluster)
    ((kind, namespace, name),) = objects
    assert kind == "ConfigMap"
    return namespace, name, objects[(kind, namespace, name)]["data"]


def test_argo_cd_and_flux_charts_from_a_helm_repository_import_and_render(
    origin: Any, make_repository: Any, fleet: dict[str, Any], admin_user: Any, charts: ChartRepoServer,
) -> None:
    origin.commit("apps", API_CHART)
    make_repository(origin, name="apps")
    argo = f"""apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: web, namespace: argocd}}
spec:
  project: default
  source:
    chart: web
    repoURL: {charts.url}
    targetRevision: ~1.0.0
    helm:
      releaseName: shop
      valueFiles: [values-big.yaml]
      values: |
        greeting: hi
  destination: {{name: eu-1, namespace: store}}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: api, namespace: argocd}}
spec:
  source:
    repoURL: {origin.url}
    targetRevision: main
    path: charts/api
    helm:
      valueFiles: [values-prod.yaml, ../../envs/prod/api.yaml]
  destination: {{name: us-1, namespace: api}}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: web-values, namespace: argocd}}
spec:
  sources:
    - chart: web
      repoURL: {charts.url}
      targetRevision: 1.2.0
      helm:
        valueFiles: [values-big.yaml, $values/envs/prod/web.yaml]
    - repoURL: {origin.url}
      targetRevision: main
      ref: values
  destination: {{name: eu-1, namespace: store}}
"""
    flux = f"""apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: flux-system, namespace: flux-system}}
spec: {{url: {origin.url}, ref: {{branch: main}}}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {{name: team, namespace: flux-system}}
spec: {{url: {charts.url}, interval: 10m, secretRef: {{name: team-charts}}}}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: fweb, namespace: flux-system}}
spec:
  targetNamespace: shop
  chart:
    spec:
      chart: web
      version: 1.0.x
      sourceRef: {{kind: HelmRepository, name: team}}
      valuesFiles: [values.yaml, values-big.yaml]
  values: {{greeting: flux}}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: fapi, namespace: flux-system}}
spec:
  chart:
    spec:
      chart: ./charts/api
      sourceRef: {{kind: GitRepository, name: flux-system}}
      valuesFiles: [charts/api/values.yaml, charts/api/values-prod.yaml, envs/prod/api.yaml]
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: no-defaults, namespace: flux-system}}
spec:
  chart:
    spec:
      chart: web
      sourceRef: {{kind: HelmRepository, name: team}}
      valuesFiles: [values-big.yaml]
"""
    # Argo CD's chart names no Git repository: without one given, it is skipped with the reason
    dry = import_gitops(admin_user, [("argo.yaml", argo)], dry_run=True)
    assert "apps/web-values" in dry.created["mappings"]  # its Git source's ref holds its values files
    assert {f.setting: f.reason for f in dry.plan.skipped}["spec.source.chart"].endswith(
        "give the repository that holds its mapping (--repository / \"repository\")")
    with pytest.raises(ImportError_, match="no repository named 'nope'"):
        import_gitops(admin_user, [("argo.yaml", argo)], repository="nope")

    outcome = import_gitops(admin_user, [("argo.yaml", argo)], repository="apps")
    assert sorted(outcome.created["mappings"]) == ["apps/api", "apps/web", "apps/web-values"], \
        outcome.to_dict()
    web = PathMapping.objects.get(repository__name="apps", name="web")
    assert (web.path, web.helm_chart, web.helm_repo, web.helm_version, web.helm_values_files,
            web.helm_release_name, web.target_namespace) == (
        ".", "web", charts.url, "~1.0.0", ["chart:values-big.yaml"], "shop", "store")
    # values-big.yaml of the chart over its defaults, helm.values over both; the newest 1.0.x
    assert only_configmap(web, "eu-1") == ("store", "shop", {
        "chart": "web-1.0.3", "greeting": "hi", "size": "big", "cluster": "eu-1"})
    # multi-source: the chart with $values files of a Git source becomes a mapping of that repository, its
    # path the directory of those files
    with_values = PathMapping.objects.get(repository__name="apps", name="web-values")
    assert (with_values.path, with_values.helm_values_files, with_values.helm_version) == (
        "envs/prod", ["chart:values-big.yaml", "envs/prod/web.yaml"], "1.2.0")
    assert only_configmap(with_values, "eu-1") == ("store", "web-values", {
        "chart": "web-1.2.0", "greeting": "from-the-values-ref", "size": "big", "cluster": "eu-1"})
    api = PathMapping.objects.get(repository__name="apps", name="api")
    assert api.helm_values_files == ["charts/api/values-prod.yaml", "envs/prod/api.yaml"]
    assert only_configmap(api, "us-1") == ("api", "api", {"replicas": "3", "tier": "prod", "size": "small"})
    assert not outcome.plan.unsupported

    flux_outcome = import_gitops(admin_user, [("flux.yaml", flux)], target_group="staging")
    assert sorted(flux_outcome.created["mappings"]) == ["apps/fapi", "apps/fweb"], flux_outcome.to_dict()
    assert flux_outcome.created["repositories"] == []  # the GitRepository is the repository "apps"
    skipped = {f.source.split(" ")[0]: f.reason for f in flux_outcome.plan.skipped}
    assert "drops the chart's default values" in skipped["HelmRelease/no-defaults"]
    assert {(s.setting, s.name) for s in flux_outcome.plan.secrets} == {("spec.secretRef", "team-charts")}
    fweb = PathMapping.objects.get(repository__name="apps", name="fweb")
    assert (fweb.helm_chart, fweb.helm_repo, fweb.helm_version, fweb.helm_values_files,
            fweb.helm_release_name) == ("web", charts.url, "1.0.x", ["chart:values-big.yaml"], "shop-fweb")
    assert only_configmap(fweb, "st-1") == ("shop", "shop-fweb", {
        "chart": "web-1.0.3", "greeting": "flux", "size": "big", "cluster": "st-1"})
    fapi = PathMapping.objects.get(repository__name="apps", name="fapi")
    assert fapi.helm_values_files == ["charts/api/values-prod.yaml", "envs/prod/api.yaml"]
    assert only_configmap(fapi, "st-1")[2] == {"replicas": "3", "tier": "prod", "size": "small"}

    # importing again finds everything
    again = import_gitops(admin_user, [("argo.yaml", argo)], repository="apps")
    assert again.nothing_new and not again.conflicts, again.to_dict()


def test_argo_cd_and_flux_charts_from_an_oci_registry_import_and_render(
    origin: Any, make_repository: Any, fleet: dict[str, Any], admin_user: Any, registry: OciRegistry,
) -> None:
    origin.commit("apps", {"README.md": "apps\n"})
    make_repository(origin, name="apps")
    argo = f"""apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: web-oci, namespace: argocd}}
spec:
  source:
    chart: web
    repoURL: {registry.host}/charts
    targetRevision: 2.0.0
  destination: {{server: https://kubernetes.default.svc, namespace: web}}
"""
    flux = f"""apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {{name: registry, namespace: flux-system}}
spec: {{type: oci, url: 'oci://{registry.host}/charts'}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {{name: web, namespace: flux-system}}
spec:
  url: oci://{registry.host}/charts/web
  ref: {{semver: '>=2.0.0 <3.0.0'}}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: by-repository, namespace: flux-system}}
spec:
  chart:
    spec: {{chart: web, version: 2.0.0, sourceRef: {{kind: HelmRepository, name: registry}}}}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: by-chartref, namespace: flux-system}}
spec:
  chartRef: {{kind: OCIRepository, name: web}}
  values: {{greeting: chartref}}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: by-sourceref, namespace: flux-system}}
spec:
  chart:
    spec:
      chart: web
      sourceRef: {{kind: OCIRepository, name: web}}
      valuesFiles: [values.yaml, values-big.yaml]
"""
    outcome = import_gitops(admin_user, [("argo.yaml", argo), ("flux.yaml", flux)], target_group="staging",
                            repository="apps")
    assert sorted(outcome.created["mappings"]) == [
        "apps/by-chartref", "apps/by-repository", "apps/by-sourceref", "apps/web-oci"], outcome.to_dict()
    oci = PathMapping.objects.get(name="web-oci")
    assert (oci.helm_chart, oci.helm_repo, oci.helm_version) == (
        "web", f"oci://{registry.host}/charts", "2.0.0")
    assert only_configmap(oci, "st-1") == ("web", "web-oci", {
        "chart": "web-2.0.0", "greeting": "hello", "size": "small", "cluster": "st-1"})
    by_repo = PathMapping.objects.get(name="by-repository")
    assert only_configmap(by_repo, "st-1")[2]["chart"] == "web-2.0.0"
    chartref = PathMapping.objects.get(name="by-chartref")
    assert (chartref.helm_chart, chartref.helm_repo, chartref.helm_version) == (
        f"oci://{registry.host}/charts/web", "", ">=2.0.0 <3.0.0")
    assert only_configmap(chartref, "st-1") == ("flux-system", "by-chartref", {
        "chart": "web-2.1.0", "greeting": "chartref", "size": "small", "cluster": "st-1"})
    sourceref = PathMapping.objects.get(name="by-sourceref")
    assert only_configmap(sourceref, "st-1")[2]["size"] == "big"


def test_a_matrix_whose_second_generator_uses_the_first_ones_parameters_is_refused(
    origin: Any, make_repository: Any, fleet: dict[str, Any], admin_user: Any,
) -> None:
    origin.commit("apps", {"apps/web/config.json": '{"cluster": "eu-1"}',
                           "apps/web/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n"})
    appset = f"""apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {{name: chained, namespace: argocd}}
spec:
  generators:
    - matrix:
        generators:
          - git: {{repoURL: {origin.url}, revision: main, directories: [{{path: apps/*}}]}}
          - git: {{repoURL: {origin.url}, revision: main, files: [{{path: '{{{{path}}}}/config.json'}}]}}
  template:
    metadata: {{name: '{{{{path.basename}}}}-{{{{cluster}}}}'}}
    spec:
      source: {{repoURL: {origin.url}, targetRevision: main, path: '{{{{path}}}}'}}
      destination: {{name: '{{{{cluster}}}}'}}
"""
    outcome = import_gitops(admin_user, [("appset.yaml", appset)], dry_run=True)
    assert outcome.created["mappings"] == []
    (finding,) = outcome.plan.skipped
    assert finding.setting == "spec.generators.matrix"
    assert "uses the first's parameters" in finding.reason and "parameter chaining" in finding.reason


def test_the_api_takes_the_repository_for_charts_and_names_an_unknown_one(
    origin: Any, make_repository: Any, fleet: dict[str, Any], admin_client: Any, make_user: Any,
    token_client: Any,
) -> None:
    make_repository(origin, name="apps")
    app = """apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web, namespace: argocd}
spec:
  source: {chart: web, repoURL: 'https://charts.example.com', targetRevision: 1.2.0}
  destination: {name: eu-1, namespace: web}
"""
    unknown = admin_client.post("/api/import/gitops/", {"documents": app, "repository": "nope"},
                                format="json")
    assert unknown.status_code == 400
    assert "no repository named 'nope'" in str(unknown.json()["repository"])
    dry = admin_client.post("/api/import/gitops/", {"documents": app, "repository": "apps", "dry_run": True},
                            format="json")
    assert dry.status_code == 200, dry.json()
    (mapping,) = dry.json()["mappings"]
    assert mapping["options"] == {"chart": "web", "chart_repo": "https://charts.example.com",
                                  "chart_version": "1.2.0", "release_name": "web"}
    assert dry.json()["created"]["mappings"] == ["apps/web"]
    assert not PathMapping.objects.exists()
    # a user who may not create mappings in the cluster's group gets 403, as for any mapping
    viewer = token_client(make_user("viewer-all", role="viewer"))
    refused = viewer.post("/api/import/gitops/", {"documents": app, "repository": "apps"}, format="json")
    assert refused.status_code == 403


def test_the_command_takes_the_repository_for_charts(
    origin: Any, make_repository: Any, fleet: dict[str, Any], tmp_path: Path,
) -> None:
    from django.core.management import call_command

    make_repository(origin, name="apps")
    doc = tmp_path / "web.yaml"
    doc.write_text("""apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web, namespace: argocd}
spec:
  source: {chart: web, repoURL: 'oci://registry.example.com/charts', targetRevision: '^1.2'}
  destination: {name: eu-1}
""")
    from io import StringIO

    out = StringIO()
    call_command("import_gitops", str(doc), "--repository", "apps", stdout=out)
    assert "created mapping apps/web" in out.getvalue()
    web = PathMapping.objects.get(name="web")
    assert (web.path, web.helm_chart, web.helm_repo, web.helm_version, web.helm_release_name) == (
        ".", "web", "oci://registry.example.com/charts", "^1.2", "web")
