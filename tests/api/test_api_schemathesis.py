"""Property-based tests of the REST API from its own OpenAPI schema (schemathesis), authenticated, over real
HTTP against a live server: no 5xx response, and every response conforms to the schema."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from fleet.access.models import APIToken
from tests.factories import (
    ClusterFactory,
    ClusterGroupFactory,
    CommitFactory,
    PathMappingFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db(transaction=True)]


def _operations() -> list[Any]:
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(json.loads(json.dumps(document, default=str)))
    return [result.ok() for result in loaded.get_all_operations()]


OPERATIONS = _operations()


@pytest.fixture
def seeded_token(live_server: Any) -> str:
    admin = UserFactory(username="schema-admin", is_superuser=True)
    _, key = APIToken.issue(admin)
    group = ClusterGroupFactory(name="dev")
    ClusterFactory(name="dev-1", labels={"env": "dev"})
    mapping = PathMappingFactory(cluster_group=group)
    CommitFactory(repository=mapping.repository)
    return key


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_api_conforms_to_its_schema(operation: Any, live_server: Any, seeded_token: str) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=live_server.url,
            headers={"Authorization": f"Bearer {seeded_token}"},
            checks=[not_a_server_error, response_schema_conformance],
        )

    check()
