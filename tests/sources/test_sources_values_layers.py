"""Values layered mapping → group → cluster reach the rendered objects, and a change of a layer re-renders."""

from __future__ import annotations

from typing import Any

from fleet.sources.models import RenderedManifest
from fleet.sources.services import fetch_repository
from tests.sources.origin import configmap

SIZED = configmap(
    "sizing", 'tier: ${values.tier}\n  replicas: "${values.replicas}"\n  zone: ${values.zone:-none}'
)


def _data(mapping: Any) -> dict[str, dict[str, str]]:
    rows = RenderedManifest.objects.filter(mapping=mapping).select_related("cluster", "commit").order_by("id")
    return {row.cluster.name: row.resources[0]["object"]["data"] for row in rows}


def test_cluster_values_override_group_values_which_override_the_mapping(
    origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]
) -> None:
    origin.commit("sizing", {"apps/sizing/cm.yaml": SIZED})
    repo = make_repository(origin)
    mapping = make_mapping(
        repo, "sizing", "apps/sizing", fleet["prod"], values={"tier": "basic", "replicas": 1}
    )
    fleet["prod"].values = {"replicas": 3}
    fleet["prod"].save()
    eu = fleet["clusters"]["eu-1"]
    eu.values = {"tier": "gold", "zone": "eu-west-1a"}
    eu.save()

    assert fetch_repository(repo).ok
    data = _data(mapping)
    assert data["eu-1"] == {"tier": "gold", "replicas": "3", "zone": "eu-west-1a"}
    assert data["us-1"] == {"tier": "basic", "replicas": "3", "zone": "none"}

    # A change of the group's values re-renders at the same head, with no new commit.
    fleet["prod"].values = {"replicas": 5}
    fleet["prod"].save()
    assert fetch_repository(repo).ok
    latest = {
        row.cluster.name: row.resources[0]["object"]["data"]
        for row in RenderedManifest.objects.filter(mapping=mapping).select_related("cluster").order_by("id")
    }
    assert latest["us-1"]["replicas"] == "5"
