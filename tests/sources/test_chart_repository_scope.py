"""Chart repository credentials are scoped to cluster groups (issue 15), as Argo CD scopes repository
credentials to a project and Flux to a namespace: a mapping of a group outside a repository's
cluster_groups renders as if no credentials were stored, so another team's private chart fails with
'credentials not available to this mapping's group' and the password is never sent for it; group-scoped
admins manage only chart repositories of groups they administer."""

from __future__ import annotations

from base64 import b64decode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.access.models import RoleBinding
from fleet.sources.charts import RepoCredentials
from fleet.sources.models import ChartRepository, PathMapping, RenderedManifest
from fleet.sources.services import fetch_repository
from fleet.sources.services.charts import CredentialTable
from tests.chart_servers import ChartRepoServer, LocalCA, make_chart
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
SECRET = "s3cret-robot-password"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def private(tmp_path: Path, ca: LocalCA, settings: Any) -> Iterator[ChartRepoServer]:
    settings.FLEETGATE_CHART_CACHE = tmp_path / "chart-cache"
    srv = ChartRepoServer(tmp_path / "served", ca, auth=("robot", SECRET))
    srv.publish(make_chart(tmp_path / "src", "payroll", "1.0.0"))
    yield srv
    srv.stop()


def mapping(repo: Any, name: str, group: Any, server: ChartRepoServer) -> PathMapping:
    return PathMapping.objects.create(repository=repo, name=name, path="values", cluster_group=group,
                                      renderer="helm", helm_chart="payroll", helm_repo=server.url,
                                      helm_version="1.0.0")


def rows(m: PathMapping) -> list[RenderedManifest]:
    return list(RenderedManifest.objects.filter(mapping=m, commit__sha=m.repository.head_sha))


def test_another_groups_mapping_cannot_render_the_private_chart(
    origin: Any, make_repository: Any, fleet: dict[str, Any], private: ChartRepoServer, ca: LocalCA,
    settings: Any,
) -> None:
    # the CA trusted for every repository, so that the withheld group's anonymous request reaches the server
    # (the repository's own ca_bundle is not lent to it: test_a_withheld_repository_lends_no_ca_bundle)
    settings.FLEETGATE_CHART_CA_FILE = str(ca.ca_file)
    charts = ChartRepository.objects.create(name="payroll-charts", url=private.url, username="robot",
                                            password=SECRET, ca_bundle=ca.ca_pem)
    charts.cluster_groups.set([fleet["prod"]])
    origin.commit("values", {"values/README.md": "values\n"})
    repo = make_repository(origin)
    own = mapping(repo, "payroll", fleet["prod"], private)
    # another team's repository author maps the same private chart to their own group
    intruder = mapping(repo, "steal", fleet["staging"], private)
    fetch_repository(repo)
    repo.refresh_from_db()

    assert {r.cluster.name for r in rows(own)} == {"eu-1", "us-1"}
    assert all(r.status == "ok" for r in rows(own)), [r.error_message for r in rows(own)]
    [refused] = rows(intruder)
    assert refused.status == "failed"
    assert "auth_failed" in refused.error_message
    assert "credentials not available to this mapping's group" in refused.error_message
    assert "payroll-charts" in refused.error_message and SECRET not in refused.error_message
    # the password went out only for the prod mapping: every request without it was the intruder's
    sent = [b64decode(h[6:]).decode() for h in private.auth_headers if h.startswith("Basic ")]
    assert sent and set(sent) == {f"robot:{SECRET}"}
    assert "" in private.auth_headers  # the staging mapping asked anonymously, and was refused

    # once the repository serves staging too (or every group), the same mapping renders
    charts.cluster_groups.add(fleet["staging"])
    origin.commit("again", {"values/README.md": "again\n"})
    fetch_repository(repo)
    repo.refresh_from_db()
    assert [r.status for r in rows(intruder)] == ["ok"], [r.error_message for r in rows(intruder)]


def test_credentials_go_to_the_longest_prefix_available_to_the_group(fleet: dict[str, Any]) -> None:
    ChartRepository.objects.create(name="host", url="oci://registry.example.com", username="all")
    team = ChartRepository.objects.create(name="team", url="oci://registry.example.com/team",
                                          username="team", ca_bundle="PEM")
    team.cluster_groups.set([fleet["prod"]])
    prod, staging = CredentialTable(group_id=fleet["prod"].pk), CredentialTable(group_id=fleet["staging"].pk)
    assert (prod("oci://registry.example.com/team/web") or RepoCredentials()).username == "team"
    # staging: the team's prefix is not for it; the host-wide entry (every group's) is
    assert (staging("oci://registry.example.com/team/web") or RepoCredentials()).username == "all"
    ChartRepository.objects.filter(name="host").delete()
    staging = CredentialTable(group_id=fleet["staging"].pk)
    withheld = staging("oci://registry.example.com/team/web")
    # nor its CA bundle: a group's admin must not make other groups trust a CA for a host they use
    assert withheld == RepoCredentials(withheld="team")
    assert staging("oci://registry.example.com/other") is None
    # the same repository however the URL is written: default port, case, slashes, dot segments, escapes
    for same in ("oci://registry.example.com:443/team/web", "OCI://Registry.Example.COM/team//web/",
                 "oci://registry.example.com./other/../team/./web", "oci://registry.example.com/te%61m/web"):
        assert staging(same) == withheld, same
        assert (prod(same) or RepoCredentials()).username == "team", same
    assert staging("oci://registry.example.com:5000/team/web") is None
    assert staging("oci://registry.example.com/teams/web") is None


def client_for(token_client: Any, group: Any, role: str = "cluster-admin") -> Any:
    user = UserFactory(username=f"{role}-{group.name}")
    RoleBinding.objects.create(user=user, role=role, scope=group)
    return token_client(user)


def test_group_admins_manage_only_chart_repositories_of_their_groups(
    fleet: dict[str, Any], token_client: Any, admin_client: Any,
) -> None:
    staging, prod = fleet["staging"], fleet["prod"]
    client = client_for(token_client, staging)
    body = {"name": "team", "url": "https://charts.example.com/team", "username": "u", "password": "pw"}
    # no groups would lend the credentials to every group: only a role on all clusters
    answer = client.post("/api/chart-repositories/", body, format="json")
    assert answer.status_code == 403, answer.json()
    assert "only a role on all clusters" in answer.json()["detail"]
    # a group it does not manage (nor see) is refused like any invisible reference
    answer = client.post("/api/chart-repositories/", {**body, "cluster_groups": [prod.pk]}, format="json")
    assert answer.status_code == 400 and "cluster_groups" in answer.json()
    assert not ChartRepository.objects.exists()
    answer = client.post("/api/chart-repositories/", {**body, "cluster_groups": [staging.pk]}, format="json")
    assert answer.status_code == 201, answer.json()
    own = answer.json()["id"]
    assert answer.json()["cluster_groups"] == [staging.pk]
    # it cannot widen its own repository to every group
    answer = client.patch(f"/api/chart-repositories/{own}/", {"cluster_groups": []}, format="json")
    assert answer.status_code == 403
    assert list(ChartRepository.objects.get(pk=own).cluster_groups.all()) == [staging]

    # one serving staging and prod (set by an admin on all clusters): seen, but neither changed nor deleted
    shared = admin_client.post("/api/chart-repositories/", {
        "name": "shared", "url": "https://charts.example.com/shared", "cluster_groups": [staging.pk, prod.pk],
    }, format="json")
    assert shared.status_code == 201, shared.json()
    url = f"/api/chart-repositories/{shared.json()['id']}/"
    assert client.get(url).status_code == 200
    answer = client.patch(url, {"description": "mine now"}, format="json")
    assert answer.status_code == 403 and "prod" in answer.json()["detail"]
    assert client.delete(url).status_code == 403
    assert ChartRepository.objects.filter(name="shared", description="").exists()
    # a prod-only repository is not even visible to staging's admin
    prod_only = admin_client.post("/api/chart-repositories/", {
        "name": "prod-only", "url": "https://charts.example.com/prod", "cluster_groups": [prod.pk],
    }, format="json").json()["id"]
    assert client.get(f"/api/chart-repositories/{prod_only}/").status_code == 404
    listed = {r["name"] for r in client.get("/api/chart-repositories/").json()["results"]}
    assert listed == {"team", "shared"}
    # staging's viewer sees its group's repository and changes nothing
    viewer = client_for(token_client, staging, "viewer")
    assert viewer.patch(f"/api/chart-repositories/{own}/", {"description": "x"},
                        format="json").status_code == 403


def test_a_cached_chart_pinned_by_digest_is_not_served_to_a_withheld_group(
    tmp_path: Path, private: ChartRepoServer, ca: LocalCA,
) -> None:
    from fleet.sources.charts import ChartError, ChartFetcher, ChartSpec

    cache = tmp_path / "cache"
    allowed = RepoCredentials("robot", SECRET, ca.ca_pem)
    with ChartFetcher(cache, credentials=lambda url: allowed) as charts:
        resolved = charts.resolve(ChartSpec(chart="payroll", repo=private.url, version="1.0.0"))
        charts.fetch(resolved)
    pinned = ChartSpec(chart="payroll", repo=private.url, version="1.0.0", digest=resolved.digest)
    # a group allowed the credentials resolves the pin from the cache, without the network
    before = len(private.auth_headers)
    with ChartFetcher(cache, credentials=lambda url: allowed) as charts:
        assert charts.resolve(pinned).digest == resolved.digest
    assert len(private.auth_headers) == before
    # a group whose credentials are withheld is sent to the repository, anonymously, and refused
    withheld = RepoCredentials(ca_bundle=ca.ca_pem, withheld="payroll-charts")
    with ChartFetcher(cache, credentials=lambda url: withheld) as charts, \
            pytest.raises(ChartError, match="credentials not available to this mapping's group"):
        charts.resolve(pinned)
    assert private.auth_headers[before:] == [""]


@pytest.fixture
def public(tmp_path: Path, ca: LocalCA) -> Iterator[ChartRepoServer]:
    srv = ChartRepoServer(tmp_path / "public", ca)
    srv.publish(make_chart(tmp_path / "public-src", "web", "2.0.0"))
    yield srv
    srv.stop()


def test_the_cache_serves_an_archive_only_to_the_credentials_that_fetched_it(
    fleet: dict[str, Any], private: ChartRepoServer, public: ChartRepoServer, ca: LocalCA, settings: Any,
) -> None:
    """The chart cache is keyed by digest, but records which credentials fetched each archive: a group whose
    credentials are withheld is never served a private archive from it, however it writes the URL (a variant
    of the repository's, or any other URL with the digest pinned); the group allowed them is, without the
    network; an archive fetched anonymously is every group's."""
    from fleet.sources.charts import ChartError, ChartSpec
    from fleet.sources.services.charts import build_fetcher

    settings.FLEETGATE_CHART_CA_FILE = str(ca.ca_file)
    prod, staging = fleet["prod"].pk, fleet["staging"].pk
    charts = ChartRepository.objects.create(name="payroll-charts", url=private.url, username="robot",
                                            password=SECRET)
    charts.cluster_groups.set([fleet["prod"]])
    with build_fetcher(group_id=prod, offline=False) as fetcher:
        resolved = fetcher.resolve(ChartSpec(chart="payroll", repo=private.url, version="1.0.0"))
        archive = fetcher.fetch(resolved)
    assert archive.is_file() and fetcher.stats.chart_downloads == 1
    requests = len(private.auth_headers)

    # the allowed group: a pinned digest, from the cache, without a request (offline: it could not make one)
    pinned = ChartSpec(chart="payroll", repo=private.url, version="1.0.0", digest=resolved.digest)
    with build_fetcher(group_id=prod, offline=True) as fetcher:
        assert fetcher.fetch(fetcher.resolve(pinned)) == archive
        assert fetcher.stats.cache_hits == 1 and fetcher.stats.chart_downloads == 0

    # the withheld group, the repository's URL written otherwise: recognised, asked anonymously, refused
    scheme, rest = private.url.split("://", 1)
    host, path = rest.split("/", 1)
    for variant in (f"{scheme.upper()}://{host.upper()}//{path}/./", f"{scheme}://{host}/x/../{path}/"):
        spec = ChartSpec(chart="payroll", repo=variant, version="1.0.0", digest=resolved.digest)
        with build_fetcher(group_id=staging, offline=False) as fetcher, \
                pytest.raises(ChartError, match="credentials not available to this mapping's group"):
            fetcher.fetch(fetcher.resolve(spec))
        assert fetcher.stats.cache_hits == 0
    assert private.auth_headers[requests:] == ["", ""]
    # any other URL with the digest pinned: not served from the cache either (offline: it needs the network)
    for other in ("https://unrelated.example.org/x", public.url):
        spec = ChartSpec(chart="payroll", repo=other, version="1.0.0", digest=resolved.digest)
        with build_fetcher(group_id=staging, offline=True) as fetcher, \
                pytest.raises(ChartError, match="network_required"):
            fetcher.resolve(spec)
        # nor by fetch, given a resolution naming the digest
        with build_fetcher(group_id=staging, offline=True) as fetcher, \
                pytest.raises(ChartError, match="network_required"):
            fetcher.fetch(type(resolved)(spec, "payroll", "1.0.0", resolved.digest, f"{other}/payroll.tgz"))
        assert fetcher.stats.cache_hits == 0
    # online, the unrelated (public) repository has no such chart: nothing private comes back
    spec = ChartSpec(chart="payroll", repo=public.url, version="1.0.0", digest=resolved.digest)
    with build_fetcher(group_id=staging, offline=False) as fetcher, \
            pytest.raises(ChartError, match="not_found"):
        fetcher.fetch(fetcher.resolve(spec))
    assert len(private.auth_headers) == requests + 2

    # a public chart fetched anonymously by staging is served from the cache to prod, even where prod holds
    # credentials (of its own) for that repository
    mirror = ChartRepository.objects.create(name="public-mirror", url=public.url, username="m", password="p")
    mirror.cluster_groups.set([fleet["prod"]])
    with build_fetcher(group_id=staging, offline=False) as fetcher:
        web = fetcher.resolve(ChartSpec(chart="web", repo=public.url, version="2.0.0"))
        fetcher.fetch(web)
    web_pinned = ChartSpec(chart="web", repo=public.url, version="2.0.0", digest=web.digest)
    for group in (prod, staging):
        with build_fetcher(group_id=group, offline=True) as fetcher:
            assert fetcher.fetch(fetcher.resolve(web_pinned)).is_file()
            assert fetcher.stats.cache_hits == 1


def test_a_withheld_repository_lends_no_ca_bundle(
    fleet: dict[str, Any], private: ChartRepoServer, ca: LocalCA,
) -> None:
    """A chart repository's CA bundle is trusted only for the mappings of the groups it serves: another
    group's request to that host is verified against the system's CAs alone (here: refused)."""
    from fleet.sources.charts import ChartError, ChartSpec
    from fleet.sources.services.charts import build_fetcher

    charts = ChartRepository.objects.create(name="payroll-charts", url=private.url, ca_bundle=ca.ca_pem)
    charts.cluster_groups.set([fleet["prod"]])
    spec = ChartSpec(chart="payroll", repo=private.url, version="1.0.0")
    with build_fetcher(group_id=fleet["staging"].pk, offline=False) as fetcher, \
            pytest.raises(ChartError, match=r"TLS verification failed.*payroll-charts.*nor its CA bundle"):
        fetcher.resolve(spec)
    assert private.auth_headers == []
