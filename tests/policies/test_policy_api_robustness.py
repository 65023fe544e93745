"""Bad input to the policy API and editor gets a 4xx with a message, never a 500; fields match the schema.

Before: `/api/policy-sources/abc/` (and `false`, `null,null/sync/`) answered 500 (ValueError); a Rego source
with a non-ASCII letter raised an AssertionError in the tokenizer (500 in API and UI); a Gatekeeper policy
came back with `modules: null` and a conftest policy with `template: null` and `constraints: null` where the
schema says non-nullable arrays and strings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from django.test import Client

from policies.models import PolicySource
from tests.factories import RepositoryFactory
from tests.policies import policy_library as lib

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(make_user: Any, token_client: Any) -> Any:
    return token_client(make_user("pa", role="policy-admin"))


@pytest.mark.parametrize("pk", ["abc", "false", "null,null", "1.5", "99999999999999999999999"])
def test_policy_sources_with_a_non_integer_id_are_not_found(admin: Any, pk: str) -> None:
    PolicySource.objects.create(repository=RepositoryFactory(), path="policies/", name="p")
    assert admin.get(f"/api/policy-sources/{pk}/").status_code == 404
    assert admin.patch(f"/api/policy-sources/{pk}/", {"enabled": False}, format="json").status_code == 404
    assert admin.delete(f"/api/policy-sources/{pk}/").status_code == 404
    assert admin.post(f"/api/policy-sources/{pk}/sync/", {}, format="json").status_code == 404
    assert PolicySource.objects.count() == 1


def test_definition_fields_are_never_null(admin: Any, make_policy: Any) -> None:
    make_policy("latest", style="conftest", modules=[{"path": "l.rego", "source": lib.NO_LATEST}])
    make_policy(
        "labels",
        style="gatekeeper",
        template=lib.REQUIRED_LABELS_TEMPLATE,
        constraints=[lib.REQUIRED_LABELS_CONSTRAINT],
    )
    rows = {row["name"]: row for row in admin.get("/api/policies/").json()["results"]}
    conftest, gatekeeper = rows["latest"], rows["labels"]
    assert conftest["template"] == "" and conftest["constraints"] == []
    assert gatekeeper["modules"] == [] and gatekeeper["test_modules"] == []
    assert gatekeeper["namespaces"] == [] and gatekeeper["data"] == {}
    assert gatekeeper["all_namespaces"] is False and gatekeeper["combine"] is False
    for row in (conftest, gatekeeper):
        for key in ("modules", "test_modules", "namespaces", "constraints", "template", "data"):
            assert row[key] is not None, (row["name"], key)


def test_the_schema_says_these_fields_are_not_nullable(admin: Any) -> None:
    schema = yaml.safe_load(admin.get("/api/schema/").content)
    policy = schema["components"]["schemas"]["Policy"]["properties"]
    for key in ("modules", "test_modules", "namespaces", "constraints"):
        assert policy[key]["type"] == "array" and not policy[key].get("nullable"), key
    assert policy["template"]["type"] == "string" and not policy["template"].get("nullable")


NON_ASCII = "package main\nÎ"


def test_non_ascii_rego_is_refused_with_its_line_in_the_api(admin: Any) -> None:
    body = {"name": "accent", "style": "conftest", "modules": [{"path": "a.rego", "source": NON_ASCII}]}
    response = admin.post("/api/policies/", body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["compile_errors"]
    assert errors[0]["path"] == "a.rego" and errors[0]["line"] == 2
    assert errors[0]["message"]


def test_non_ascii_rego_is_refused_with_its_line_in_the_editor(make_user: Any) -> None:
    client = Client()
    client.force_login(make_user("editor", role="policy-admin"))
    page = client.post("/policies/new/", {"name": "accent", "module_path": "a.rego", "source": NON_ASCII})
    html = page.content.decode()
    assert page.status_code == 200 and 'id="compile-errors"' in html
    assert "a.rego:2" in html


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/violations/", "commit"),
        ("/api/violations/", "evaluation"),
        ("/api/evaluations/", "policy"),
        ("/api/policy-bindings/", "policy"),
        ("/api/waivers/", "cluster_group"),
    ],
)
def test_integer_filters_out_of_64_bit_range_are_a_400(admin: Any, url: str, param: str) -> None:
    for value in ("-18446744073709551617", "19741472990083809280"):
        response = admin.get(url, {param: value})
        assert response.status_code == 400, (url, param, response.content)
        assert param in response.json()
