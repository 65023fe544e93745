"""Filters shared by the apps' filtersets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django.db.models import QuerySet


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
