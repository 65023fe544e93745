"""The API's filter backend: django-filter's, stricter about blank values.

django-filter treats `?until=` as "no filter", which suits HTML forms. An API client that sends a typed
parameter (a number, a date-time, a choice, a boolean) with no value has made a mistake it should hear of:
the parameter is refused with a 400 naming it. Free-text filters may still be blank."""

from __future__ import annotations

from typing import Any

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

_TEXT = (django_filters.CharFilter,)
_BOOLEAN_WORDS = ("true", "false")


class StrictFilterBackend(DjangoFilterBackend):
    def get_filterset(self, request: Any, queryset: Any, view: Any) -> Any:
        filterset = super().get_filterset(request, queryset, view)
        if filterset is None:
            return None
        refused: dict[str, list[str]] = {}
        for name, declared in filterset.filters.items():
            values = request.query_params.getlist(name)
            if not values:
                continue
            if isinstance(declared, django_filters.BooleanFilter):
                if len(values) > 1 or values[0] not in _BOOLEAN_WORDS:
                    refused[name] = ["Give true or false, once."]
            elif "" in values and not _may_be_blank(declared):
                refused[name] = ["A value is required when this parameter is given."]
        if refused:
            raise ValidationError(refused)
        return filterset


def _may_be_blank(declared: Any) -> bool:
    """Free text may be blank; so may a choice whose choices include the blank one (it names that choice)."""
    if isinstance(declared, django_filters.ChoiceFilter | django_filters.MultipleChoiceFilter):
        return any(value == "" for value, _label in declared.extra.get("choices", ()) or ())
    return isinstance(declared, _TEXT)
