"""Who may see and change policies, bindings, waivers and results (role x scope); constant query counts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from policies.models import Evaluation, Policy, PolicyBinding, PolicyVersion, Violation, Waiver
from tests.policies import policy_library as lib

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(fleet: dict[str, Any], make_policy: Any, make_user: Any, token_client: Any) -> dict[str, Any]:
    policy = make_policy("no-latest", style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}])
    bindings = {
        "global": PolicyBinding.objects.create(policy=policy, cluster_group=None),
        "web": PolicyBinding.objects.create(policy=policy, cluster_group=fleet["web"], enforcement="warn"),
        "other": PolicyBinding.objects.create(policy=policy, cluster_group=fleet["other"]),
    }
    users = {
        "viewer": make_user("viewer", role="viewer"),
        "web-viewer": make_user("web-viewer", role="viewer", scope=fleet["web"]),
        "web-admin": make_user("web-admin", role="policy-admin", scope=fleet["web"]),
        "admin": make_user("padmin", role="policy-admin"),
    }
    clients = {k: token_client(u) for k, u in users.items()}
    return {**fleet, "policy": policy, "bindings": bindings, "clients": clients}


def _waiver_body(setup: dict[str, Any], group: Any) -> dict[str, Any]:
    return {
        "policy": setup["policy"].pk,
        "name_pattern": "legacy-*",
        "cluster_group": group.pk if group is not None else None,
        "expires_at": (timezone.now() + timedelta(days=10)).isoformat(),
        "justification": "vendor image",
    }


def test_a_viewer_cannot_create_a_waiver(setup: dict[str, Any]) -> None:
    for who in ("viewer", "web-viewer"):
        response = setup["clients"][who].post(
            "/api/waivers/", _waiver_body(setup, setup["web"]), format="json"
        )
        assert response.status_code == 403, who
    assert not Waiver.objects.exists()


def test_a_group_policy_admin_waives_in_its_group_only(setup: dict[str, Any]) -> None:
    client: APIClient = setup["clients"]["web-admin"]
    ok = client.post("/api/waivers/", _waiver_body(setup, setup["web"]), format="json")
    assert ok.status_code == 201, ok.content
    assert ok.json()["author_name"] == "web-admin"
    other = client.post("/api/waivers/", _waiver_body(setup, setup["other"]), format="json")
    assert other.status_code == 400  # the other group is not even visible to this user
    assert "cluster_group" in other.json()
    everywhere = client.post("/api/waivers/", _waiver_body(setup, None), format="json")
    assert everywhere.status_code == 403
    assert Waiver.objects.count() == 1
    # The all-clusters policy-admin may waive globally.
    admin = setup["clients"]["admin"].post("/api/waivers/", _waiver_body(setup, None), format="json")
    assert admin.status_code == 201


def test_policies_are_global_documents(setup: dict[str, Any]) -> None:
    pk = setup["policy"].pk
    web_admin: APIClient = setup["clients"]["web-admin"]
    assert web_admin.get("/api/policies/").json()["count"] == 1
    assert setup["clients"]["web-viewer"].get(f"/api/policies/{pk}/").status_code == 200
    body = {"name": "x", "style": "conftest", "modules": [{"path": "l.rego", "source": lib.NO_LATEST}]}
    assert web_admin.post("/api/policies/", body, format="json").status_code == 403
    assert web_admin.patch(f"/api/policies/{pk}/", {"description": "x"}, format="json").status_code == 403
    assert (
        web_admin.post(
            "/api/policies/import/", {"files": {"a.rego": lib.NO_LATEST}}, format="json"
        ).status_code
        == 403
    )
    assert setup["clients"]["viewer"].delete(f"/api/policies/{pk}/").status_code == 403
    admin = setup["clients"]["admin"]
    assert admin.patch(f"/api/policies/{pk}/", {"description": "no latest"}, format="json").status_code == 200
    assert APIClient().get("/api/policies/").status_code == 401


def test_bindings_of_a_group_plus_global_ones_are_visible_and_changed_in_scope(setup: dict[str, Any]) -> None:
    b = setup["bindings"]
    web_viewer: APIClient = setup["clients"]["web-viewer"]
    seen = {row["id"] for row in web_viewer.get("/api/policy-bindings/").json()["results"]}
    assert seen == {b["global"].pk, b["web"].pk}
    assert web_viewer.get(f"/api/policy-bindings/{b['other'].pk}/").status_code == 404
    assert (
        web_viewer.patch(
            f"/api/policy-bindings/{b['web'].pk}/", {"enabled": False}, format="json"
        ).status_code
        == 403
    )

    web_admin: APIClient = setup["clients"]["web-admin"]
    assert (
        web_admin.patch(f"/api/policy-bindings/{b['web'].pk}/", {"enabled": False}, format="json").status_code
        == 200
    )
    assert (
        web_admin.patch(
            f"/api/policy-bindings/{b['global'].pk}/", {"enabled": False}, format="json"
        ).status_code
        == 403
    )
    created = web_admin.post(
        "/api/policy-bindings/",
        {"policy": setup["policy"].pk, "cluster_group": setup["web"].pk, "enforcement": "dryrun"},
        format="json",
    )
    assert created.status_code == 201, created.content
    refused = web_admin.post(
        "/api/policy-bindings/", {"policy": setup["policy"].pk, "cluster_group": None}, format="json"
    )
    assert refused.status_code == 403
    assert setup["clients"]["viewer"].get("/api/policy-bindings/").json()["count"] == 4


def test_results_are_visible_in_the_mapping_group_only(setup: dict[str, Any]) -> None:
    from policies.services.evaluation import evaluate

    web_ev = evaluate(
        setup["commit"], setup["mapping"], setup["prod"], [lib.deployment("a", image="x:latest")]
    )
    other_ev = evaluate(
        setup["commit"], setup["other_mapping"], setup["lonely"], [lib.deployment("a", image="x:latest")]
    )
    web_viewer: APIClient = setup["clients"]["web-viewer"]
    assert [e["id"] for e in web_viewer.get("/api/evaluations/").json()["results"]] == [web_ev.pk]
    assert web_viewer.get(f"/api/evaluations/{other_ev.pk}/").status_code == 404
    assert {v["evaluation"] for v in web_viewer.get("/api/violations/").json()["results"]} == {web_ev.pk}
    assert setup["clients"]["viewer"].get("/api/violations/").json()["count"] == 2
    check = web_viewer.post(
        "/api/policies/check/", {"mapping": setup["other_mapping"].pk, "manifests": "a: b\n"}, format="json"
    )
    assert check.status_code == 400
    assert "mapping" in check.json()


# --------------------------------------------------------------------------------------------- query counts


def _rows(n: int, fleet: dict[str, Any]) -> None:
    policies = Policy.objects.bulk_create(Policy(name=f"p-{i}", style="conftest") for i in range(n))
    versions = PolicyVersion.objects.bulk_create(
        PolicyVersion(
            policy=p,
            number=1,
            content={"style": "conftest", "modules": [{"path": "a.rego", "source": lib.NO_LATEST}]},
            content_hash=f"h{p.pk}",
        )
        for p in policies
    )
    for p, v in zip(policies, versions, strict=True):
        p.current = v
    Policy.objects.bulk_update(policies, ["current"])
    PolicyBinding.objects.bulk_create(
        PolicyBinding(policy=p, cluster_group=fleet["web"] if i % 2 else None) for i, p in enumerate(policies)
    )
    expires = timezone.now() + timedelta(days=1)
    waivers = Waiver.objects.bulk_create(
        Waiver(policy=p, expires_at=expires, justification="j", cluster_group=fleet["web"]) for p in policies
    )
    evaluations = Evaluation.objects.bulk_create(
        Evaluation(
            commit=fleet["commit"], mapping=fleet["mapping"], cluster=fleet["prod"], decision="blocked"
        )
        for _ in range(n)
    )
    Violation.objects.bulk_create(
        Violation(evaluation=e, policy=p, policy_name=p.name, enforcement="deny", message="m", waived_by=w)
        for e, p, w in zip(evaluations, policies, waivers, strict=True)
    )


@pytest.mark.parametrize("n", [10, 200])
@pytest.mark.parametrize(
    "url",
    ["/api/policies/", "/api/policy-bindings/", "/api/waivers/", "/api/evaluations/", "/api/violations/"],
)
def test_list_query_count_is_constant(
    fleet: dict[str, Any],
    make_user: Any,
    token_client: Any,
    django_assert_max_num_queries: Any,
    n: int,
    url: str,
) -> None:
    _rows(n, fleet)
    client = token_client(make_user("web-viewer", role="viewer", scope=fleet["web"]))
    with django_assert_max_num_queries(12):
        response = client.get(url + "?limit=1000")
    assert response.status_code == 200
    assert response.json()["count"] >= n
