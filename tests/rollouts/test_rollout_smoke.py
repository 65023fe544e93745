"""A commit reaches the clusters of an automated group: fetch -> render -> gate -> batches -> synced."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.rollouts.models import ClusterSync, Rollout, SyncedState
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)


def test_new_commit_syncs_an_automated_group(git_repo: Any, make_fleet: Any, tasks: Any) -> None:
    fleet = make_fleet({"a": {"env": "dev"}, "b": {"env": "dev"}})
    group = make_group("dev", "dev")
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    git_repo.commit(
        {"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"})}, "one"
    )
    assert fetch_repository(repo).ok
    tasks.drain()
    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "synced", rollout.reason
    assert set(ClusterSync.objects.filter(rollout=rollout).values_list("state", flat=True)) == {"synced"}
    for short in ("a", "b"):
        live = fleet.sandbox(short).get_object("v1", "ConfigMap", "web", "apps")
        assert live["data"] == {"color": "blue"}
    state = SyncedState.objects.get(mapping=mapping, cluster=fleet.clusters["a"])
    assert state.commit_id == rollout.commit_id
    assert {r["kind"] for r in state.inventory} == {"Namespace", "ConfigMap"}
