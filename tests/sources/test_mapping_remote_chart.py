"""A mapping that names its own chart from a Helm repository or an OCI registry (helm_chart, helm_repo,
helm_version) and values files (of its repository, or chart:<file> inside the chart): through the API
(validated like path is, RBAC as the other mapping fields), rendered per cluster through the chart fetcher,
its cache and the stored chart repository credentials (a real HTTPS chart repository and a real registry on
127.0.0.1), with the group's and cluster's values on top; offline, network_required."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sources.models import ChartRepository, MappingRender, PathMapping, RenderedManifest
from fleet.sources.services import fetch_repository
from tests.chart_servers import ChartRepoServer, LocalCA, OciRegistry, make_chart, package
from tests.sources.test_sources_api import user_with

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def server(tmp_path: Path, ca: LocalCA, settings: Any) -> Iterator[ChartRepoServer]:
    settings.FLEETGATE_CHART_CACHE = tmp_path / "chart-cache"
    srv = ChartRepoServer(tmp_path / "served", ca)
    ChartRepository.objects.create(name="local-charts", url=srv.url, ca_bundle=ca.ca_pem)
    yield srv
    srv.stop()


def web_chart(root: Path, version: str) -> Path:
    """A chart whose ConfigMap shows its values, shipping a values-big.yaml besides its defaults."""
    chart = make_chart(
        root / version, "web", version, values={"greeting": "hello", "size": "small", "region": "none"},
        templates={"cm.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
            "  labels: {chart: web-" + version + "}\n"
            "data:\n  greeting: {{ .Values.greeting | quote }}\n  size: {{ .Values.size | quote }}\n"
            "  region: {{ .Values.region | quote }}\n  cluster: {{ .Values.fleetgate.cluster.name }}\n"
        )},
    )
    (chart / "values-big.yaml").write_text("size: big\n")
    return chart


def data_of(mapping: PathMapping, cluster: str) -> dict[str, Any]:
    row = RenderedManifest.objects.get(mapping=mapping, cluster__name=cluster,
                                       commit__sha=mapping.repository.head_sha)
    assert row.status == "ok", row.error_message
    (cm,) = [r for r in row.resources if r["kind"] == "ConfigMap"]
    return {"name": cm["name"], **cm["object"]["data"], "chart": cm["object"]["metadata"]["labels"]["chart"]}


def test_a_mapping_names_its_chart_and_values_files_and_renders_per_cluster(
    origin: Any, make_repository: Any, fleet: dict[str, Any], admin_client: Any, server: ChartRepoServer,
    tmp_path: Path,
) -> None:
    server.publish(web_chart(tmp_path / "src", "1.0.0"))
    server.publish(web_chart(tmp_path / "src", "1.1.0"))
    origin.commit("values", {"envs/prod/values.yaml": "greeting: from-git\n", "README.md": "charts\n"})
    repo = make_repository(origin)
    prod = fleet["prod"]
    prod.values = {"region": "from-group"}
    prod.save()
    eu = fleet["clusters"]["eu-1"]
    eu.values = {"region": "eu-only"}
    eu.save()
    created = admin_client.post("/api/mappings/", {
        "repository": repo.pk, "name": "web", "path": "envs/prod", "cluster_group": prod.pk,
        "helm_chart": "web", "helm_repo": server.url, "helm_version": "~1.0.0",
        "helm_values_files": ["chart:values-big.yaml", "envs/prod/values.yaml"],
        "helm_release_name": "shop",
    }, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["helm_chart"], body["helm_repo"], body["helm_version"]) == ("web", server.url, "~1.0.0")
    mapping = PathMapping.objects.get(pk=body["id"])
    fetch_repository(repo)
    repo.refresh_from_db()
    # chart defaults < chart:values-big.yaml < envs/prod/values.yaml < group values < cluster values
    assert data_of(mapping, "eu-1") == {"name": "shop", "greeting": "from-git", "size": "big",
                                        "region": "eu-only", "cluster": "eu-1", "chart": "web-1.0.0"}
    assert data_of(mapping, "us-1")["region"] == "from-group"
    assert server.hits["/charts/web-1.0.0.tgz"] == 1  # two clusters, one download
    assert admin_client.get("/api/mappings/", {"remote_chart": "true"}).json()["count"] == 1
    assert admin_client.get("/api/mappings/", {"helm_chart": "we"}).json()["count"] == 1

    # a change to a values file outside the path re-renders it; so does a change of the version
    mapping.refresh_from_db()
    assert mapping.watched_paths == []  # envs/prod/values.yaml is under the path
    origin.commit("greet", {"envs/prod/values.yaml": "greeting: changed\n"})
    fetch_repository(repo)
    repo.refresh_from_db()
    assert data_of(mapping, "eu-1")["greeting"] == "changed"
    assert admin_client.patch(f"/api/mappings/{mapping.pk}/", {"helm_version": "1.1.0"},
                              format="json").status_code == 200
    fetch_repository(repo)
    render = MappingRender.objects.filter(mapping=mapping).order_by("-id").first()
    assert render is not None and render.reason == "config" and render.status == "rendered"
    assert data_of(mapping, "eu-1")["chart"] == "web-1.1.0"


def test_offline_a_remote_chart_mapping_fails_with_network_required(
    origin: Any, make_repository: Any, fleet: dict[str, Any], make_mapping: Any, server: ChartRepoServer,
    tmp_path: Path, settings: Any,
) -> None:
    server.publish(web_chart(tmp_path / "src", "1.0.0"))
    origin.commit("root", {"README.md": "x\n"})
    repo = make_repository(origin)
    mapping = make_mapping(repo, "web", ".", fleet["staging"], helm_chart="web", helm_repo=server.url,
                           helm_version="1.0.0")
    settings.FLEETGATE_CHART_OFFLINE = True
    fetch_repository(repo)
    render = MappingRender.objects.get(mapping=mapping)
    assert render.status == "failed"
    assert render.error_message.startswith("network_required: chart 'web' version 1.0.0 from " + server.url)
    assert server.hits["/charts/index.yaml"] == 0


def test_a_chart_from_an_oci_registry_with_a_values_file_of_the_repository(
    origin: Any, make_repository: Any, fleet: dict[str, Any], make_mapping: Any, ca: LocalCA,
    tmp_path: Path, settings: Any,
) -> None:
    settings.FLEETGATE_CHART_CACHE = tmp_path / "chart-cache"
    registry = OciRegistry(tmp_path / "registry", ca)
    try:
        registry.push(package(web_chart(tmp_path / "src", "2.0.0"), tmp_path / "pkg"), "charts")
        ChartRepository.objects.create(name="registry", url=f"oci://{registry.host}", ca_bundle=ca.ca_pem)
        origin.commit("values", {"values/web.yaml": "size: medium\n"})
        repo = make_repository(origin)
        mapping = make_mapping(repo, "web", "values", fleet["staging"],
                               helm_chart=f"oci://{registry.host}/charts/web", helm_version="^2.0",
                               helm_values_files=["values/web.yaml"])
        fetch_repository(repo)
        repo.refresh_from_db()
        assert data_of(mapping, "st-1") == {"name": "web", "greeting": "hello", "size": "medium",
                                            "region": "none", "cluster": "st-1", "chart": "web-2.0.0"}
    finally:
        registry.stop()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"helm_values_files": ["../secrets/values.yaml"]}, "helm_values_files", "'..'"),
        ({"helm_values_files": ["chart:../../etc/passwd"], "helm_chart": "web",
          "helm_repo": "https://charts.example.com"}, "helm_values_files", "'..'"),
        ({"helm_values_files": ["/etc/passwd"]}, "helm_values_files", "relative"),
        ({"helm_values_files": ["envs/*.yaml"]}, "helm_values_files", "glob"),
        ({"helm_values_files": ["https://example.com/values.yaml"]}, "helm_values_files", "not a URL"),
        ({"helm_values_files": "values.yaml"}, "helm_values_files", "list"),
        ({"helm_values_files": ["chart:values-big.yaml"]}, "helm_values_files", "set helm_chart"),
        ({"helm_chart": "web", "helm_repo": "file:///srv/charts"}, "helm_repo", "https://"),
        ({"helm_chart": "web", "helm_repo": "https://robot:pw@charts.example.com"}, "helm_repo",
         "not in the URL"),
        ({"helm_chart": "web", "helm_repo": "https://169.254.169.254/charts"}, "helm_repo", "denied network"),
        ({"helm_chart": "oci://169.254.169.254/charts/web"}, "helm_chart", "denied network"),
        ({"helm_repo": "https://charts.example.com"}, "helm_repo", "Needs helm_chart"),
        ({"helm_chart": "web"}, "helm_chart", "needs helm_repo"),
        ({"helm_chart": "web", "helm_repo": "https://charts.example.com", "helm_version": "^^1"},
         "helm_version", "cannot be read"),
        ({"helm_chart": "web", "helm_repo": "https://charts.example.com", "renderer": "kustomize"},
         "renderer", "renders with Helm"),
    ],
)
def test_bad_chart_and_values_files_are_refused(
    origin: Any, make_repository: Any, fleet: dict[str, Any], admin_client: Any, change: dict[str, Any],
    field: str, message: str,
) -> None:
    repo = make_repository(origin)
    payload = {"repository": repo.pk, "name": "web", "path": "apps/web", "cluster_group": fleet["prod"].pk,
               **change}
    response = admin_client.post("/api/mappings/", payload, format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()
    assert field in errors, errors
    assert message in json.dumps(errors[field]), errors
    assert not PathMapping.objects.exists()


def test_chart_fields_need_the_right_to_change_the_mapping_in_its_group(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any], token_client: Any,
) -> None:
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    api = make_mapping(repo, "api", "apps/api", fleet["staging"])
    chart = {"helm_chart": "web", "helm_repo": "https://charts.example.com", "helm_values_files": ["a.yaml"]}
    prod_admin = token_client(user_with("cluster-admin", fleet["prod"]))
    assert prod_admin.patch(f"/api/mappings/{web.pk}/", chart, format="json").status_code == 200
    assert prod_admin.patch(f"/api/mappings/{api.pk}/", chart, format="json").status_code in (403, 404)
    operator = token_client(user_with("deployer", fleet["prod"]))
    denied = operator.patch(f"/api/mappings/{web.pk}/", {"helm_version": "2.0.0"}, format="json")
    assert denied.status_code == 403
    web.refresh_from_db()
    api.refresh_from_db()
    assert (web.helm_chart, web.helm_version, web.helm_values_files) == ("web", "", ["a.yaml"])
    assert api.helm_chart == ""
