"""A commit touching one of 200 mapped paths re-renders and rolls out that mapping only (issue 19), and the
fetch that handles it (what the webhook's and the poller's task run) costs the same number of queries with
200 mappings as with 20. A real git repository made by the test; the rollouts' tasks are queued, not run."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet.rollouts import dispatch
from fleet.rollouts.models import Rollout
from fleet.sources.models import MappingRender, PathMapping
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import GitRepo, configmap, make_group, make_repository

pytestmark = pytest.mark.django_db(transaction=True)


def mapped_repository(path: Any, name: str, count: int, group: Any) -> tuple[GitRepo, Any]:
    """A repository with ``count`` directories apps/aNNN, one mapping each, all rendered by a first fetch."""
    origin = GitRepo(path)
    origin.commit(
        {f"apps/a{i:03d}/cm.yaml": configmap(f"a{i:03d}", {"color": "blue"}) for i in range(count)}, "all"
    )
    repo = make_repository(origin, name=name)
    PathMapping.objects.bulk_create(
        [
            PathMapping(repository=repo, name=f"a{i:03d}", path=f"apps/a{i:03d}", cluster_group=group)
            for i in range(count)
        ]
    )
    first = fetch_repository(repo)
    assert first.ok and len(first.renders) == count
    assert Rollout.objects.filter(mapping__repository=repo).count() == count
    return origin, repo


def touch_one(origin: GitRepo, repo: Any, index: int, tasks: Any) -> tuple[Any, int, str]:
    """Commit a change to one mapped path and fetch it: (outcome, queries, sha)."""
    sha = origin.commit({f"apps/a{index:03d}/cm.yaml": configmap(f"a{index:03d}", {"color": "red"})}, "one")
    tasks.clear()
    with CaptureQueriesContext(connection) as ctx:
        outcome = fetch_repository(repo)
    assert outcome.ok
    return outcome, len(ctx.captured_queries), sha


def test_a_commit_touching_one_of_200_paths_renders_and_rolls_out_that_mapping_only(
    tmp_path: Any, make_fleet: Any, tasks: Any
) -> None:
    make_fleet({"one": {"env": "paths"}})
    group = make_group("paths", "paths")
    origin, repo = mapped_repository(tmp_path / "big", "big", 200, group)
    renders = MappingRender.objects.filter(mapping__repository=repo).count()
    rollouts = Rollout.objects.filter(mapping__repository=repo).count()

    outcome, big_queries, sha = touch_one(origin, repo, 117, tasks)
    assert [(r.mapping, r.commit, r.reason) for r in outcome.renders] == [("a117", sha, "paths")]
    assert MappingRender.objects.filter(mapping__repository=repo).count() == renders + 1
    assert Rollout.objects.filter(mapping__repository=repo).count() == rollouts + 1
    new = Rollout.objects.filter(mapping__repository=repo, commit__sha=sha)
    assert list(new.values_list("mapping__name", flat=True)) == ["a117"]
    assert [item.name for item in tasks.items] == [dispatch.PREPARE]  # one rollout prepared, no other work

    # The same commit handling with 20 mappings: the same number of queries (the mappings load in three
    # queries, the diff is one git call per base commit, then one mapping is rendered and rolled out).
    small_origin, small = mapped_repository(tmp_path / "small", "small", 20, group)
    _, small_queries, _ = touch_one(small_origin, small, 7, tasks)
    assert big_queries == small_queries
