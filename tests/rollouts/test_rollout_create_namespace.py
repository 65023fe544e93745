"""A mapping with create_namespace syncs to sandbox clusters: the Namespace (with the mapping's labels) is
created before the objects in it, and stays when the mapping stops creating it, as Argo CD's
CreateNamespace=true leaves it."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)


def test_sync_creates_the_target_namespace_and_never_prunes_it(git_repo: Any, make_fleet: Any,
                                                               tasks: Any) -> None:
    fleet = make_fleet({"a": {"env": "ns"}})
    group = make_group("ns", "ns", prune=True)
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", group)
    mapping.target_namespace = "team-a"
    mapping.create_namespace = True
    mapping.namespace_labels = {"pod-security.kubernetes.io/enforce": "baseline"}
    mapping.full_clean()
    mapping.save()
    box = fleet.sandbox("a")
    assert box.get_object("v1", "Namespace", "team-a") is None
    git_repo.commit({"apps/web/cm.yaml": configmap("web", {"color": "blue"}, namespace="team-a")}, "one")
    assert fetch_repository(repo).ok
    tasks.drain()
    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "synced", rollout.reason
    ns = box.get_object("v1", "Namespace", "team-a")
    assert ns is not None
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert box.get_object("v1", "ConfigMap", "web", "team-a")["data"] == {"color": "blue"}

    # the mapping stops creating it (and the group prunes): the namespace and what is in it stay
    mapping.create_namespace = False
    mapping.namespace_labels = {}
    mapping.save()
    git_repo.commit({"apps/web/cm.yaml": configmap("web", {"color": "green"}, namespace="team-a")}, "two")
    assert fetch_repository(repo).ok
    tasks.drain()
    latest = Rollout.objects.filter(mapping=mapping).order_by("-id").first()
    assert latest is not None and latest.state == "synced", latest.reason if latest else None
    assert box.get_object("v1", "Namespace", "team-a") is not None
    assert box.get_object("v1", "ConfigMap", "web", "team-a")["data"] == {"color": "green"}
