"""Writing a few columns of many saved rows with a few statements, for thousands of rows.

Django's ``bulk_update`` builds a ``CASE WHEN pk = … THEN …`` expression per row and field, which costs
about a millisecond of Python per row (10 s for 10,000 rows); ``update_rows`` writes rows that share their
values with one ``UPDATE … WHERE pk IN (…)`` per chunk, and the others with one ``UPDATE … FROM (VALUES …)``
per chunk, built as plain SQL with the fields' own database preparation (PostgreSQL and SQLite 3.33+;
other databases: ``bulk_update``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.db import connections, models, router

CHUNK = 500  # rows per statement


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def update_rows(
    objs: Sequence[models.Model], fields: Sequence[str], *, chunk: int = CHUNK, group: bool = True
) -> int:
    """Write ``fields`` of ``objs`` (saved instances of one model) to the database; returns the number of
    UPDATE statements run: one per group of rows with equal values (per chunk of their keys), and one per
    chunk of the rows whose values are their own. ``group=False``: every row by the VALUES statement, one
    per chunk whatever the values (a fixed count, for a few rows whose values may or may not agree)."""
    if not objs or not fields:
        return 0
    model = type(objs[0])
    meta = model._meta
    columns: list[models.Field[Any, Any]] = []
    for name in fields:
        found = meta.get_field(name)
        if not isinstance(found, models.Field) or not found.column:
            raise ValueError(f"{meta.label}.{name} is not a concrete column")
        columns.append(found)
    groups: dict[str, list[models.Model]] = {}
    for i, obj in enumerate(objs):
        key = _key([getattr(obj, c.attname) for c in columns]) if group else str(i)
        groups.setdefault(key, []).append(obj)
    db = router.db_for_write(model)
    connection = connections[db]
    statements = 0
    single: list[models.Model] = []
    for rows in groups.values():
        if len(rows) == 1:
            single += rows
            continue
        values = {c.name: getattr(rows[0], c.attname) for c in columns}
        keys = [o.pk for o in rows]
        for first in range(0, len(keys), chunk):
            model._base_manager.using(db).filter(pk__in=keys[first : first + chunk]).update(**values)
            statements += 1
    if single and connection.vendor not in ("postgresql", "sqlite"):
        model._base_manager.using(db).bulk_update(single, list(fields), batch_size=chunk)
        return statements + (len(single) + chunk - 1) // chunk
    quote = connection.ops.quote_name
    assert meta.pk is not None and meta.pk.column  # noqa: S101 - a saved model's table has a key
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    names = [quote(str(c.column)) for c in columns]
    for first in range(0, len(single), chunk):
        rows = single[first : first + chunk]
        params: list[Any] = []
        for obj in rows:
            params.append(obj.pk)
            params += [c.get_db_prep_save(getattr(obj, c.attname), connection) for c in columns]
        if connection.vendor == "postgresql":
            casts = [meta.pk.cast_db_type(connection)] + [c.cast_db_type(connection) for c in columns]
            row = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
            aliases = ", ".join([pk, *names])
            assign = ", ".join(f"{name} = v.{name}" for name in names)
            # names and casts from the model's metadata, quoted; every value is a parameter
            sql = (f"UPDATE {table} SET {assign} FROM (VALUES {', '.join([row] * len(rows))}) "  # noqa: S608
                   f"AS v({aliases}) WHERE {table}.{pk} = v.{pk}")
        else:  # SQLite names a VALUES table's columns column1, column2, …
            row = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
            assign = ", ".join(f"{name} = v.column{i + 2}" for i, name in enumerate(names))
            sql = (f"UPDATE {table} SET {assign} FROM (VALUES {', '.join([row] * len(rows))}) AS v "  # noqa: S608
                   f"WHERE {table}.{pk} = v.column1")
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        statements += 1
    return statements
