"""Filters shared by the apps' filtersets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.db import models
from django.db.models import QuerySet
from django_filters import fields as filter_fields
from django_filters.filterset import FILTER_FOR_DBFIELD_DEFAULTS
from drf_spectacular.utils import extend_schema_field


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time filter that queries in UTC.

    Python accepts UTC offsets up to ±23:59; PostgreSQL refuses those beyond ±15:59 with an error. Converting
    to UTC first makes every valid input a valid query on every database."""

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if isinstance(value, datetime) and value.tzinfo is not None:
            try:
                value = value.astimezone(UTC)
            except OverflowError:  # year 1 minus an offset: before any stored time
                value = datetime.min.replace(tzinfo=UTC)
        return super().filter(qs, value)


# Every integer column Fleetgate filters on is at most a signed 64-bit integer. A value outside that range is
# refused by the form (400 with the field's message) instead of reaching the database: SQLite raises
# OverflowError and PostgreSQL "integer out of range" for it, both a 500.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class BoundedIntegerField(forms.IntegerField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", INT64_MIN)
        kwargs.setdefault("max_value", INT64_MAX)
        super().__init__(*args, **kwargs)


@extend_schema_field({"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX})
class IdFilter(django_filters.NumberFilter):
    """An integer (an id, a count): whole numbers in the 64-bit range only."""

    field_class = BoundedIntegerField


def _refuse_out_of_range(field: forms.Field, value: Any) -> None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return  # not an integer at all: the model field's own validation answers
    if not INT64_MIN <= number <= INT64_MAX:
        raise forms.ValidationError(
            field.error_messages["invalid_choice"], code="invalid_choice", params={"value": value}
        )


class BoundedModelChoiceField(filter_fields.ModelChoiceField):
    def to_python(self, value: Any) -> Any:
        if value not in self.empty_values:
            _refuse_out_of_range(self, value)
        return super().to_python(value)


class BoundedModelMultipleChoiceField(filter_fields.ModelMultipleChoiceField):
    def _check_values(self, value: Any) -> Any:
        for item in value or ():
            _refuse_out_of_range(self, item)
        return super()._check_values(value)


class BoundedModelChoiceFilter(django_filters.ModelChoiceFilter):
    field_class = BoundedModelChoiceField


class BoundedModelMultipleChoiceFilter(django_filters.ModelMultipleChoiceFilter):
    field_class = BoundedModelMultipleChoiceField


def _bounded_defaults() -> dict[Any, dict[str, Any]]:
    """django-filters' defaults with integer columns bounded and foreign keys filtered by id.

    A foreign key is filtered by its id without looking the object up: an id that names nothing (or an object
    the caller may not see) gives an empty page, never a 400 "select a valid choice" that would tell a
    scoped user which ids exist in other groups."""
    defaults: dict[Any, dict[str, Any]] = {}
    for field_class, spec in FILTER_FOR_DBFIELD_DEFAULTS.items():
        spec = dict(spec)
        filter_class = spec["filter_class"]
        if issubclass(field_class, models.ForeignKey | models.OneToOneField):
            spec = {"filter_class": IdFilter}
        elif filter_class is django_filters.NumberFilter:
            if issubclass(field_class, models.IntegerField | models.AutoField):
                spec["filter_class"] = IdFilter
        elif filter_class is django_filters.ModelChoiceFilter:
            spec["filter_class"] = BoundedModelChoiceFilter
        elif filter_class is django_filters.ModelMultipleChoiceFilter:
            spec["filter_class"] = BoundedModelMultipleChoiceFilter
        defaults[field_class] = spec
    return defaults


class BlankChoiceFilter(django_filters.ChoiceFilter):
    """A choice filter whose choices include the blank one (``""``: "not evaluated", say): ``?decision=``
    selects the rows with that blank value, as the schema's enum promises, instead of meaning "no filter"."""

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if value == "" and self.parent is not None and "" in self.parent.data.getlist(self.field_name):
            return self.get_method(qs)(**{f"{self.field_name}__{self.lookup_expr}": ""})
        return super().filter(qs, value)


class FleetFilterSet(django_filters.FilterSet):
    """The base of every filterset: integer and related-object filters refuse values no column can hold."""

    FILTER_DEFAULTS = _bounded_defaults()

    @classmethod
    def filter_for_lookup(cls, field: Any, lookup_type: str) -> Any:
        filter_class, params = super().filter_for_lookup(field, lookup_type)
        if filter_class is django_filters.ChoiceFilter and any(v == "" for v, _ in params.get("choices", ())):
            return BlankChoiceFilter, params
        return filter_class, params
