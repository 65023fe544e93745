"""Queries of the push fan-out (issue 19): one rollout to N sandbox clusters, run in process on the
production code path, from the rollout queued to synced (the coordinator's advance, every slice's
sync_slice task with its claim, finish and conclude). The fan-out costs a fixed number of queries per
rollout and per slice of FLEETGATE_SYNC_SLICE legs, none per leg: a rollout to 24 clusters (3 slices of 8)
costs exactly 2 slices more than one to 8 (1 slice), and one to 12 clusters (2 slices of 6) exactly 1 slice
more. Both figures are asserted exactly so that a change
adding a query to every slice or every leg is seen (docs/benchmarks.md, "Push fan-out: queries per cluster,
profiled (issue 19)", explains each query), and so is the goal: at most 12 queries per cluster.

How the audit seal is counted: the tests run on committed transactions (``transaction=True``), so each
transaction's commit hook runs here as it does in production. On SQLite it seals the pending audit events
in the committing thread; those queries are counted in the total and also on their own (every query run
inside the commit hook ``seal_after_commit``, its transaction's BEGIN and COMMIT included; the events'
inserts by ``record()`` are not the seal's). On PostgreSQL the hook wakes the background sealer thread
(``fleet/audit/sealing.py``), whose queries run on its own connection, not the slice's: 0 here.

Run with ``-s`` to see the breakdown by query kind (operation and table) of a slice."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet.audit import sealing
from fleet.audit.models import AuditEvent
from fleet.rollouts import dispatch
from fleet.rollouts.models import Rollout
from fleet.sources.services import fetch_repository
from tests.rollouts.conftest import (
    NAMESPACE,
    RUNNERS,
    GitRepo,
    configmap,
    deployment,
    make_group,
    make_mapping,
    make_repository,
)

pytestmark = pytest.mark.django_db(transaction=True)

SLICE = 8
# The asserted figures, per slice of 8 legs: the slice's own queries (the same on SQLite and PostgreSQL), and
# the audit seal in the commit hooks. SQLite seals in the committing thread, once per slice (its claim,
# finish and advance commit inside one ``sealing_deferred()`` block);
# on PostgreSQL the hook only wakes the process's background sealer, whose queries run on its own
# connection, off the slice's path (0 here). See docs/benchmarks.md for the table.
OWN_PER_SLICE = 20
SEAL_PER_SLICE = {"sqlite": 8, "postgresql": 0}
# Per rollout, whatever N: the first advance (grouped counts, bulk update of the legs, transition and their
# audit), the last advance's transition to synced, and (SQLite) their seals.
FIXED = {"sqlite": 19, "postgresql": 11}


_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)


def kind(sql: str) -> str:
    """``SELECT rollouts_clustersync``: the statement's operation and its first table."""
    sql = re.sub(r"^\d+ times: ", "", sql.lstrip())  # an executemany, as the debug cursor logs it
    words = sql.split(None, 1)
    op = words[0].upper() if words else "?"
    if op in ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT"):
        return op
    found = _TABLE.search(sql)
    return f"{op} {found.group(1) if found else '-'}"


class SealSpy:
    """Counts the queries the audit seal runs in the commit hooks (``sealing.seal_after_commit``, which
    runs unchanged): the spy only notes the connection's query log before and after each call."""

    def __init__(self, monkeypatch: Any) -> None:
        self.queries = 0
        real = sealing.seal_after_commit

        def seal_after_commit() -> None:
            before = len(connection.queries_log)
            try:
                real()
            finally:
                self.queries += len(connection.queries_log) - before

        monkeypatch.setattr(sealing, "seal_after_commit", seal_after_commit)


def fan_out(n: int, git_repo: Any, make_fleet: Any, tasks: Any, tag: str, spy: SealSpy) -> dict[str, Any]:
    """One rollout to ``n`` clusters: prepare outside the count, then the fan-out counted task by task."""
    make_fleet({f"c{i}": {"env": tag} for i in range(n)})
    group = make_group(tag, tag, max_parallel=n)  # every leg queued by the first advance, in full slices
    repo = make_repository(git_repo, name=tag)
    mapping = make_mapping(repo, "web", f"apps/{tag}", group)
    git_repo.commit(
        {
            f"apps/{tag}/ns.yaml": NAMESPACE,
            f"apps/{tag}/cm.yaml": configmap("web", {"color": "blue"}),
            f"apps/{tag}/deploy.yaml": deployment("web", "nginx:1"),
        },
        tag,
    )
    assert fetch_repository(repo).ok
    # Prepare (render lookup, gate, plan) up to the rollout queued: not the fan-out, not counted.
    while any(q.name == dispatch.PREPARE for q in tasks.items):
        item = next(q for q in tasks.items if q.name == dispatch.PREPARE)
        tasks.items.remove(item)
        RUNNERS[item.name](*item.args)
    rollout = Rollout.objects.get(mapping=mapping)
    assert rollout.state == "queued", rollout.reason
    per_task: list[tuple[str, Counter[str]]] = []
    spy.queries = 0
    with CaptureQueriesContext(connection) as ctx:
        steps = 0
        while tasks.items:
            item = tasks.items.pop(0)
            before = len(ctx.captured_queries)
            RUNNERS[item.name](*item.args)
            per_task.append((item.name, Counter(kind(q["sql"]) for q in ctx.captured_queries[before:])))
            steps += 1
            assert steps < 10 * n + 20, "the task queue did not settle"
    rollout.refresh_from_db()
    assert rollout.state == "synced", rollout.reason
    sealed(limit=60)
    return {
        "total": len(ctx.captured_queries),
        "seal": spy.queries,
        "per_task": per_task,
    }


def sealed(limit: float) -> None:
    """Let the background sealer (PostgreSQL) seal what the fan-out recorded before the test's database
    access ends: poll, bounded; nothing here seals."""
    deadline = time.monotonic() + limit
    while AuditEvent.objects.pending().exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def show(n: int, result: dict[str, Any]) -> None:
    slices = [c for name, c in result["per_task"] if name == dispatch.SYNC_SLICE]
    print(f"\nN={n}: {result['total']} queries, {result['seal']} of them the audit seal; "
          f"{len(result['per_task'])} tasks ({len(slices)} slices)")
    if slices:
        one = slices[0]
        print(f"one slice (sync_slice task: claim, finish, conclude and its advance): {sum(one.values())}")
        for k, count in sorted(one.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {count:3d}  {k}")


def test_push_fan_out_costs_fixed_queries_per_slice_and_none_per_cluster(
    tmp_path: Any, make_fleet: Any, tasks: Any, monkeypatch: Any, settings: Any
) -> None:
    settings.FLEETGATE_AUDIT_SEAL_BACKGROUND = True  # as deployed (the suite seals in the test thread)
    settings.FLEETGATE_SYNC_SLICE = SLICE
    spy = SealSpy(monkeypatch)
    small = fan_out(SLICE, GitRepo(tmp_path / "small"), make_fleet, tasks, "qsmall", spy)
    big = fan_out(3 * SLICE, GitRepo(tmp_path / "big"), make_fleet, tasks, "qbig", spy)
    show(SLICE, small)
    show(3 * SLICE, big)
    assert [name for name, _ in big["per_task"]].count(dispatch.SYNC_SLICE) == 3
    per_slice = (big["total"] - small["total"]) / 2
    fixed = small["total"] - per_slice
    seal_per_slice = (big["seal"] - small["seal"]) / 2
    print(f"\nper slice of {SLICE}: {per_slice} ({seal_per_slice} the seal), "
          f"per cluster {per_slice / SLICE}; fixed per rollout: {fixed}")
    seal = SEAL_PER_SLICE[connection.vendor]
    assert (per_slice, seal_per_slice) == (OWN_PER_SLICE + seal, seal), (small, big)
    assert fixed == FIXED[connection.vendor], (small, big)
    assert per_slice / SLICE <= 12  # the goal: at most 12 queries per cluster
    # No query per leg: two slices of 6 legs cost what two slices of 8 do.
    middle = fan_out(12, GitRepo(tmp_path / "middle"), make_fleet, tasks, "qmiddle", spy)
    assert [name for name, _ in middle["per_task"]].count(dispatch.SYNC_SLICE) == 2
    assert middle["total"] == fixed + 2 * per_slice, middle
