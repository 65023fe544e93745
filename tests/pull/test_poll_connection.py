"""A waiting agent poll holds no database connection (a thousand agents long-polling must not hold a
thousand PostgreSQL connections: found by bench/bench_agents.py, "too many clients already")."""

from __future__ import annotations

import pytest
from django.db import connection

from fleet.rollouts.services import agentwork
from tests.pull.conftest import pull_cluster


@pytest.mark.django_db(transaction=True)
def test_a_waiting_poll_closes_its_database_connection() -> None:
    cluster = pull_cluster("edge-wait")
    connection.ensure_connection()
    assert connection.connection is not None
    assert agentwork.poll(cluster, 0.3) == []  # no work: it looked once, then waited on the doorbell
    assert connection.connection is None  # closed before the wait, not reopened (no query after it)


@pytest.mark.django_db
def test_a_poll_inside_a_transaction_keeps_its_connection() -> None:
    cluster = pull_cluster("edge-atomic")
    assert agentwork.poll(cluster, 0.3) == []
    assert connection.connection is not None  # the caller's transaction is not cut
