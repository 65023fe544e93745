"""Server-side request forgery through URLs users give Fleetgate: repository URLs (git fetch), cluster API
server URLs (the Kubernetes client) and Helm chart repository URLs (index repositories over HTTP(S) and OCI
registries, which fleet/sources/charts fetches while rendering: a stored chart repository, or helm.repo /
helm.chart of a fleetgate.yaml or fleet.yaml).  Refused when they point at link-local addresses or cloud
metadata services, both when they are saved and when a connection is made (DNS answers that change after
saving, redirects); loopback and private addresses stay allowed by default (sandbox clusters, clusters and
chart repositories on private networks), and are refused too once FLEETGATE_URL_DENY_CIDRS lists them.

Peers had this class: Argo CD accepted repository and Helm repository URLs that made its repo-server
contact internal endpoints (several 2022-2024 advisories about repo-server requests to user-chosen URLs);
Kyverno's apiCall/service context let policies make the controller call arbitrary in-cluster or metadata
URLs; Rancher's cluster registration accepted API endpoints the server then called on the user's behalf.
Cloud metadata at 169.254.169.254 / fd00:ec2::254 / metadata.google.internal is the usual target.

Covered here: validation of every spelling of a metadata address (decimal, hex, IPv4-mapped IPv6, trailing
dot, metadata host names) for repositories, clusters and chart repositories; the FLEETGATE_URL_DENY_CIDRS
setting, for all three when saved and when connecting; the connect-time check (a host that was allowed when
saved and resolves into a denied network later is never contacted, over git-over-HTTP, the Kubernetes client
and the chart fetcher's HTTP and OCI clients); redirects (git follows none; the Kubernetes client follows
none either, and each connection it makes is checked; the chart fetcher follows at most 3, each checked);
rendering without a chart fetcher contacts no chart repository and no remote Kustomize base; and URL schemes
git must never run (ext::, option injection).  The chart fetcher's own tests (limits, TLS, credentials,
archive digests) are in tests/sources/test_helm_repository.py and test_helm_oci.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from clusters import services as cluster_services
from clusters.models import Cluster
from clusters.sandbox import SandboxCluster, SandboxServer
from fleet.core.urlguard import DEFAULT_DENY_CIDRS
from fleet.sources.models import Repository
from fleet.sources.services import check_connection, fetch_repository
from tests.factories import ClusterFactory
from tests.sources.origin import (  # noqa: F401 - fixtures used by the tests below
    _git_cache,
    git_http,
    origin,
)

pytestmark = pytest.mark.django_db

LOOPBACK = ["127.0.0.0/8", "::1/128"]

METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254./latest/meta-data/",
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one number
    "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",
    "http://0251.0376.0251.0376/latest/meta-data/",  # octal
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/repo.git",
    "http://169.254.10.20:8080/repo.git",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.google.internal./computeMetadata/v1/",
    "https://metadata.goog/repo.git",
]


class Recorder:
    """An HTTP server that records every request and answers 404 (or a redirect, with ``location``)."""

    def __init__(self, host: str = "127.0.0.1", location: str | None = None) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                recorder.requests.append(self.path)
                if recorder.location:
                    self.send_response(302)
                    self.send_header("Location", recorder.location + self.path)
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

        self.location = location
        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for r in made:
        r.close()


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer, request: pytest.FixtureRequest) -> Iterator[SandboxCluster]:
    name = f"ssrf-{abs(hash(request.node.name)) % 10**8}"
    cluster = sandbox_server.add_cluster(name, token="sandbox-token-value", own_port=True)
    yield cluster
    sandbox_server.remove_cluster(name)


def repo_body(url: str) -> dict[str, Any]:
    return {"name": "platform", "url": url, "branch": "main", "auth_method": "none"}


def cluster_body(url: str) -> dict[str, Any]:
    return {"name": "prod-eu-1", "api_url": url, "auth_method": "token", "token": "s3cr3t-token-value"}


# --------------------------------------------------------------------------- when a URL is saved


@pytest.mark.parametrize("url", METADATA_URLS)
def test_repository_urls_to_metadata_or_link_local_are_refused(admin_client: Any, url: str) -> None:
    response = admin_client.post("/api/repositories/", repo_body(url), format="json")
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["url"])
    assert "denied network" in message or "metadata" in message
    assert not Repository.objects.exists()


@pytest.mark.parametrize("url", [
    "ssh://git@169.254.169.254/team/repo.git",
    "git@169.254.169.254:team/repo.git",
    "git@metadata.google.internal:team/repo.git",
])
def test_ssh_repository_urls_to_metadata_are_refused(admin_client: Any, url: str) -> None:
    response = admin_client.post("/api/repositories/", repo_body(url), format="json")
    assert response.status_code == 400, response.content
    assert "url" in response.json()


@pytest.mark.parametrize("url", [url.replace("/latest/meta-data/", "") for url in METADATA_URLS[:8]])
def test_cluster_api_urls_to_metadata_are_refused(admin_client: Any, url: str) -> None:
    response = admin_client.post("/api/clusters/", cluster_body(url), format="json")
    assert response.status_code == 400, response.content
    assert "denied network" in " ".join(response.json()["api_url"])
    assert not Cluster.objects.exists()


def test_a_kubeconfig_whose_server_is_a_metadata_address_is_refused(admin_client: Any) -> None:
    kubeconfig = """
apiVersion: v1
kind: Config
current-context: c
clusters:
- name: a
  cluster: {server: "https://169.254.169.254:6443"}
users:
- name: u
  user: {token: "kubeconfig-s3cr3t-token"}
contexts:
- name: c
  context: {cluster: a, user: u}
"""
    body = {"name": "from-kubeconfig", "auth_method": "kubeconfig", "kubeconfig": kubeconfig}
    response = admin_client.post("/api/clusters/", body, format="json")
    assert response.status_code == 400, response.content
    assert "denied network" in " ".join(response.json()["kubeconfig"])
    assert "kubeconfig-s3cr3t-token" not in response.content.decode()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/team/repo.git",
    "http://localhost:3000/team/repo.git",
    "https://10.20.30.40/team/repo.git",
    "https://192.168.1.10/team/repo.git",
    "https://[fd12:3456::1]/team/repo.git",
    "https://git.internal.example/team/repo.git",  # does not resolve here: checked again at fetch
])
def test_loopback_and_private_repository_urls_stay_allowed(admin_client: Any, url: str) -> None:
    response = admin_client.post("/api/repositories/", repo_body(url), format="json")
    assert response.status_code == 201, response.content


def test_loopback_and_private_cluster_urls_stay_allowed(admin_client: Any) -> None:
    for i, url in enumerate(["http://127.0.0.1:6443", "https://10.0.0.5:6443", "https://localhost:6443"]):
        response = admin_client.post("/api/clusters/", {**cluster_body(url), "name": f"c{i}"}, format="json")
        assert response.status_code == 201, response.content


def test_the_deny_list_is_a_setting_and_names_are_resolved_when_saved(
    admin_client: Any, settings: Any
) -> None:
    settings.FLEETGATE_URL_DENY_CIDRS = [*DEFAULT_DENY_CIDRS, *LOOPBACK, "10.0.0.0/8"]
    for url in ("http://localhost:3000/team/repo.git", "https://10.20.30.40/team/repo.git"):
        response = admin_client.post("/api/repositories/", repo_body(url), format="json")
        assert response.status_code == 400, response.content
        assert "denied network" in " ".join(response.json()["url"])
    response = admin_client.post("/api/clusters/", cluster_body("https://localhost:6443"), format="json")
    assert response.status_code == 400
    assert "localhost (127.0.0.1)" in " ".join(response.json()["api_url"]) or "::1" in " ".join(
        response.json()["api_url"])
    # private networks not listed stay allowed
    ok = admin_client.post("/api/repositories/", repo_body("https://192.168.1.10/r.git"), format="json")
    assert ok.status_code == 201, ok.content


@pytest.mark.parametrize("url", [
    "ext::sh -c touch% /tmp/fleetgate-pwned",
    "--upload-pack=touch /tmp/fleetgate-pwned",
    "-oProxyCommand=touch /tmp/fleetgate-pwned",
    "git://169.254.169.254/repo.git",
    "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:11211/stats",
    "ftp://127.0.0.1/repo.git",
    "https://git.example.com/r.git\nHost: evil",
])
def test_schemes_git_must_never_run_are_refused(admin_client: Any, url: str) -> None:
    response = admin_client.post("/api/repositories/", repo_body(url), format="json")
    assert response.status_code == 400, response.content
    assert "url" in response.json()


def test_file_repositories_follow_their_setting(admin_client: Any, settings: Any, tmp_path: Any) -> None:
    url = tmp_path.as_uri()
    assert admin_client.post("/api/repositories/", repo_body(url), format="json").status_code == 201
    settings.FLEETGATE_ALLOW_FILE_REPOSITORIES = False
    response = admin_client.post("/api/repositories/", {**repo_body(url), "name": "other"}, format="json")
    assert response.status_code == 400
    assert "FLEETGATE_ALLOW_FILE_REPOSITORIES" in " ".join(response.json()["url"])


# --------------------------------------------------------------------------- when connecting


def test_git_fetch_checks_the_address_again_when_it_connects(
    origin: Any, git_http: Any, settings: Any  # noqa: F811
) -> None:
    """Saved while ``localhost`` was allowed; resolving into a denied network later (as a rebound DNS name
    would) stops the fetch before git contacts the server."""
    origin.commit("initial")
    server = git_http("fleet", "right-token-123456")
    url = server.url("origin").replace("127.0.0.1", "localhost")
    repo = Repository(name="private", url=url, auth_method="token", username="fleet",
                      token="right-token-123456")
    repo.full_clean()
    repo.save()
    assert fetch_repository(repo).ok  # allowed: loopback is not denied by default
    contacted = len(server.seen_auth)
    assert contacted > 0

    settings.FLEETGATE_URL_DENY_CIDRS = [*DEFAULT_DENY_CIDRS, *LOOPBACK]
    outcome = fetch_repository(repo)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error["code"] == "url_refused"
    assert "denied network" in outcome.error["message"]
    check = check_connection(repo)
    assert not check.ok and check.error is not None and check.error["code"] == "url_refused"
    assert len(server.seen_auth) == contacted  # git never connected
    repo.refresh_from_db()
    assert "denied network" in repo.last_error


def test_git_fetch_follows_no_redirect(origin: Any, recorders: list[Recorder]) -> None:  # noqa: F811
    target = Recorder("127.0.0.2")
    redirector = Recorder("127.0.0.1", location=target.url)
    recorders += [target, redirector]
    repo = Repository.objects.create(name="redirected", url=f"{redirector.url}/origin")
    outcome = fetch_repository(repo)
    assert not outcome.ok
    assert redirector.requests  # git asked the first server
    assert target.requests == []  # and did not follow it elsewhere


def test_cluster_connections_check_the_address_again_when_they_connect(
    sandbox: SandboxCluster, settings: Any
) -> None:
    url = sandbox.url.replace("127.0.0.1", "localhost")
    cluster = ClusterFactory(name=sandbox.name, api_url=url, token="sandbox-token-value")
    cluster.full_clean()
    assert cluster_services.check_cluster(cluster).reachable

    settings.FLEETGATE_URL_DENY_CIDRS = [*DEFAULT_DENY_CIDRS, *LOOPBACK]
    outcome = cluster_services.check_cluster(cluster)
    assert not outcome.reachable
    assert "denied network" in outcome.error
    cluster.refresh_from_db()
    assert cluster.status == "unreachable" and "denied network" in cluster.last_error

    # an IP literal is checked the same way (no DNS involved)
    literal = ClusterFactory(name="literal", api_url=sandbox.url, token="sandbox-token-value")
    assert "denied network" in cluster_services.check_cluster(literal).error


def test_cluster_redirects_to_a_denied_address_are_not_followed(
    settings: Any, recorders: list[Recorder]
) -> None:
    target = Recorder("127.0.0.2")
    redirector = Recorder("127.0.0.1", location=target.url)
    recorders += [target, redirector]
    settings.FLEETGATE_URL_DENY_CIDRS = [*DEFAULT_DENY_CIDRS, "127.0.0.2/32"]
    cluster = ClusterFactory(name="redirects", api_url=redirector.url, token="sandbox-token-value")
    outcome = cluster_services.check_cluster(cluster)
    assert not outcome.reachable
    assert redirector.requests
    assert target.requests == []  # the client answers the 302 itself; a followed hop would be checked
    assert "302" in outcome.error or "denied network" in outcome.error


# --------------------------------------------------------------------------- rendering without a fetcher


def test_rendering_never_contacts_helm_repositories_or_remote_kustomize_bases(
    tmp_path: Any, recorders: list[Recorder]
) -> None:
    """Helm chart repositories (index.yaml, OCI) and remote Kustomize bases are user-chosen URLs too: a render
    without a chart fetcher (``render(..., charts=None)``) refuses a chart dependency that is not vendored,
    and Kustomize never fetches a remote base; neither is contacted.  (With a fetcher, charts are fetched
    through the guard: the chart repository tests below.)"""
    from fleet.sources.render import ClusterContext, RenderError, RenderRequest, render

    server = Recorder("127.0.0.1")
    recorders.append(server)
    chart = tmp_path / "repo" / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "templates" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    kustomize = tmp_path / "repo" / "k"
    kustomize.mkdir()
    ctx = ClusterContext(name="c", labels={}, group="g", repository="r", commit="0" * 40)
    for repository in (server.url + "/charts", "oci://" + server.url.removeprefix("http://") + "/charts",
                       "@" + "local-alias"):
        (chart / "Chart.yaml").write_text(
            "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n"
            f"  - name: sub\n    version: 0.1.0\n    repository: '{repository}'\n")
        with pytest.raises(RenderError) as caught:
            render(tmp_path / "repo", RenderRequest(path="chart", cluster=ctx))
        assert "not vendored" in caught.value.message and "charts/" in caught.value.message
    (kustomize / "kustomization.yaml").write_text(f"resources:\n  - {server.url}/base.yaml\n")
    with pytest.raises(RenderError) as caught:
        render(tmp_path / "repo", RenderRequest(path="k", cluster=ctx))
    assert "needs the network" in caught.value.message
    assert server.requests == []


# --------------------------------------------------------------------------- chart repositories


def chart_tree(root: Any, helm: dict[str, Any]) -> Any:
    """A repository whose apps/web names a chart outside it (fleetgate.yaml helm.chart/repo/version)."""
    import yaml

    directory = root / "tree" / "apps" / "web"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fleetgate.yaml").write_text(yaml.safe_dump({"helm": helm}))
    return root / "tree"


def render_chart(tree: Any) -> Any:
    """Render apps/web with the fetcher a render run gets (settings, stored chart repositories)."""
    from fleet.sources.render import ClusterContext, RenderRequest, render
    from fleet.sources.services.charts import build_fetcher

    ctx = ClusterContext(name="c", labels={}, group="g", repository="r", commit="0" * 40)
    with build_fetcher(offline=False) as charts:
        return render(tree, RenderRequest(path="apps/web", cluster=ctx), charts=charts)


@pytest.mark.parametrize("url", METADATA_URLS)
def test_chart_repository_urls_to_metadata_or_link_local_are_refused(admin_client: Any, url: str) -> None:
    body = {"name": "charts", "url": url}
    response = admin_client.post("/api/chart-repositories/", body, format="json")
    assert response.status_code == 400, response.json()
    assert "url" in response.json()


@pytest.mark.parametrize("helm", [
    {"chart": "web", "repo": "http://169.254.169.254/charts", "version": "1.0.0"},
    {"chart": "web", "repo": "http://[::ffff:169.254.169.254]/charts", "version": "1.0.0"},
    {"chart": "oci://169.254.169.254/charts/web", "version": "1.0.0"},
    {"chart": "http://169.254.169.254/charts/web-1.0.0.tgz"},
])
def test_charts_named_at_metadata_addresses_are_never_fetched(tmp_path: Any, helm: dict[str, Any]) -> None:
    from fleet.sources.charts import ChartError

    with pytest.raises(ChartError) as refused:
        render_chart(chart_tree(tmp_path, helm))
    assert refused.value.code == "refused"
    assert "denied network" in refused.value.message


def test_chart_repositories_follow_the_deny_list_when_saved_and_when_fetched(
    admin_client: Any, settings: Any, tmp_path: Any, recorders: list[Recorder]
) -> None:
    """Loopback chart repositories are allowed by default (contacted: the recorder answers 404) and refused,
    when saved and when fetched, once FLEETGATE_URL_DENY_CIDRS lists loopback: nothing is contacted then."""
    from fleet.sources.charts import ChartError

    server = Recorder("127.0.0.1")
    recorders.append(server)
    host = server.url.removeprefix("http://")
    index = chart_tree(tmp_path / "index",
                       {"chart": "web", "repo": server.url + "/charts", "version": "1.0.0"})
    oci = chart_tree(tmp_path / "oci", {"chart": f"oci://{host}/charts/web", "version": "1.0.0"})
    with pytest.raises(ChartError) as allowed:
        render_chart(index)
    assert allowed.value.code == "not_found" and server.requests == ["/charts/index.yaml"]

    server.requests.clear()
    settings.FLEETGATE_URL_DENY_CIDRS = [*DEFAULT_DENY_CIDRS, *LOOPBACK]
    for url in (server.url + "/charts", f"oci://{host}/charts"):
        response = admin_client.post("/api/chart-repositories/", {"name": "local", "url": url}, format="json")
        assert response.status_code == 400 and "denied network 127.0.0.0/8" in json.dumps(response.json())
    for tree in (index, oci):
        with pytest.raises(ChartError) as refused:
            render_chart(tree)
        assert refused.value.code == "refused" and "denied network 127.0.0.0/8" in refused.value.message
    assert server.requests == []


def test_chart_fetches_check_the_address_again_when_they_connect(
    tmp_path: Any, settings: Any, recorders: list[Recorder]
) -> None:
    """A chart repository saved while ``localhost`` was allowed; resolving into a denied network later (as a
    rebound DNS name would) stops the fetch before the server is contacted, over HTTP and OCI alike."""
    from fleet.sources.charts import ChartError
    from fleet.sources.models import ChartRepository

    server = Recorder("127.0.0.1")
    recorders.append(server)
    host = server.url.removeprefix("http://").replace("127.0.0.1", "localhost")
    stored = ChartRepository(name="local", url=f"http://{host}/charts")
    stored.full_clean()
    stored.save()
    trees = [chart_tree(tmp_path / "index", {"chart": "web", "repo": stored.url, "version": "1.0.0"}),
             chart_tree(tmp_path / "oci", {"chart": f"oci://{host}/charts/web", "version": "1.0.0"})]
    with pytest.raises(ChartError) as allowed:
        render_chart(trees[0])
    assert allowed.value.code == "not_found" and server.requests == ["/charts/index.yaml"]

    settings.FLEETGATE_URL_DENY_CIDRS = [*DEFAULT_DENY_CIDRS, *LOOPBACK]
    for tree in trees:
        with pytest.raises(ChartError) as refused:
            render_chart(tree)
        assert refused.value.code == "refused" and "denied network" in refused.value.message
    assert server.requests == ["/charts/index.yaml"]  # nothing more


def test_chart_fetches_do_not_follow_redirects_to_denied_addresses(
    tmp_path: Any, recorders: list[Recorder]
) -> None:
    from fleet.sources.charts import ChartError

    redirect = Recorder("127.0.0.1", location="http://169.254.169.254")
    recorders.append(redirect)
    tree = chart_tree(tmp_path, {"chart": "web", "repo": redirect.url + "/charts", "version": "1.0.0"})
    with pytest.raises(ChartError) as refused:
        render_chart(tree)
    assert refused.value.code == "refused" and "169.254.0.0/16" in refused.value.message
    assert redirect.requests == ["/charts/index.yaml"]


def test_ssh_fetches_check_the_address_before_ssh_runs(settings: Any) -> None:
    """Over ssh the address is checked before ssh starts (ssh then resolves the name again itself)."""
    repos = [Repository.objects.create(name=f"ssh-{i}", url=url) for i, url in
             enumerate(["ssh://git@localhost:2222/team/repo.git", "git@localhost:team/repo.git"])]
    settings.FLEETGATE_URL_DENY_CIDRS = [*DEFAULT_DENY_CIDRS, *LOOPBACK]
    for repo in repos:
        outcome = fetch_repository(repo)
        assert outcome.error is not None and outcome.error["code"] == "url_refused", outcome.error
