"""fleet.yaml in a fetched repository: dependsOn by bundle name and label selector becomes the mapping's
dependencies, paused renders without rolling out, and unhonoured keys are warnings on the commit page and in
the API; a fleet.yaml is never a manifest."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from fleet.rollouts.models import Rollout
from fleet.sources.models import MappingRender, RenderedManifest
from fleet.sources.services import fetch_repository
from tests.sources.origin import configmap


@pytest.fixture
def world(origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    origin.commit("initial", {f"apps/{n}/cm.yaml": configmap(n) for n in ("db", "cache", "web", "ops")})
    repo = make_repository(origin)
    maps = {n: make_mapping(repo, n, f"apps/{n}", fleet["prod"]) for n in ("db", "cache", "web", "ops")}
    return {"repo": repo, "origin": origin, **maps, **fleet}


def test_depends_on_by_bundle_name_and_selector_becomes_the_mappings_dependencies(
    world: dict[str, Any],
) -> None:
    origin, repo, web = world["origin"], world["repo"], world["web"]
    origin.commit("fleet bundles", {
        "apps/db/fleet.yaml": "labels: {tier: data}\n",
        "apps/cache/fleet.yaml": "name: shared-cache\nlabels: {tier: data}\n",
        "apps/ops/fleet.yaml": "labels: {tier: tools}\n",
        # Fleet names: the selector (db and cache), the generated bundle name of apps/ops, a missing one
        "apps/web/fleet.yaml": "dependsOn:\n- selector: {matchLabels: {tier: data}}\n"
                               "- name: apps-apps-ops\n- name: not-yet\n",
    })
    assert fetch_repository(repo).ok
    web.refresh_from_db()
    assert web.declared_depends_on == ["apps/cache", "apps/db", "apps/ops", "apps/not-yet"]

    origin.commit("by name", {"apps/web/fleet.yaml": "dependsOn: [{name: shared-cache}]\n"})
    assert fetch_repository(repo).ok
    web.refresh_from_db()
    assert web.declared_depends_on == ["apps/cache"]


def test_paused_renders_and_is_not_rolled_out_and_warnings_are_shown(
    world: dict[str, Any], admin_client: Any, admin_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    origin, repo, ops, web = world["origin"], world["repo"], world["ops"], world["web"]
    sha = origin.commit("pause ops", {
        "apps/ops/fleet.yaml": "paused: true\nhelm: {atomic: true}\nrolloutStrategy: {maxUnavailable: 1}\n",
        "apps/web/fleet.yaml": "namespace: shop\n",
    })
    with django_capture_on_commit_callbacks(execute=True):  # the pipeline starts rollouts after the commit
        assert fetch_repository(repo).ok
    ops_render = MappingRender.objects.get(commit__sha=sha, mapping=ops)
    assert ops_render.status == "rendered"
    assert not Rollout.objects.filter(commit__sha=sha, mapping=ops).exists()
    assert Rollout.objects.filter(commit__sha=sha, mapping=web).exists()
    warnings = RenderedManifest.objects.filter(mapping_render=ops_render).first().warnings
    assert any("helm.atomic is not honoured" in w for w in warnings)
    assert not any("rolloutStrategy" in w for w in warnings)  # maxUnavailable: the rollouts' halt threshold
    # the fleet.yaml is not an object; web's namespace is created, with objects forced into it
    web_rows = RenderedManifest.objects.filter(commit__sha=sha, mapping=web)
    kinds = sorted((r["kind"], r["namespace"] or "", r["name"]) for r in web_rows.first().resources)
    assert kinds == [("ConfigMap", "shop", "web"), ("Namespace", "", "shop")]

    browser = Client()
    browser.force_login(admin_user)
    page = browser.get(f"/commits/{ops_render.commit_id}/").content.decode()
    assert "warning: fleet.yaml helm.atomic is not honoured" in page
    api = admin_client.get(f"/api/commits/{ops_render.commit_id}/rendered/",
                           {"mapping": ops.pk, "cluster": "eu-1"}).json()
    assert any("paused" in w for w in api["warnings"])


def test_manage_py_render_prints_the_reported_keys(world: dict[str, Any]) -> None:
    origin, repo = world["origin"], world["repo"]
    sha = origin.commit("ops", {"apps/ops/fleet.yaml": "defaultNamespace: tools\nkeepResources: true\n"})
    assert fetch_repository(repo).ok
    out, err = StringIO(), StringIO()
    call_command("render", "apps", sha, "ops", "--cluster", "eu-1", stdout=out, stderr=err)
    assert "warning: fleet.yaml keepResources is not honoured" in err.getvalue()
    assert "kind: Namespace" in out.getvalue() and "name: tools" in out.getvalue()
    assert "fleet.yaml" not in out.getvalue().replace("# Source: apps/ops/fleet.yaml", "")


def test_a_commit_rolls_out_a_fleet_dependency_before_its_dependent(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    """cache (first by name) depends on web's bundle by selector: web's rollout of the commit comes first."""
    origin, repo, cache, web = world["origin"], world["repo"], world["cache"], world["web"]
    sha = origin.commit("cache needs web", {
        "apps/web/fleet.yaml": "labels: {role: frontend}\n",
        "apps/cache/fleet.yaml": "dependsOn: [{selector: {matchLabels: {role: frontend}}}]\n",
    })
    with django_capture_on_commit_callbacks(execute=True):
        assert fetch_repository(repo).ok
    order = list(Rollout.objects.filter(commit__sha=sha, mapping__in=[cache, web]).order_by("pk")
                 .values_list("mapping__name", flat=True))
    assert order == ["web", "cache"]
