"""Integer and related-object filters refuse values no database column can hold with a 400 naming the filter,
on every list endpoint (found from the URL configuration, so a new filter is covered when it is added).

Before, `?repository=19741472990083809280` on rollouts and `?commit=-18446744073709551617` on violations made
SQLite raise OverflowError and PostgreSQL "integer out of range": a 500."""

from __future__ import annotations

from typing import Any

import django_filters
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from fleet.access.models import APIToken
from fleet.core.filters import (
    BoundedModelChoiceFilter,
    BoundedModelMultipleChoiceFilter,
    FleetFilterSet,
    IdFilter,
)
from tests.api.test_access_matrix import api_routes
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

BOUNDED = (IdFilter, BoundedModelChoiceFilter, BoundedModelMultipleChoiceFilter)
TOO_BIG = str(2**64 + 7)
TOO_SMALL = str(-(2**64) - 1)


def list_endpoints() -> list[tuple[str, type[django_filters.FilterSet]]]:
    found = []
    for name, _pattern, cls in api_routes():
        filterset = getattr(cls, "filterset_class", None)
        if name.endswith("-list") and filterset is not None:
            found.append((name, filterset))
    return sorted(set(found), key=lambda item: item[0])


def integer_filters() -> list[tuple[str, str]]:
    cases = []
    for route, filterset in list_endpoints():
        for filter_name, declared in filterset.base_filters.items():
            if isinstance(declared, BOUNDED):
                cases.append((route, filter_name))
    return cases


def test_every_filterset_refuses_unbounded_integers() -> None:
    """No filterset falls back to django-filters' unbounded NumberFilter or ModelChoiceFilter."""
    loose = []
    for route, filterset in list_endpoints():
        assert issubclass(filterset, FleetFilterSet), f"{filterset.__name__} does not extend FleetFilterSet"
        for filter_name, declared in filterset.base_filters.items():
            unbounded = (
                django_filters.NumberFilter,
                django_filters.ModelChoiceFilter,
                django_filters.ModelMultipleChoiceFilter,
            )
            if isinstance(declared, unbounded) and not isinstance(declared, BOUNDED):
                loose.append(f"{route} ?{filter_name}")
    assert loose == []


def test_there_are_integer_filters_to_check() -> None:
    names = {name for _route, name in integer_filters()}
    assert {"repository", "commit", "cluster", "mapping", "group"} <= names


@pytest.fixture
def client() -> APIClient:
    user = UserFactory(username="filter-admin", is_superuser=True)
    _, key = APIToken.issue(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api


@pytest.mark.parametrize(("route", "filter_name"), integer_filters())
@pytest.mark.parametrize("value", [TOO_BIG, TOO_SMALL])
def test_out_of_range_integer_filter_is_a_400(
    client: APIClient, route: str, filter_name: str, value: str
) -> None:
    response = client.get(reverse(route), {filter_name: value})
    assert response.status_code == 400, response.content
    body: Any = response.json()
    assert filter_name in body, body


@pytest.mark.parametrize(("route", "filter_name"), integer_filters())
def test_in_range_integer_filter_that_matches_nothing_is_an_empty_page(
    client: APIClient, route: str, filter_name: str
) -> None:
    """An id that names nothing answers an empty page, not a 400 that would tell which ids exist."""
    response = client.get(reverse(route), {filter_name: str(2**62)})
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []
