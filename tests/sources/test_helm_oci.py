"""Helm charts from an OCI registry: CNCF Distribution built from Go modules (scripts/build-registry.sh) and
started on 127.0.0.1 over TLS with a test CA (one instance with htpasswd authentication); charts pushed with
oras in ``helm push``'s layout, fetched by Fleetgate through oras and the chart cache keyed by digest."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.sources.charts import ChartError, ChartFetcher, RepoCredentials
from fleet.sources.render import ClusterContext, RenderRequest, render
from tests.chart_servers import LocalCA, OciRegistry, make_chart, package

EU = ClusterContext(
    name="eu-1", labels={"region": "eu"}, group="prod", repository="file:///r", commit="a" * 40
)
PASSWORD = "oci-s3cret-password"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def registry(tmp_path: Path, ca: LocalCA) -> Iterator[OciRegistry]:
    reg = OciRegistry(tmp_path / "registry", ca)
    yield reg
    reg.stop()


def fetcher(cache: Path, ca: LocalCA, creds: RepoCredentials | None = None, **kw: Any) -> ChartFetcher:
    given = creds or RepoCredentials(ca_bundle=ca.ca_pem)
    return ChartFetcher(cache, credentials=lambda url: given, **kw)


def mapped(root: Path, helm: dict[str, Any]) -> Path:
    d = root / "tree" / "apps" / "web"
    d.mkdir(parents=True, exist_ok=True)
    (d / "fleetgate.yaml").write_text(yaml.safe_dump({"helm": helm}))
    return root / "tree"


def publish(registry: OciRegistry, tmp: Path, version: str, *, marker: str = "") -> None:
    chart = make_chart(tmp / "src" / version, "web", version, values={"greeting": marker or "hello"})
    registry.push(package(chart, tmp / "pkg" / version), "charts")


def configmap(result: Any) -> dict[str, Any]:
    found = {(o.kind, o.name): o.body for o in result.objects}
    return next(body for (kind, _), body in found.items() if kind == "ConfigMap")


def test_chart_from_an_oci_registry_renders_and_is_cached_by_digest(
    tmp_path: Path, ca: LocalCA, registry: OciRegistry
) -> None:
    publish(registry, tmp_path, "1.0.0")
    digest = registry.manifest_digest("charts/web", "1.0.0")
    tree = mapped(
        tmp_path, {"chart": f"oci://{registry.host}/charts/web", "version": "1.0.0", "releaseName": "shop"}
    )
    request = RenderRequest(path="apps/web", cluster=EU, namespace="apps")
    with fetcher(tmp_path / "cache", ca) as charts:
        first = render(tree, request, charts=charts)
        assert charts.stats.chart_downloads == 1
    cm = configmap(first)
    assert cm["metadata"]["name"] == "shop-web" and cm["metadata"]["namespace"] == "apps"
    assert cm["data"]["release"] == "shop" and cm["data"]["namespace"] == "apps"
    assert any(digest in w for w in first.warnings) or charts.stats.chart_downloads == 1
    with fetcher(tmp_path / "cache", ca) as charts:  # a new run: the manifest again, the chart from the cache
        second = render(tree, request, charts=charts)
        assert charts.stats.chart_downloads == 0 and charts.stats.cache_hits == 1
    assert second.input_hash == first.input_hash

    # the same tag pushed again with other content: a new manifest digest, a new input hash, a download
    publish(registry, tmp_path / "again", "1.0.0", marker="republished")
    assert registry.manifest_digest("charts/web", "1.0.0") != digest
    with fetcher(tmp_path / "cache", ca) as charts:
        third = render(tree, request, charts=charts)
        assert charts.stats.chart_downloads == 1
    assert third.input_hash != first.input_hash
    assert configmap(third)["data"]["greeting"] == "republished"


def test_versions_by_tag_list_and_the_repository_split_form(
    tmp_path: Path, ca: LocalCA, registry: OciRegistry
) -> None:
    for version in ("1.0.0", "1.2.0", "2.0.0"):
        publish(registry, tmp_path, version)
    tree = mapped(
        tmp_path, {"chart": "web", "repo": f"oci://{registry.host}/charts", "version": "~1.0 || ~1.2"}
    )
    with fetcher(tmp_path / "cache", ca) as charts:
        result = render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    assert configmap(result)["metadata"]["labels"]["chart"] == "web-1.2.0"
    tree = mapped(tmp_path, {"chart": f"oci://{registry.host}/charts/web", "version": "9.9.9"})
    with fetcher(tmp_path / "cache", ca) as charts:
        with pytest.raises(ChartError) as err:
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    assert err.value.code == "not_found"


def test_a_pinned_digest_is_checked_and_renders_offline_from_the_cache(
    tmp_path: Path, ca: LocalCA, registry: OciRegistry
) -> None:
    publish(registry, tmp_path, "1.0.0")
    digest = registry.manifest_digest("charts/web", "1.0.0")
    chart = f"oci://{registry.host}/charts/web"
    wrong = mapped(tmp_path, {"chart": chart, "version": "1.0.0", "digest": "sha256:" + "1" * 64})
    with fetcher(tmp_path / "cache", ca) as charts:
        with pytest.raises(ChartError) as err:
            render(wrong, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    assert err.value.code in ("digest_mismatch", "not_found")  # the registry has no manifest of that digest
    pinned = mapped(tmp_path, {"chart": chart, "version": "1.0.0", "digest": digest})
    with fetcher(tmp_path / "cache", ca) as charts:
        online = render(pinned, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    registry.stop()
    with fetcher(tmp_path / "cache", ca) as charts:
        offline = render(pinned, RenderRequest(path="apps/web", cluster=EU), charts=charts)
        assert charts.stats.chart_downloads == 0
    assert offline.objects == online.objects

    # not pinned, offline: network_required naming the chart and the registry
    tree = mapped(tmp_path, {"chart": chart, "version": "1.0.0"})
    with fetcher(tmp_path / "cache", ca) as charts:
        with pytest.raises(ChartError) as err:
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    assert err.value.code == "network_required"
    assert f"chart 'web' version 1.0.0 from oci://{registry.host}/charts" in err.value.message
    assert "cannot be reached" in err.value.message


def test_htpasswd_registry_credentials_are_used_and_never_shown(
    tmp_path: Path, ca: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = OciRegistry(tmp_path / "registry", ca, auth=("robot", PASSWORD))
    try:
        publish(registry, tmp_path, "1.0.0")
        tree = mapped(tmp_path, {"chart": f"oci://{registry.host}/charts/web", "version": "1.0.0"})
        request = RenderRequest(path="apps/web", cluster=EU)
        with fetcher(tmp_path / "cache", ca) as charts:
            with pytest.raises(ChartError) as anonymous:
                render(tree, request, charts=charts)
        assert anonymous.value.code == "auth_failed"
        wrong = RepoCredentials("robot", "wrong-" + PASSWORD, ca.ca_pem)
        with fetcher(tmp_path / "cache", ca, wrong) as charts:
            with pytest.raises(ChartError) as refused:
                render(tree, request, charts=charts)
        assert refused.value.code == "auth_failed"
        good = RepoCredentials("robot", PASSWORD, ca.ca_pem)
        with fetcher(tmp_path / "cache", ca, good) as charts:
            result = render(tree, request, charts=charts)
        assert configmap(result)["metadata"]["name"] == "web-web"
        for text in (str(anonymous.value), str(refused.value), repr(refused.value.to_dict()), caplog.text):
            assert PASSWORD not in text
    finally:
        registry.stop()
