"""Dependencies between mappings at save: cycles refused with the cycle named (API, admin, fleetgate.yaml),
dependencies out of the user's scope refused with 403, groups that share no cluster refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from fleet.access.models import RoleBinding
from fleet.audit.models import AuditEvent
from fleet.sources.models import MappingRender, PathMapping
from fleet.sources.services import fetch_repository
from fleet.sources.services.dependencies import find_cycle
from tests.factories import UserFactory
from tests.sources.origin import configmap


@pytest.fixture
def world(origin: Any, make_repository: Any, make_mapping: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    origin.commit("initial", {f"apps/{n}/cm.yaml": configmap(n) for n in ("a", "b", "c", "st")})
    repo = make_repository(origin)
    maps = {n: make_mapping(repo, n, f"apps/{n}", fleet["prod"]) for n in ("a", "b", "c")}
    maps["st"] = make_mapping(repo, "st", "apps/st", fleet["staging"])
    return {"repo": repo, "origin": origin, **maps, **fleet}


def patch(client: Any, mapping: PathMapping, deps: list[PathMapping]) -> Any:
    return client.patch(f"/api/mappings/{mapping.pk}/", {"depends_on": [d.pk for d in deps]}, format="json")


def test_find_cycle_names_the_cycle_from_the_start() -> None:
    graph = {"r/a": {"r/b"}, "r/b": {"r/c"}, "r/c": {"r/a"}, "r/d": {"r/a"}}
    assert find_cycle(graph, "r/b") == ["r/b", "r/c", "r/a", "r/b"]
    assert find_cycle({"r/a": {"r/b"}, "r/b": set()}, "r/a") is None


def test_api_sets_dependencies_and_refuses_a_cycle_naming_it(world: dict[str, Any],
                                                             admin_client: Any) -> None:
    a, b, c = world["a"], world["b"], world["c"]
    assert patch(admin_client, b, [a]).status_code == 200
    response = patch(admin_client, c, [b])
    assert response.status_code == 200
    assert response.json()["depends_on"] == [b.pk]
    assert response.json()["depends_on_names"] == ["apps/b"]
    updates = AuditEvent.objects.filter(action="pathmapping.update").count()

    response = patch(admin_client, a, [c])
    assert response.status_code == 400
    assert response.json() == {"depends_on": ["dependency cycle: apps/a -> apps/c -> apps/b -> apps/a"]}
    assert list(a.depends_on.all()) == []
    assert AuditEvent.objects.filter(action="pathmapping.update").count() == updates  # nothing recorded

    response = patch(admin_client, a, [a])
    assert response.status_code == 400
    assert response.json() == {"depends_on": ["dependency cycle: apps/a -> apps/a"]}

    # A rename is checked too: the cycle is named with the new name.
    response = admin_client.patch(f"/api/mappings/{a.pk}/", {"name": "a2", "depends_on": [c.pk]},
                                  format="json")
    assert response.json() == {"depends_on": ["dependency cycle: apps/a2 -> apps/c -> apps/b -> apps/a2"]}


def test_api_create_with_dependencies(world: dict[str, Any], admin_client: Any) -> None:
    body = {"repository": world["repo"].pk, "name": "d", "path": "apps/d", "cluster_group": world["prod"].pk,
            "depends_on": [world["a"].pk, world["b"].pk]}
    response = admin_client.post("/api/mappings/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["depends_on_names"] == ["apps/a", "apps/b"]
    event = AuditEvent.objects.get(action="pathmapping.create", target_id=str(response.json()["id"]))
    assert event.after["depends_on"] == [world["a"].pk, world["b"].pk]


def test_a_dependency_the_user_cannot_see_is_refused_with_403(world: dict[str, Any],
                                                              token_client: Any) -> None:
    user = UserFactory(username="staging-admin")
    RoleBinding.objects.create(user=user, role="cluster-admin", scope=world["staging"])
    client = token_client(user)
    response = patch(client, world["st"], [world["a"]])
    assert response.status_code == 403
    assert response.json()["detail"] == (
        f"You may not depend on mapping(s) #{world['a'].pk}: they are outside the groups you can see."
    )
    assert not world["st"].depends_on.exists()
    # An id that does not exist at all is a plain 400.
    response = client.patch(f"/api/mappings/{world['st'].pk}/", {"depends_on": [99999]}, format="json")
    assert response.status_code == 400 and "depends_on" in response.json()


def test_a_dependency_whose_group_shares_no_cluster_is_refused(world: dict[str, Any],
                                                               admin_client: Any) -> None:
    response = patch(admin_client, world["st"], [world["a"]])
    assert response.status_code == 400
    assert response.json() == {"depends_on": [
        "apps/a is synced to group 'prod', which shares no cluster with this mapping's group: it could "
        "never be ready where this mapping syncs"]}


def test_list_has_a_constant_number_of_queries(world: dict[str, Any], admin_client: Any,
                                               django_assert_max_num_queries: Any) -> None:
    world["b"].depends_on.set([world["a"]])
    world["c"].depends_on.set([world["a"], world["b"]])
    with django_assert_max_num_queries(12) as few:
        assert admin_client.get("/api/mappings/").status_code == 200
    for n in range(5):
        m = PathMapping.objects.create(repository=world["repo"], name=f"x{n}", path=f"apps/x{n}",
                                       cluster_group=world["prod"])
        m.depends_on.set([world["a"], world["c"]])
    with django_assert_max_num_queries(len(few.captured_queries)):
        body = admin_client.get("/api/mappings/").json()
    assert {r["name"]: r["depends_on_names"] for r in body["results"]}["x4"] == ["apps/a", "apps/c"]


def test_fleetgate_yaml_depends_on_is_stored_and_a_cycle_fails_the_render_naming_it(
    world: dict[str, Any], admin_client: Any
) -> None:
    origin, repo, a, b = world["origin"], world["repo"], world["a"], world["b"]
    origin.commit("b needs a", {"apps/b/fleetgate.yaml": "dependsOn:\n  - a\n"})
    assert fetch_repository(repo).ok
    b.refresh_from_db()
    assert b.declared_depends_on == ["apps/a"]
    assert admin_client.get(f"/api/mappings/{b.pk}/").json()["depends_on_names"] == ["apps/a"]

    # The API sees declared edges: a -> b would close a cycle with b's fleetgate.yaml.
    response = patch(admin_client, a, [b])
    assert response.json() == {"depends_on": ["dependency cycle: apps/a -> apps/b -> apps/a"]}

    needs_b = "dependsOn:\n  - name: b\n    repository: apps\n"
    sha = origin.commit("a needs b", {"apps/a/fleetgate.yaml": needs_b})
    assert fetch_repository(repo).ok
    render = MappingRender.objects.get(commit__sha=sha, mapping=a)
    assert render.status == "failed"
    assert render.error_message == "dependsOn: dependency cycle: apps/a -> apps/b -> apps/a"
    assert render.error_file == "apps/a/fleetgate.yaml"
    a.refresh_from_db()
    assert a.declared_depends_on == []  # a failed render stores nothing of it


def test_fleetgate_yaml_depends_on_must_name_mappings(world: dict[str, Any]) -> None:
    origin, repo = world["origin"], world["repo"]
    sha = origin.commit("bad", {"apps/c/fleetgate.yaml": "dependsOn: [\"Not A Name\"]\n"})
    fetch_repository(repo)
    render = MappingRender.objects.get(commit__sha=sha, mapping=world["c"])
    assert render.status == "failed"
    assert render.error_message == "dependsOn[0]: 'Not A Name' is not a mapping name or repository/mapping"
    selector = "dependsOn:\n  - selector: {matchLabels: {a: b}}\n"
    sha = origin.commit("fleet style", {"apps/c/fleetgate.yaml": selector})
    fetch_repository(repo)
    render = MappingRender.objects.get(commit__sha=sha, mapping=world["c"])
    assert render.error_message == "dependsOn[0]: a label selector is not supported here; name the mapping"


def test_admin_refuses_a_cycle_on_the_field(world: dict[str, Any], make_user: Any) -> None:
    a, b = world["a"], world["b"]
    b.depends_on.set([a])
    client = Client()
    client.force_login(make_user("root", role="admin", superuser=True))
    form = {"repository": a.repository_id, "name": "a", "path": "apps/a", "cluster_group": a.cluster_group_id,
            "renderer": "auto", "values": "{}", "target_namespace": "", "enabled": "on",
            "depends_on": [b.pk]}
    response = client.post(f"/admin/sources/pathmapping/{a.pk}/change/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "dependency cycle: apps/a -&gt; apps/b -&gt; apps/a" in response.content.decode()
    assert not a.depends_on.exists()
    form["depends_on"] = []
    response = client.post(f"/admin/sources/pathmapping/{a.pk}/change/", form)
    assert response.status_code == 302


def test_a_mapping_others_depend_on_is_not_deleted(world: dict[str, Any], admin_client: Any) -> None:
    world["b"].depends_on.set([world["a"]])
    response = admin_client.delete(f"/api/mappings/{world['a'].pk}/")
    assert response.status_code == 409
    assert response.json()["detail"] == "apps/b depend(s) on apps/a: remove the dependency first"
    assert PathMapping.objects.filter(pk=world["a"].pk).exists()
    assert patch(admin_client, world["b"], []).status_code == 200
    assert admin_client.delete(f"/api/mappings/{world['a'].pk}/").status_code == 204
