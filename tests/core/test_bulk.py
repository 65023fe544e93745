"""fleet.core.bulk.update_rows: rows written with a few statements, read back as saved (issue 19)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clusters.models import Cluster
from fleet.core import bulk

pytestmark = pytest.mark.django_db


def test_update_rows_writes_shared_and_own_values_with_one_statement_per_group_or_chunk() -> None:
    Cluster.objects.bulk_create(
        [Cluster(name=f"c{i}", api_url="https://127.0.0.1:6443", token="t") for i in range(7)]
    )
    rows = list(Cluster.objects.order_by("name"))
    for i, row in enumerate(rows):
        if i < 4:  # four rows share their values: one UPDATE ... WHERE id IN (...)
            row.labels, row.description, row.insecure_skip_tls_verify = {"env": "dev"}, "shared", True
        else:  # three rows with their own values: one UPDATE ... FROM (VALUES ...)
            row.labels = {"env": "prod", "n": str(i), "quote": "it's \"odd\""}
            row.description, row.insecure_skip_tls_verify = f"own {i}", False
    with CaptureQueriesContext(connection) as ctx:
        statements = bulk.update_rows(rows, ["labels", "description", "insecure_skip_tls_verify"])
    assert statements == 2 == len(ctx.captured_queries)
    got = {c.name: (c.labels, c.description, c.insecure_skip_tls_verify) for c in Cluster.objects.all()}
    assert got == {
        f"c{i}": ({"env": "dev"}, "shared", True)
        if i < 4
        else ({"env": "prod", "n": str(i), "quote": "it's \"odd\""}, f"own {i}", False)
        for i in range(7)
    }


def test_update_rows_chunks_and_leaves_other_rows_alone() -> None:
    Cluster.objects.bulk_create(
        [Cluster(name=f"c{i}", api_url="https://127.0.0.1:6443", token="t") for i in range(5)]
    )
    rows = list(Cluster.objects.order_by("name"))[:4]
    for i, row in enumerate(rows):
        row.description = f"d{i}"
    assert bulk.update_rows(rows, ["description"], chunk=3) == 2
    assert bulk.update_rows([], ["description"]) == 0
    got = dict(Cluster.objects.values_list("name", "description"))
    assert got == {"c0": "d0", "c1": "d1", "c2": "d2", "c3": "d3", "c4": ""}


def test_update_rows_without_grouping_is_one_statement_per_chunk_whatever_the_values() -> None:
    Cluster.objects.bulk_create(
        [Cluster(name=f"c{i}", api_url="https://127.0.0.1:6443", token="t") for i in range(6)]
    )
    rows = list(Cluster.objects.order_by("name"))
    for i, row in enumerate(rows):
        row.description = "same" if i < 4 else f"own {i}"
    with CaptureQueriesContext(connection) as ctx:
        assert bulk.update_rows(rows, ["description"], group=False) == 1 == len(ctx.captured_queries)
    got = dict(Cluster.objects.values_list("name", "description"))
    assert got == {f"c{i}": "same" if i < 4 else f"own {i}" for i in range(6)}
