"""A mapping synced to a sandbox cluster whose path becomes Jsonnet only (or gains Argo CD directory options
through the API): the render is refused as an unsupported renderer, no rollout starts and nothing the
cluster runs is pruned. An empty render there would have deleted every object of the mapping."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.rollouts.models import Rollout
from fleet.sources.models import Commit, MappingRender
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import NAMESPACE, configmap, make_group, make_mapping, make_repository

pytestmark = pytest.mark.django_db(transaction=True)


def test_path_turned_jsonnet_only_is_refused_and_nothing_is_pruned(
    git_repo: Any, make_fleet: Any, tasks: Any, admin_client: Any
) -> None:
    fleet = make_fleet({"dev-1": {"env": "dev"}})
    dev = make_group("dev", "dev")
    repo = make_repository(git_repo)
    mapping = make_mapping(repo, "web", "apps/web", dev)

    git_repo.commit({"apps/web/ns.yaml": NAMESPACE, "apps/web/cm.yaml": configmap("web", {"color": "blue"}),
                     "apps/web/extra.yaml": configmap("web-extra", {"keep": "yes"})}, "plain manifests")
    assert fetch_repository(repo).ok
    tasks.drain()
    first = Rollout.objects.get(mapping=mapping)
    assert first.state == "synced", first.reason
    box = fleet.sandbox("dev-1")
    assert box.get_object("v1", "ConfigMap", "web", "apps") is not None

    # the same objects, now written in Jsonnet: Argo CD would evaluate them, Fleetgate cannot
    git_repo.commit({"apps/web/main.jsonnet": "[import 'cm.libsonnet']\n",
                     "apps/web/cm.libsonnet": "{apiVersion: 'v1', kind: 'ConfigMap'}\n"},
                    "move to jsonnet", delete=("apps/web/ns.yaml", "apps/web/cm.yaml", "apps/web/extra.yaml"))
    fetch_repository(repo)
    tasks.drain()
    head = Commit.objects.get(repository=repo, sha=git_repo.git("rev-parse", "HEAD"))
    render = MappingRender.objects.get(commit=head, mapping=mapping)
    assert render.status == "failed"
    assert render.error_message.startswith("unsupported renderer: Jsonnet")
    assert "apps/web/cm.libsonnet" in render.error_message and "apps/web/main.jsonnet" in render.error_message
    assert head.status == "failed"
    assert list(Rollout.objects.filter(mapping=mapping)) == [first]  # no rollout of the refused commit
    mapping.refresh_from_db()
    assert mapping.last_rendered_sha == first.commit.sha
    for name in ("web", "web-extra"):  # nothing pruned
        assert box.get_object("v1", "ConfigMap", name, "apps") is not None
    assert box.get_object("v1", "Namespace", "apps") is not None

    # the API shows the error with its file
    rendered = admin_client.get(f"/api/commits/{head.pk}/rendered/?mapping={mapping.pk}&cluster="
                                f"{fleet.clusters['dev-1'].name}")
    assert rendered.status_code == 200
    assert "unsupported renderer" in str(rendered.json())
