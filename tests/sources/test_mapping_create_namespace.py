"""A mapping's create_namespace (Argo CD's CreateNamespace=true with managedNamespaceMetadata, Flux's
install.createNamespace): the render gets a Namespace for the target namespace, first in the apply order and
never pruned; the API refuses settings that would do nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clusters.connector.objects import FIRST_KINDS
from fleet.sources.models import PathMapping, RenderedManifest
from fleet.sources.render import ClusterContext, RenderRequest, SourceTree, render
from fleet.sources.services import fetch_repository

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: b}\n"


def request(**kw: Any) -> RenderRequest:
    return RenderRequest(path="app", cluster=ClusterContext(name="c1"), namespace="team-a", **kw)


def test_render_puts_the_namespace_first_with_its_labels_and_the_prune_opt_out(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app/cm.yaml").write_text(CM)
    plain = render(SourceTree(tmp_path), request())
    assert [o.kind for o in plain.objects] == ["ConfigMap"]
    result = render(SourceTree(tmp_path), request(
        create_namespace=True, namespace_labels={"pod-security.kubernetes.io/enforce": "baseline"},
        namespace_annotations={"owner": "team-a"}))
    assert result.input_hash != plain.input_hash
    kinds = [(o.kind, o.namespace, o.name) for o in result.objects]
    assert set(kinds) == {("Namespace", None, "team-a"), ("ConfigMap", None, "web")}  # team-a at apply time
    # the connector applies FIRST_KINDS (Namespaces, CRDs) as a step before every other object
    assert [k for k in kinds if k[0] in FIRST_KINDS] == [("Namespace", None, "team-a")]
    (ns,) = [o.body for o in result.objects if o.kind == "Namespace"]
    assert ns["metadata"]["labels"] == {"pod-security.kubernetes.io/enforce": "baseline"}
    # Argo CD never deletes a namespace it created: kept when the mapping stops creating it
    assert ns["metadata"]["annotations"] == {"owner": "team-a", "fleetgate.io/prune": "disabled"}
    assert result.warnings == ()


def test_a_namespace_of_the_path_wins_and_default_gets_none(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app/cm.yaml").write_text(CM + "---\napiVersion: v1\nkind: Namespace\n"
                                           "metadata: {name: team-a, labels: {own: 'yes'}}\n")
    result = render(SourceTree(tmp_path), request(create_namespace=True, namespace_labels={"x": "y"}))
    (ns,) = [o.body for o in result.objects if o.kind == "Namespace"]
    assert ns["metadata"]["labels"] == {"own": "yes"}
    assert any("comes from the path's files" in w for w in result.warnings)
    default = render(SourceTree(tmp_path), RenderRequest(path="app", cluster=ClusterContext(name="c1"),
                                                        namespace="default", create_namespace=True))
    assert [o.name for o in default.objects if o.kind == "Namespace"] == ["team-a"]


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field", "message"), [
    ({"create_namespace": True}, "create_namespace", "Needs target_namespace"),
    ({"create_namespace": True, "target_namespace": "default"}, "create_namespace", "other than 'default'"),
    ({"target_namespace": "web", "namespace_labels": {"a": "b"}}, "namespace_labels",
     "Needs create_namespace"),
    ({"target_namespace": "web", "create_namespace": True, "namespace_labels": {"a": "b c"}},
     "namespace_labels", "invalid value for label"),
    ({"target_namespace": "web", "create_namespace": True, "namespace_annotations": {"a": 1}},
     "namespace_annotations", "must be a string"),
])
def test_settings_that_would_do_nothing_are_refused(
    origin: Any, make_repository: Any, fleet: dict[str, Any], admin_client: Any, change: dict[str, Any],
    field: str, message: str,
) -> None:
    repo = make_repository(origin)
    payload = {"repository": repo.pk, "name": "web", "path": "apps/web", "cluster_group": fleet["prod"].pk,
               **change}
    response = admin_client.post("/api/mappings/", payload, format="json")
    assert response.status_code == 400, response.json()
    assert message in json.dumps(response.json()[field]), response.json()
    assert not PathMapping.objects.exists()


@pytest.mark.django_db
def test_api_mapping_creates_its_namespace_in_every_clusters_render(
    origin: Any, make_repository: Any, fleet: dict[str, Any], admin_client: Any,
) -> None:
    origin.commit("app", {"apps/web/cm.yaml": CM})
    repo = make_repository(origin)
    created = admin_client.post("/api/mappings/", {
        "repository": repo.pk, "name": "web", "path": "apps/web", "cluster_group": fleet["prod"].pk,
        "target_namespace": "shop", "create_namespace": True, "namespace_labels": {"team": "shop"},
    }, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["create_namespace"] is True
    assert created.json()["namespace_annotations"] == {}
    fetch_repository(repo)
    rows = RenderedManifest.objects.filter(mapping_id=created.json()["id"])
    assert rows.count() == 2  # eu-1, us-1
    for row in rows:
        assert row.status == "ok", row.error_message
        (ns,) = [r["object"] for r in row.resources if r["kind"] == "Namespace"]
        assert ns["metadata"]["labels"] == {"team": "shop"}
