"""Rendering through the service: affected mappings, per-cluster results, reuse, errors."""

from __future__ import annotations

from typing import Any

from clusters.models import Cluster
from fleet.audit.models import AuditEvent
from fleet.sources.choices import CommitStatus, RenderStatus
from fleet.sources.models import Commit, MappingRender, RenderedManifest
from fleet.sources.services import fetch_repository
from tests.sources.origin import configmap

REGIONAL = configmap("web", "region: ${cluster.labels.region}\n  cluster: ${cluster.name}")


def renders_at(sha: str) -> dict[str, MappingRender]:
    rows = MappingRender.objects.filter(commit__sha=sha).select_related("mapping")
    return {r.mapping.name: r for r in rows}


def test_first_fetch_renders_every_mapping_per_cluster_with_substitution(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    sha = origin.commit("initial", {"apps/web/cm.yaml": REGIONAL, "apps/api/cm.yaml": configmap("api")})
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    make_mapping(repo, "api", "apps/api", fleet["staging"])

    outcome = fetch_repository(repo)
    assert outcome.ok
    assert sorted((r.mapping, r.status, r.reason, r.clusters) for r in outcome.renders) == [
        ("api", "rendered", "new", 1), ("web", "rendered", "new", 2)]
    rows = {m.cluster.name: m for m in RenderedManifest.objects.filter(mapping=web).select_related("cluster")}
    assert set(rows) == {"eu-1", "us-1"}
    assert rows["eu-1"].resources[0]["object"]["data"] == {"region": "eu", "cluster": "eu-1"}
    assert rows["us-1"].resources[0]["object"]["data"] == {"region": "us", "cluster": "us-1"}
    assert rows["eu-1"].resources[0]["source"] == "apps/web/cm.yaml"
    assert rows["eu-1"].input_hash != rows["us-1"].input_hash
    assert rows["eu-1"].object_count == 1 and rows["eu-1"].status == "ok"
    web.refresh_from_db()
    assert web.last_rendered_sha == sha and web.last_render_attempt_sha == sha and web.config_fingerprint
    assert Commit.objects.get(sha=sha).status == CommitStatus.RENDERED
    ok = AuditEvent.objects.filter(action="render.ok").order_by("sequence")
    assert ok.count() == 2  # one per (commit, mapping), not per cluster
    web_event = ok.get(scope_group_name="prod")
    assert web_event.after["clusters"] == 2 and web_event.after["objects"] == 2


def test_a_commit_touching_one_path_rerenders_only_that_mapping(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web"), "apps/api/cm.yaml": configmap("api")})
    repo = make_repository(origin)
    make_mapping(repo, "web", "apps/web", fleet["prod"])
    make_mapping(repo, "api", "apps/api", fleet["prod"])
    fetch_repository(repo)

    touch_api = origin.commit("api change", {"apps/api/cm.yaml": configmap("api", "value: changed")})
    docs_only = origin.commit("docs", {"README.md": "docs"})
    outcome = fetch_repository(repo)
    assert [(r.mapping, r.commit) for r in outcome.renders] == [("api", touch_api)]
    assert set(renders_at(touch_api)) == {"api"}
    assert renders_at(docs_only) == {}
    assert Commit.objects.get(sha=docs_only).status == CommitStatus.SKIPPED
    assert Commit.objects.get(sha=touch_api).status == CommitStatus.RENDERED


def test_a_change_of_mapping_values_rerenders_it_without_a_commit(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    sha = origin.commit("initial", {
        "apps/web/cm.yaml": configmap("web", "size: ${values.size:-small}"),
        "apps/api/cm.yaml": configmap("api"),
    })
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    make_mapping(repo, "api", "apps/api", fleet["prod"])
    fetch_repository(repo)
    assert RenderedManifest.objects.filter(mapping=web).first().resources[0]["object"]["data"] == {
        "size": "small"}

    web.refresh_from_db()
    web.values = {"size": "large"}
    web.save()
    outcome = fetch_repository(repo)  # no new commit: the head is rendered again for the changed mapping
    assert [(r.mapping, r.reason, r.commit) for r in outcome.renders] == [("web", "config", sha)]
    rows = RenderedManifest.objects.filter(mapping=web, commit__sha=sha)
    assert rows.count() == 2
    assert {r.resources[0]["object"]["data"]["size"] for r in rows} == {"large"}
    assert fetch_repository(repo).renders == ()  # nothing changed since


def test_a_new_cluster_in_the_group_gets_its_render(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web")})
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    fetch_repository(repo)
    Cluster.objects.create(name="ap-1", api_url="https://ap-1:6443", token="x-token-value",
                           labels={"env": "prod", "region": "ap"})
    outcome = fetch_repository(repo)
    assert [(r.mapping, r.reason, r.clusters, r.rendered, r.reused) for r in outcome.renders] == [
        ("web", "config", 3, 0, 3)]
    assert sorted(RenderedManifest.objects.filter(mapping=web).values_list("cluster__name", flat=True)) == [
        "ap-1", "eu-1", "us-1"]


def test_identical_inputs_are_rendered_once_and_reused(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web")})  # no ${...}: same for every cluster
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    outcome = fetch_repository(repo)
    (first,) = outcome.renders
    assert (first.rendered, first.reused) == (1, 1)
    rows = list(RenderedManifest.objects.filter(mapping=web).order_by("cluster__name"))
    assert rows[0].input_hash == rows[1].input_hash
    assert [r.reused for r in rows] == [False, True]
    assert rows[0].resources == rows[1].resources

    # touch the path, then revert it: the reverted content has the first commit's hash -> copied, not rendered
    origin.commit("change", {"apps/web/cm.yaml": configmap("web", "value: other")})
    revert = origin.commit("revert", {"apps/web/cm.yaml": configmap("web")})
    outcome = fetch_repository(repo)
    assert [(r.rendered, r.reused) for r in outcome.renders] == [(1, 1), (0, 2)]
    reverted = RenderedManifest.objects.filter(mapping=web, commit__sha=revert)
    assert {r.input_hash for r in reverted} == {rows[0].input_hash}
    assert all(r.reused for r in reverted)
    assert MappingRender.objects.get(mapping=web, commit__sha=revert).rendered_count == 0


def test_a_render_error_is_recorded_with_file_and_line_and_nothing_renderable_is_stored(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web"), "apps/api/cm.yaml": configmap("api")})
    repo = make_repository(origin)
    web = make_mapping(repo, "web", "apps/web", fleet["prod"])
    make_mapping(repo, "api", "apps/api", fleet["prod"])
    fetch_repository(repo)

    bad = origin.commit("break web", {
        "apps/web/cm.yaml": configmap("web"),
        "apps/web/broken.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: [unclosed\n",
        "apps/api/cm.yaml": configmap("api", "value: changed"),
    })
    outcome = fetch_repository(repo)
    by_name = {r.mapping: r for r in outcome.renders}
    assert by_name["api"].status == "rendered"
    failed = by_name["web"]
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["file"] == "apps/web/broken.yaml" and failed.error["line"] is not None
    mr = MappingRender.objects.get(mapping=web, commit__sha=bad)
    assert mr.status == RenderStatus.FAILED and mr.error_file == "apps/web/broken.yaml" and mr.error_line
    assert not RenderedManifest.objects.filter(mapping=web, commit__sha=bad, status="ok").exists()
    assert Commit.objects.get(sha=bad).status == CommitStatus.FAILED
    web.refresh_from_db()
    assert web.last_rendered_sha != bad and web.last_render_attempt_sha == bad
    event = AuditEvent.objects.get(action="render.failed")
    assert "apps/web/broken.yaml:" in event.message and event.after["error"]["file"] == "apps/web/broken.yaml"

    fixed = origin.commit("fix web", {"apps/web/broken.yaml": None})
    outcome = fetch_repository(repo)
    assert [(r.mapping, r.status) for r in outcome.renders] == [("web", "rendered")]
    web.refresh_from_db()
    assert web.last_rendered_sha == fixed


def test_a_glob_mapping_renders_every_matching_directory_and_fails_when_none_match(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    origin.commit("initial", {"apps/a/cm.yaml": configmap("a"), "apps/b/cm.yaml": configmap("b")})
    repo = make_repository(origin)
    every = make_mapping(repo, "every", "apps/*", fleet["staging"])
    nothing = make_mapping(repo, "nothing", "envs/*", fleet["staging"])
    outcome = fetch_repository(repo)
    by_name = {r.mapping: r for r in outcome.renders}
    assert by_name["every"].status == "rendered" and by_name["every"].objects == 2
    row = RenderedManifest.objects.get(mapping=every)
    assert [o["source"] for o in row.resources] == ["apps/a/cm.yaml", "apps/b/cm.yaml"]
    assert by_name["nothing"].status == "failed"
    assert "matches no directory" in (by_name["nothing"].error or {})["message"]
    assert not RenderedManifest.objects.filter(mapping=nothing, status="ok").exists()


def test_kustomize_base_outside_the_path_is_watched(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    origin.commit("initial", {
        "base/cm.yaml": configmap("base"),
        "base/kustomization.yaml": "resources:\n- cm.yaml\n",
        "overlays/prod/kustomization.yaml": "resources:\n- ../../base\nnamePrefix: prod-\n",
        "other/cm.yaml": configmap("other"),
    })
    repo = make_repository(origin)
    prod = make_mapping(repo, "prod", "overlays/prod", fleet["prod"])
    make_mapping(repo, "other", "other", fleet["prod"])
    fetch_repository(repo)
    prod.refresh_from_db()
    assert prod.watched_paths == ["base"]
    assert RenderedManifest.objects.filter(mapping=prod).first().resources[0]["name"] == "prod-base"

    changed = origin.commit("base change", {"base/cm.yaml": configmap("base", "value: new")})
    outcome = fetch_repository(repo)
    assert [(r.mapping, r.commit, r.reason) for r in outcome.renders] == [("prod", changed, "paths")]

    # a revert is copied from the first render (same input hash) and the base stays watched
    reverted = origin.commit("base revert", {"base/cm.yaml": configmap("base")})
    (r,) = fetch_repository(repo).renders
    assert (r.commit, r.rendered, r.reused) == (reverted, 0, 2)
    prod.refresh_from_db()
    assert prod.watched_paths == ["base"]
    again = origin.commit("base again", {"base/cm.yaml": configmap("base", "value: again")})
    assert [(r.mapping, r.commit) for r in fetch_repository(repo).renders] == [("prod", again)]


def test_failed_export_or_missing_group_members(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    from clusters.models import ClusterGroup

    empty = ClusterGroup.objects.create(name="empty", selector={"matchLabels": {"env": "none"}})
    origin.commit("initial", {"apps/web/cm.yaml": configmap("web")})
    repo = make_repository(origin)
    make_mapping(repo, "web", "apps/web", empty)
    (r,) = fetch_repository(repo).renders
    assert (r.status, r.clusters) == ("skipped", 0)
    assert AuditEvent.objects.filter(action="render.skipped").count() == 1
