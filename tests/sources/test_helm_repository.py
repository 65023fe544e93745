"""Helm charts from an index repository (index.yaml + .tgz over HTTPS, a real server on 127.0.0.1 with a test
CA), through the chart cache keyed by digest; chart dependencies from charts/, file:// and a repository."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.sources.charts import ChartError, ChartFetcher, RepoCredentials
from fleet.sources.render import ClusterContext, RenderRequest, SourceTree, compute_input_hash, render
from tests.chart_servers import ChartRepoServer, LocalCA, make_chart, package, sha256_file

EU = ClusterContext(
    name="eu-1", labels={"region": "eu"}, group="prod", repository="file:///r", commit="a" * 40
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def server(tmp_path: Path, ca: LocalCA) -> Iterator[ChartRepoServer]:
    srv = ChartRepoServer(tmp_path / "served", ca)
    yield srv
    srv.stop()


def fetcher(cache: Path, ca: LocalCA, **kw: Any) -> ChartFetcher:
    creds = kw.pop("creds", None) or RepoCredentials(ca_bundle=ca.ca_pem)
    return ChartFetcher(cache, credentials=lambda url: creds, **kw)


def mapped(root: Path, helm: dict[str, Any], *, namespace: str | None = None) -> Path:
    d = root / "tree" / "apps" / "web"
    d.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"helm": helm}
    if namespace:
        doc["namespace"] = namespace
    (d / "fleetgate.yaml").write_text(yaml.safe_dump(doc))
    return root / "tree"


def objects(result: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o.kind, o.name): o.body for o in result.objects}


def test_chart_from_an_index_repository_renders_with_the_release_name_and_namespace(
    tmp_path: Path, ca: LocalCA, server: ChartRepoServer
) -> None:
    server.publish(make_chart(tmp_path / "src", "web", "1.0.0"))
    tree = mapped(
        tmp_path,
        {
            "chart": "web",
            "repo": server.url,
            "version": "1.0.0",
            "releaseName": "shop",
            "values": {"greeting": "hi"},
        },
    )
    with fetcher(tmp_path / "cache", ca) as charts:
        result = render(tree, RenderRequest(path="apps/web", cluster=EU, namespace="apps"), charts=charts)
    assert result.renderer == "helm"
    cm = objects(result)[("ConfigMap", "shop-web")]
    assert cm["metadata"]["namespace"] == "apps"
    assert cm["data"] == {"release": "shop", "namespace": "apps", "greeting": "hi", "cluster": "eu-1"}
    assert result.objects[0].source == "web-1.0.0/templates/cm.yaml"
    assert any(f"from {server.url}" in w and "sha256:" in w for w in result.warnings)


def test_a_version_constraint_picks_the_newest_matching_version(
    tmp_path: Path, ca: LocalCA, server: ChartRepoServer
) -> None:
    for version in ("1.0.0", "1.4.2", "2.0.0", "1.5.0-rc.1"):
        server.publish(make_chart(tmp_path / "src" / version, "web", version))
    tree = mapped(tmp_path, {"chart": "web", "repo": server.url, "version": "^1.0"})
    with fetcher(tmp_path / "cache", ca) as charts:
        result = render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
        assert objects(result)[("ConfigMap", "web-web")]["metadata"]["labels"]["chart"] == "web-1.4.2"
    tree = mapped(tmp_path, {"chart": "web", "repo": server.url})  # no version: the newest stable
    with fetcher(tmp_path / "cache", ca) as charts:
        result = render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
        assert objects(result)[("ConfigMap", "web-web")]["metadata"]["labels"]["chart"] == "web-2.0.0"
        tree = mapped(tmp_path, {"chart": "web", "repo": server.url, "version": "3.x"})
        with pytest.raises(ChartError, match=r"not_found: chart 'web' version 3.x from .*no version matches"):
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)


def test_the_cache_is_keyed_by_digest_and_a_republished_chart_is_detected(
    tmp_path: Path, ca: LocalCA, server: ChartRepoServer
) -> None:
    src = make_chart(tmp_path / "src", "web", "1.0.0")
    archive = server.publish(src)
    tree = mapped(tmp_path, {"chart": "web", "repo": server.url, "version": "1.0.0"})
    request = RenderRequest(path="apps/web", cluster=EU)
    tgz = "/charts/web-1.0.0.tgz"
    with fetcher(tmp_path / "cache", ca) as charts:
        first = render(tree, request, charts=charts)
        assert charts.stats.chart_downloads == 1
    assert (tmp_path / "cache" / "sha256" / f"{sha256_file(archive).split(':')[1]}.tgz").is_file()
    with fetcher(tmp_path / "cache", ca) as charts:  # a new run: the index again, the archive from the cache
        second = render(tree, request, charts=charts)
        assert charts.stats.chart_downloads == 0 and charts.stats.cache_hits == 1
    assert server.hits[tgz] == 1 and server.hits["/charts/index.yaml"] == 2
    assert second.input_hash == first.input_hash and second.objects == first.objects

    # the same version published again with other content: a new digest in the index
    (src / "templates" / "cm.yaml").write_text(
        (src / "templates" / "cm.yaml").read_text().replace("greeting:", "changed: 'yes'\n  greeting:")
    )
    server.publish(src)
    with fetcher(tmp_path / "cache", ca) as charts:
        third = render(tree, request, charts=charts)
        assert charts.stats.chart_downloads == 1
    assert server.hits[tgz] == 2
    assert third.input_hash != first.input_hash
    assert objects(third)[("ConfigMap", "web-web")]["data"]["changed"] == "yes"


def test_an_archive_that_is_not_the_one_the_index_names_is_refused(
    tmp_path: Path, ca: LocalCA, server: ChartRepoServer
) -> None:
    src = make_chart(tmp_path / "src", "web", "1.0.0")
    archive = server.publish(src)
    indexed = sha256_file(archive)
    # the archive changes on the server, the index keeps the old digest
    (src / "values.yaml").write_text("greeting: tampered\n")
    package(src, tmp_path / "other").replace(archive)
    tree = mapped(tmp_path, {"chart": "web", "repo": server.url, "version": "1.0.0"})
    with fetcher(tmp_path / "cache", ca) as charts:
        with pytest.raises(ChartError) as err:
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    assert err.value.code == "digest_mismatch"
    assert indexed in err.value.message and "nothing was stored" in err.value.message
    assert not list((tmp_path / "cache" / "sha256").glob("*.tgz"))
    # a pin that is not what the index says is refused before anything is downloaded
    tree = mapped(
        tmp_path, {"chart": "web", "repo": server.url, "version": "1.0.0", "digest": "sha256:" + "0" * 64}
    )
    with fetcher(tmp_path / "cache", ca) as charts:
        with pytest.raises(ChartError, match=r"digest_mismatch: .*not the pinned sha256:0000"):
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)


def test_offline_is_network_required_naming_the_chart_and_the_repository(
    tmp_path: Path, ca: LocalCA, server: ChartRepoServer
) -> None:
    archive = server.publish(make_chart(tmp_path / "src", "web", "1.0.0"))
    url = server.url
    with fetcher(tmp_path / "cache", ca) as charts:  # fill the cache while online
        render(
            mapped(tmp_path, {"chart": "web", "repo": url, "version": "1.0.0"}),
            RenderRequest(path="apps/web", cluster=EU),
            charts=charts,
        )
    server.stop()
    tree = mapped(tmp_path, {"chart": "web", "repo": url, "version": "1.0.0"})
    with fetcher(tmp_path / "cache", ca) as charts:
        with pytest.raises(ChartError) as err:
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    assert err.value.code == "network_required"
    assert f"chart 'web' version 1.0.0 from {url}" in err.value.message
    assert err.value.file == "apps/web/fleetgate.yaml"
    assert "kustomization" not in err.value.message and "fleet.yaml" not in err.value.message
    # pinned to a digest already in the cache, the chart renders without the network
    pinned = mapped(
        tmp_path, {"chart": "web", "repo": url, "version": "1.0.0", "digest": sha256_file(archive)}
    )
    with fetcher(tmp_path / "cache", ca) as charts:
        result = render(pinned, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    assert ("ConfigMap", "web-web") in objects(result)
    # switched off (FLEETGATE_CHART_OFFLINE): the same error without trying
    with fetcher(tmp_path / "cache2", ca, offline=True) as charts:
        with pytest.raises(ChartError, match=f"network_required: chart 'web' version 1.0.0 from {url}"):
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    # and without any fetcher at all
    with pytest.raises(ChartError, match=r"network_required: chart 'web'.* no chart fetcher"):
        render(tree, RenderRequest(path="apps/web", cluster=EU))


def test_basic_auth_credentials_are_used_and_never_shown(
    tmp_path: Path, ca: LocalCA, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-chart-password"
    srv = ChartRepoServer(tmp_path / "served", ca, auth=("robot", secret))
    caplog.set_level(logging.DEBUG)
    try:
        srv.publish(make_chart(tmp_path / "src", "web", "1.0.0"))
        tree = mapped(tmp_path, {"chart": "web", "repo": srv.url, "version": "1.0.0"})
        request = RenderRequest(path="apps/web", cluster=EU)
        with fetcher(tmp_path / "cache", ca) as charts:
            with pytest.raises(ChartError) as anonymous:
                render(tree, request, charts=charts)
        assert anonymous.value.code == "auth_failed" and "needs credentials" in anonymous.value.message
        wrong = RepoCredentials(username="robot", password="not-" + secret, ca_bundle=ca.ca_pem)
        with fetcher(tmp_path / "cache", ca, creds=wrong) as charts:
            with pytest.raises(ChartError) as refused:
                render(tree, request, charts=charts)
        assert (
            refused.value.code == "auth_failed" and "refused the stored credentials" in refused.value.message
        )
        good = RepoCredentials(username="robot", password=secret, ca_bundle=ca.ca_pem)
        with fetcher(tmp_path / "cache", ca, creds=good) as charts:
            result = render(tree, request, charts=charts)
        assert ("ConfigMap", "web-web") in objects(result)
        assert secret not in repr(good)
        for text in (
            str(anonymous.value),
            str(refused.value),
            repr(refused.value.to_dict()),
            caplog.text,
            repr(result.to_dict()),
        ):
            assert secret not in text
    finally:
        srv.stop()


def test_refused_addresses_and_limits(tmp_path: Path, ca: LocalCA, server: ChartRepoServer) -> None:
    tree = mapped(tmp_path, {"chart": "web", "repo": "https://169.254.169.254/charts", "version": "1.0.0"})
    with fetcher(tmp_path / "cache", ca) as charts:
        with pytest.raises(ChartError, match=r"refused: .*denied network 169.254.0.0/16"):
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    tree = mapped(tmp_path, {"chart": "oci://169.254.169.254/charts/web", "version": "1.0.0"})
    with fetcher(tmp_path / "cache", ca) as charts:  # an OCI registry goes through the same guard
        with pytest.raises(ChartError, match=r"refused: .*denied network 169.254.0.0/16"):
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    server.publish(make_chart(tmp_path / "src", "web", "1.0.0"))
    tree = mapped(tmp_path, {"chart": "web", "repo": server.url, "version": "1.0.0"})
    with fetcher(tmp_path / "cache", ca, max_chart_bytes=100) as charts:
        with pytest.raises(ChartError, match=r"too_large: chart 'web' version 1.0.0"):
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    # a server whose certificate is not trusted: TLS is verified
    with ChartFetcher(tmp_path / "cache") as charts:
        with pytest.raises(ChartError, match=r"network_required: .*TLS verification failed"):
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)
    tree = mapped(tmp_path, {"chart": "https://user:pw@example.com/web-1.0.0.tgz"})
    with fetcher(tmp_path / "cache", ca) as charts:
        with pytest.raises(
            ChartError, match=r"invalid: helm.chart 'https://example.com/web-1.0.0.tgz' carries credentials"
        ):
            render(tree, RenderRequest(path="apps/web", cluster=EU), charts=charts)


def test_an_archive_url_and_the_index_are_not_downloaded_again_while_unchanged(
    tmp_path: Path, ca: LocalCA
) -> None:
    server = ChartRepoServer(tmp_path / "served", ca, etags=True)
    try:
        src = make_chart(tmp_path / "src", "web", "1.0.0")
        server.publish(src)
        url = server.url + "/web-1.0.0.tgz"
        tree = mapped(tmp_path, {"chart": url, "releaseName": "direct"})
        request = RenderRequest(path="apps/web", cluster=EU)
        with fetcher(tmp_path / "cache", ca) as charts:
            first = render(tree, request, charts=charts)
            assert charts.stats.chart_downloads == 1
        assert ("ConfigMap", "direct-web") in objects(first)
        with fetcher(tmp_path / "cache", ca) as charts:  # the server answers 304: the cached digest holds
            second = render(tree, request, charts=charts)
            assert charts.stats.chart_downloads == 0
        assert server.not_modified["/charts/web-1.0.0.tgz"] == 1 and second.input_hash == first.input_hash
        # the archive changes at the same URL: a new ETag, a new digest, a new render
        (src / "values.yaml").write_text("greeting: new\n")
        server.publish(src)
        with fetcher(tmp_path / "cache", ca) as charts:
            third = render(tree, request, charts=charts)
            assert charts.stats.chart_downloads == 1
        assert third.input_hash != first.input_hash
        assert objects(third)[("ConfigMap", "direct-web")]["data"]["greeting"] == "new"
        # an index repository's index.yaml is not downloaded again while unchanged either
        indexed = mapped(tmp_path, {"chart": "web", "repo": server.url, "version": "1.0.0"})
        for _ in range(2):
            with fetcher(tmp_path / "cache", ca) as charts:
                render(indexed, request, charts=charts)
        assert server.hits["/charts/index.yaml"] == 2 and server.not_modified["/charts/index.yaml"] == 1
    finally:
        server.stop()


def test_a_fleet_yaml_chart_from_a_helm_repository(
    tmp_path: Path, ca: LocalCA, server: ChartRepoServer
) -> None:
    server.publish(make_chart(tmp_path / "src", "web", "1.0.0"))
    d = tmp_path / "tree" / "fleet" / "web"
    d.mkdir(parents=True)
    (d / "fleet.yaml").write_text(
        yaml.safe_dump(
            {
                "defaultNamespace": "guestbook",
                "helm": {
                    "chart": "web",
                    "repo": server.url,
                    "version": "1.0.0",
                    "releaseName": "guest",
                    "values": {"greeting": "from fleet.yaml"},
                },
            }
        )
    )
    with fetcher(tmp_path / "cache", ca) as charts:
        result = render(tmp_path / "tree", RenderRequest(path="fleet/web", cluster=EU), charts=charts)
    cm = objects(result)[("ConfigMap", "guest-web")]
    assert cm["metadata"]["namespace"] == "guestbook"
    assert cm["data"]["release"] == "guest" and cm["data"]["greeting"] == "from fleet.yaml"


# ---------------------------------------------------------------------------------------- dependencies


def test_vendored_file_and_repository_dependencies(
    tmp_path: Path, ca: LocalCA, server: ChartRepoServer
) -> None:
    server.publish(make_chart(tmp_path / "src", "cache", "2.1.0"))
    root = tmp_path / "tree"
    make_chart(root / "charts", "lib", "0.1.0")  # a sibling chart named by file://
    vendored = make_chart(tmp_path / "vendor-src", "vendored", "0.2.0")
    app = make_chart(
        root / "charts",
        "app",
        "1.0.0",
        dependencies=[
            {"name": "vendored", "version": "0.2.0", "repository": "https://charts.invalid"},
            {"name": "lib", "version": "0.1.0", "repository": "file://../lib"},
        ],
    )
    package(vendored, app / "charts")  # vendored in charts/ as helm dependency build leaves it
    request = RenderRequest(path="charts/app", cluster=EU, namespace="deps", release_name="rel")
    tree = SourceTree(root)
    result = render(tree, request)  # no fetcher needed: charts/ and file:// are in the repository
    names = {name for (_, name) in objects(result)}
    assert names == {"rel-app", "rel-lib", "rel-vendored"}
    assert {o.namespace for o in result.objects} == {"deps"}
    sources = {o.name: o.source for o in result.objects}
    assert sources["rel-lib"] == "charts/app/charts/lib/templates/cm.yaml"
    # the file:// chart is an input: changing it changes the hash
    before = compute_input_hash(SourceTree(root), request)
    (root / "charts/lib/values.yaml").write_text("greeting: changed\n")
    assert compute_input_hash(SourceTree(root), request) != before

    # a dependency from a repository is fetched through the cache (Chart.lock's version wins)
    (app / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "app",
                "version": "1.0.0",
                "dependencies": [{"name": "cache", "version": "^2.0.0", "repository": server.url}],
            }
        )
    )
    (app / "Chart.lock").write_text(
        yaml.safe_dump(
            {
                "dependencies": [{"name": "cache", "version": "2.1.0", "repository": server.url}],
                "digest": "sha256:x",
            }
        )
    )
    for f in (app / "charts").iterdir():
        f.unlink()
    with pytest.raises(ChartError, match=r"network_required: dependency 'cache' from .* no chart fetcher"):
        render(SourceTree(root), request)
    with fetcher(tmp_path / "cache", ca) as charts:
        result = render(SourceTree(root), request, charts=charts)
        assert charts.stats.chart_downloads == 1
    assert {name for (_, name) in objects(result)} == {"rel-app", "rel-cache"}
    assert not (app / "charts" / "cache-2.1.0.tgz").exists()  # the repository's tree is never written
