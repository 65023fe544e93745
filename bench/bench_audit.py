"""Audit log benchmarks: append throughput, and exporting a million events in constant memory.

    .venv/bin/python -m bench audit                     # SQLite file databases in a temporary directory
    .venv/bin/python -m bench audit -- --events 200000  # smaller run
    BENCH_AUDIT_POSTGRES_URL=postgres://u:p@127.0.0.1/fleetgate_bench .venv/bin/python -m bench audit

Each measurement runs in its own subprocess with DATABASE_URL pointing at a scratch database, so peak memory
(`ru_maxrss`, the resident-set high-water mark) belongs to that one measurement:

1. append: `services.record()` events/s in one process, one transaction per event as in production, against
   two baselines without hashing or the chain-head lock measured in the same run: one plain INSERT per
   transaction, and `bulk_create` in batches.
2. fill: N events with precomputed chained hashes (`services.event_hash`) by `bulk_create`; then
   `services.verify()` over all of them.
3. export: CSV and JSON Lines through the generators the API streams (`export.iter_csv`, `export.iter_jsonl`)
   to /dev/null, for N/10 and N events, against a bare `values_list().iterator()` loop writing csv rows.

4. writers (issue 19, PostgreSQL only): N writer processes (1, 4, 16) append events at the same time, each
   event in a transaction of its own as in production, for every design in the same run: the baseline is the
   old append (a faithful copy of the pre-issue-19 `record()`, kept here: lock the chain head row inside the
   writer's transaction, hash, insert, move the head), against today's `record()` (insert a pending event;
   the commit hook wakes the process's background sealer thread, which seals committed events a batch per
   lock: "new"), the same with the commit hook sealing in the writer's thread ("sync",
   FLEETGATE_AUDIT_SEAL_BACKGROUND=0, as SQLite does), and the ceiling: `record()`'s insert alone with no
   commit hook and no chain ("plain", sealed after the clock stops). `--hold-ms` adds that much work inside
   each writer transaction after the event is recorded, as a change's other statements would. The rate counts
   until every event is sealed; the machine's load average is printed with each row.
   `--batch 1,10,25`: transactions of B events each (B > 1 also runs, per writer count): "old" (the old
   append B times in one transaction, the head locked until it commits), "new" (`record()` B times: B
   inserts, one commit hook), "batched" (`record()` inside `services.batched()`: one bulk INSERT of the B
   events at the block's end, one commit hook waking the background sealer) and "plain" (the same bulk INSERT
   with no commit hook and no chain: the ceiling for that transaction size). Every design's time ends when
   its writers have exited and every event is sealed (if a writer's sealer left events pending at its exit,
   the parent seals them inside the clock, with the same `seal()`); "inserted" is when the last writer's last
   commit returned, so "sealed" well after "inserted" means the sealer is the bottleneck; "peak pending" is
   the largest backlog of committed, unsealed events seen while the writers ran (sampled every 0.1 s).

A PostgreSQL run is added when BENCH_AUDIT_POSTGRES_URL names a database whose name ends in `_bench` (it is
dropped and created again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import isolated

ROOT = Path(__file__).resolve().parent.parent


# --- parent: orchestration -------------------------------------------------------------------------------


def _child(phase: str, database_url: str, workdir: Path, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "FLEETGATE_VAR_DIR": str(workdir / "var"),
        "FLEETGATE_LOG_LEVEL": "WARNING",
    }
    return isolated.run("bench.bench_audit", ["--child", phase, *args], env, f"bench child {phase}")


def _reset_postgres(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[-1].split("?")[0]
    if not name.endswith("_bench"):
        raise SystemExit("BENCH_AUDIT_POSTGRES_URL must name a database ending in _bench (it is dropped).")
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def _mb(kb: float) -> str:
    return f"{kb / 1024:.0f} MB"


def _print_append(label: str, append: dict[str, Any]) -> None:
    print(f"\n## Append ({label})\n")
    print("| what | events | seconds | events/s |")
    print("|---|---:|---:|---:|")
    for key, text in (
        ("record", "`record()`: hash + chain-head lock, one transaction per event"),
        ("single", "baseline: plain INSERT, one transaction per event, no hash"),
        ("bulk", "baseline: `bulk_create` (batches of 1000), no hash"),
    ):
        row = append[key]
        print(f"| {text} | {row['n']} | {row['seconds']:.2f} | {row['n'] / row['seconds']:,.0f} |")
    rate = append["record"]["n"] / append["record"]["seconds"]
    single_rate = append["single"]["n"] / append["single"]["seconds"]
    bulk_rate = append["bulk"]["n"] / append["bulk"]["seconds"]
    print(
        f"\nrecord() runs at {rate / single_rate:.2f}x the plain single-insert rate and "
        f"{rate / bulk_rate:.3f}x the bulk rate; hashing alone costs {append['hash_us']:.1f} µs per event.",
        flush=True,
    )


def _designs(batch: int) -> tuple[str, ...]:
    return ("old", "sync", "new", "plain") if batch == 1 else ("old", "new", "batched", "plain")


def _writers(pg_url: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every design, for each hold, transaction size and writer count, in one run on one PostgreSQL
    database."""
    _reset_postgres(pg_url)
    counts = [int(n) for n in args.writers.split(",")]
    holds = [float(h) for h in args.hold_ms.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    rows: dict[str, Any] = {}
    print("\n## Concurrent writers (PostgreSQL)\n", flush=True)
    print(
        "| hold in transaction | events per transaction | writers | design | events | inserted (s) "
        "| sealed (s) | events/s | vs old | peak pending | pending at exit | load 1m |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for hold in holds:
        for batch in batches:
            for n in counts:
                pair = {}
                for design in _designs(batch):
                    sizes = (str(n), str(args.writer_events), str(hold), str(batch))
                    result = _child("writers", pg_url, workdir, design, *sizes)
                    pair[design] = result
                    rate = result["events"] / result["seconds"]
                    old_rate = pair["old"]["events"] / pair["old"]["seconds"]
                    ratio = f"{rate / old_rate:.2f}x" if design != "old" else ""
                    pending = (
                        "no chain | no chain"
                        if design == "plain"
                        else f"{result['pending_peak']} | {result['pending_left']}"
                    )
                    print(
                        f"| {hold:g} ms | {batch} | {n} | {design} | {result['events']} | "
                        f"{result['inserted_seconds']:.2f} | {result['seconds']:.2f} | {rate:,.0f} | "
                        f"{ratio} | {pending} | {result['load'][0]:.1f} |",
                        flush=True,
                    )
                rows[f"{hold:g}ms-{batch}-{n}"] = pair
    check = _child("verify", pg_url, workdir)
    print(
        f"\nverify() after all runs (the designs share one chain): ok={check['ok']}, "
        f"{check['checked']} events"
    )
    return {"runs": rows, "verify": check}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench audit")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to export (default 1,000,000)")
    parser.add_argument(
        "--append", type=int, default=5000, help="events appended with record() (default 5000)"
    )
    parser.add_argument("--workdir", help="keep the scratch databases here instead of a temporary directory")
    parser.add_argument("--only", choices=("append", "export", "writers"), help="run one part only")
    parser.add_argument(
        "--writer-events", type=int, default=4000, help="events per writers measurement (default 4000)"
    )
    parser.add_argument("--writers", default="1,4,16", help="writer process counts (default 1,4,16)")
    parser.add_argument(
        "--hold-ms", default="0,2", help="work inside each writer transaction, ms (default 0,2)"
    )
    parser.add_argument(
        "--batch", default="1", help="events per writer transaction, e.g. 1,10,25 (default 1)"
    )
    args = parser.parse_args(argv or [])

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fleetgate-bench-audit-"))
    workdir.mkdir(parents=True, exist_ok=True)
    small = max(args.events // 10, 1)
    targets = [("SQLite", f"sqlite:///{workdir / 'audit-export.sqlite3'}")]
    pg_url = os.environ.get("BENCH_AUDIT_POSTGRES_URL", "")
    if pg_url:
        targets.append(("PostgreSQL", pg_url))

    print(f"workdir {workdir}; {os.cpu_count()} CPUs; python {sys.version.split()[0]}", flush=True)
    results: dict[str, Any] = {"events": args.events, "small": small, "targets": {}}

    if args.only == "writers":
        if not pg_url:
            raise SystemExit("the writers part needs BENCH_AUDIT_POSTGRES_URL")
        results["writers"] = _writers(pg_url, workdir, args)
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
        print(f"\nresults: {workdir / 'results.json'}")
        return

    results["append"] = {}
    if args.only != "export":
        append_db = workdir / "audit-append.sqlite3"
        append_db.unlink(missing_ok=True)
        results["append"]["SQLite"] = _child("append", f"sqlite:///{append_db}", workdir, str(args.append))
        _print_append("SQLite", results["append"]["SQLite"])
        if pg_url:
            _reset_postgres(pg_url)
            results["append"]["PostgreSQL"] = _child("append", pg_url, workdir, str(args.append))
            _print_append("PostgreSQL", results["append"]["PostgreSQL"])
        if pg_url:
            results["writers"] = _writers(pg_url, workdir, args)
    if args.only == "append":
        targets = []

    for label, url in targets:
        if label == "PostgreSQL":
            _reset_postgres(url)
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(str(workdir / "audit-export.sqlite3") + suffix).unlink(missing_ok=True)
        fill = _child("fill", url, workdir, str(args.events))
        verify = _child("verify", url, workdir)
        exports = {}
        for fmt in ("bare", "csv", "jsonl"):
            for n in (small, args.events):
                exports[f"{fmt}-{n}"] = _child("export", url, workdir, fmt, str(n))
                print(f"  {label} export {fmt} {n}: {exports[f'{fmt}-{n}']}", flush=True)
        results["targets"][label] = {"fill": fill, "verify": verify, "exports": exports}

        print(f"\n## Export ({label})\n")
        print(
            f"Filling {fill['n']:,} events with chained hashes by bulk_create: {fill['seconds']:.1f} s "
            f"({fill['n'] / fill['seconds']:,.0f} events/s). `verify()` over all of them: "
            f"{verify['seconds']:.1f} s ({verify['checked'] / verify['seconds']:,.0f} events/s, "
            f"ok={verify['ok']}).\n"
        )
        print("| format | events | seconds | events/s | output | peak RSS | RSS before export |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        names = {
            "bare": "baseline: bare `values_list` → csv.writer",
            "csv": "CSV (`iter_csv`)",
            "jsonl": "JSON Lines (`iter_jsonl`)",
        }
        for fmt in ("bare", "csv", "jsonl"):
            for n in (small, args.events):
                row = exports[f"{fmt}-{n}"]
                print(
                    f"| {names[fmt]} | {n:,} | {row['seconds']:.1f} | {n / row['seconds']:,.0f} | "
                    f"{row['bytes'] / 1e6:,.0f} MB | {_mb(row['maxrss_kb'])} | {_mb(row['rss_before_kb'])} |"
                )
        sys.stdout.flush()

    out = workdir / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}")


# --- child: one measurement per process --------------------------------------------------------------------


def _setup() -> None:
    import django

    django.setup()


def _rss_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _fields(i: int, sequence: int, when: datetime) -> dict[str, Any]:
    actions = (
        "cluster.update",
        "rollout.sync",
        "policy.evaluate",
        "policy.evaluate.deny",
        "commit.fetch",
        "rollout.approve",
        "pathmapping.update",
        "repository.fetch",
    )
    return {
        "sequence": sequence,
        "time": when,
        "actor_id": None,
        "actor_name": f"user{i % 20}",
        "change_context": "api",
        "request_id": f"{i:032x}",
        "source_address": "10.0.0.1",
        "action": actions[i % len(actions)],
        "target_type": "cluster",
        "target_id": str(i % 500),
        "target_repr": f"cluster-{i % 500}",
        "scope_group_id": i % 5 + 1,
        "scope_group_name": f"group-{i % 5}",
        "cluster_name": f"cluster-{i % 50}",
        "repository_name": f"repo-{i % 10}",
        "before": {"labels": {"env": "staging"}, "replicas": i % 7},
        "after": {"labels": {"env": "prod"}, "replicas": i % 7 + 1},
        "message": f"changed labels and replicas of cluster-{i % 500} (event {i})",
    }


def child_append(n: int) -> dict[str, Any]:
    from django.db import transaction

    from fleet.audit.models import AuditEvent
    from fleet.audit.services import event_hash, record
    from fleet.core.context import acting

    _migrate()
    now = datetime.now(UTC)
    with acting(change_context="command"):
        start = time.perf_counter()
        for i in range(n):
            record(
                "bench.append",
                target_type="thing",
                target_id=str(i),
                target_repr=f"thing {i}",
                after={"i": i, "labels": {"env": "prod"}},
                message=f"appended {i}",
            )
        record_s = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(n):
        with transaction.atomic():
            AuditEvent(**_fields(i, 10_000_000 + i, now), prev_hash="", hash="").save()
    single_s = time.perf_counter() - start

    start = time.perf_counter()
    batch = []
    for i in range(n):
        batch.append(AuditEvent(**_fields(i, 20_000_000 + i, now), prev_hash="", hash=""))
        if len(batch) == 1000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)
    bulk_s = time.perf_counter() - start

    sample = {**_fields(1, 1, now), "prev_hash": "0" * 64}
    start = time.perf_counter()
    for _ in range(20_000):
        event_hash(sample)
    hash_us = (time.perf_counter() - start) / 20_000 * 1e6
    return {
        "record": {"n": n, "seconds": record_s},
        "single": {"n": n, "seconds": single_s},
        "bulk": {"n": n, "seconds": bulk_s},
        "hash_us": hash_us,
    }


def child_fill(n: int) -> dict[str, Any]:
    from django.db import transaction

    from fleet.audit.models import AuditChainHead, AuditEvent
    from fleet.audit.services import GENESIS_HASH, event_hash

    _migrate()
    start_time = datetime.now(UTC) - timedelta(seconds=n)
    prev = GENESIS_HASH
    start = time.perf_counter()
    batch: list[AuditEvent] = []
    with transaction.atomic():
        for i in range(n):
            fields = _fields(i, i + 1, start_time + timedelta(seconds=i))
            fields["prev_hash"] = prev
            fields["hash"] = prev = event_hash(fields)
            batch.append(AuditEvent(**fields))
            if len(batch) == 5000:
                AuditEvent.objects.bulk_create(batch)
                batch = []
        AuditEvent.objects.bulk_create(batch)
        AuditChainHead.objects.update_or_create(pk=1, defaults={"sequence": n, "hash": prev})
    return {"n": n, "seconds": time.perf_counter() - start}


def child_verify() -> dict[str, Any]:
    from fleet.audit.services import verify

    start = time.perf_counter()
    result = verify()
    return {"seconds": time.perf_counter() - start, "ok": result.ok, "checked": result.checked}


def child_export(fmt: str, n: int) -> dict[str, Any]:
    import csv

    from fleet.audit.export import EXPORT_FIELDS, iter_csv, iter_jsonl
    from fleet.audit.models import AuditEvent

    queryset = AuditEvent.objects.filter(sequence__lte=n)
    AuditEvent.objects.exists()  # connect before measuring
    rss_before = _rss_kb()
    written = 0
    start = time.perf_counter()
    if fmt == "bare":

        class Counter:
            def write(self, text: str) -> int:
                nonlocal written
                written += len(text.encode())
                return len(text)

        writer = csv.writer(Counter())
        writer.writerow(EXPORT_FIELDS)
        for row in queryset.order_by("sequence").values_list(*EXPORT_FIELDS).iterator(chunk_size=2000):
            writer.writerow(row)
    else:
        chunks = iter_csv(queryset) if fmt == "csv" else iter_jsonl(queryset)
        with open(os.devnull, "wb") as sink:
            for chunk in chunks:
                written += len(chunk)
                sink.write(chunk)
    seconds = time.perf_counter() - start
    return {
        "fmt": fmt,
        "n": n,
        "seconds": seconds,
        "bytes": written,
        "maxrss_kb": _rss_kb(),
        "rss_before_kb": rss_before,
    }


def old_record(action: str, **kwargs: Any) -> None:
    """The append before issue 19, kept as the benchmark's baseline: the same fields as `record()`, then the
    chain head locked (SELECT ... FOR UPDATE) in the caller's transaction until it commits, hash, insert,
    move the head."""
    from django.db import transaction
    from django.utils import timezone

    from fleet.audit.models import AuditChainHead, AuditEvent
    from fleet.audit.redact import redact
    from fleet.audit.services import _jsonable, event_hash
    from fleet.core import context

    ctx = context.current()
    after = kwargs.get("after")
    fields: dict[str, Any] = {
        "time": timezone.now(),
        "actor_id": None,
        "actor_name": (ctx.operator or "system")[:150],
        "change_context": ctx.change_context,
        "request_id": ctx.request_id,
        "source_address": ctx.source_address,
        "action": action,
        "target_type": kwargs.get("target_type", ""),
        "target_id": kwargs.get("target_id", ""),
        "target_repr": kwargs.get("target_repr", "")[:200],
        "scope_group_id": None,
        "scope_group_name": "",
        "cluster_name": "",
        "repository_name": "",
        "before": None,
        "after": _jsonable(redact(after)) if after is not None else None,
        "message": kwargs.get("message", ""),
    }
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        fields["sequence"] = head.sequence + 1
        fields["prev_hash"] = head.hash
        fields["hash"] = event_hash(fields)
        AuditEvent(**fields).save()
        head.sequence = fields["sequence"]
        head.hash = fields["hash"]
        head.save(update_fields=["sequence", "hash"])


def _writer_process(
    design: str, index: int, count: int, hold_ms: float, batch: int, barrier: Any, done: Any
) -> None:
    from contextlib import nullcontext

    from django.db import connections, transaction

    from fleet.audit.services import batched, record
    from fleet.core.context import acting

    if design == "plain":  # the ceiling: record()'s insert alone, no commit hook (sealed after the clock)
        from fleet.audit import services

        services.schedule_seal = lambda: None  # type: ignore[assignment]
    if design == "sync":  # the commit hook seals in the writer's thread (no background sealer)
        from django.conf import settings

        settings.FLEETGATE_AUDIT_SEAL_BACKGROUND = False
    append = old_record if design == "old" else record
    # B > 1: "batched" and "plain" insert the transaction's events with one statement (batched()); "new" and
    # "old" append them one by one, as code without batched() would.
    bulk = batch > 1 and design in ("batched", "plain")
    connections["default"].ensure_connection()
    barrier.wait()
    with acting(change_context="task"):
        for first in range(0, count, batch):
            with transaction.atomic(), batched() if bulk else nullcontext():
                for i in range(first, min(first + batch, count)):
                    append(
                        "bench.writer",
                        target_type="thing",
                        target_id=f"{index}-{i}",
                        target_repr=f"thing {index}-{i}",
                        after={"i": i, "labels": {"env": "prod"}},
                        message=f"writer {index} appended {i}",
                    )
                if hold_ms:
                    time.sleep(hold_ms / 1000)
    done[index] = time.monotonic()  # the last commit has returned (the sealer may still be at work)
    connections.close_all()


def child_writers(design: str, writers: int, events: int, hold_ms: float, batch: int = 1) -> dict[str, Any]:
    """`writers` forked processes append `events` in all, in transactions of `batch` events; seconds from the
    common start until the last process is done and every event is sealed (what the writers' sealers left
    pending at their exit is sealed here, inside the clock; for "plain" outside it)."""
    import multiprocessing

    from django.db import connections

    from fleet.audit.models import AuditEvent
    from fleet.audit.sealing import seal

    _migrate()
    before = AuditEvent.objects.count()
    connections.close_all()  # nothing open across fork
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(writers + 1)
    done = context.Array("d", writers)
    per = events // writers
    procs = [
        context.Process(target=_writer_process, args=(design, n, per, hold_ms, batch, barrier, done))
        for n in range(writers)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.monotonic()
    peak = 0  # the sealers' backlog, sampled every 0.1 s: does sealing keep up while the writers write?
    while any(proc.is_alive() for proc in procs):
        if design != "plain":
            peak = max(peak, AuditEvent.objects.pending().count())
        time.sleep(0.1)
    for proc in procs:
        proc.join()
    if any(proc.exitcode for proc in procs):
        raise SystemExit(f"a writer failed: {[proc.exitcode for proc in procs]}")
    inserted = max(done[:]) - start
    pending = AuditEvent.objects.pending().count()  # normally 0: the writers' sealers sealed everything
    if pending and design != "plain":
        seal(wait=True)  # a sealer that could not keep up: the rest counts, sealed by the same code
    seconds = time.monotonic() - start
    if design == "plain":
        seal(wait=True)  # not timed: the next run starts from a sealed chain
    written = AuditEvent.objects.count() - before
    return {
        "design": design,
        "writers": writers,
        "batch": batch,
        "events": written,
        "seconds": seconds,
        "inserted_seconds": inserted,
        "pending_left": pending,
        "pending_peak": peak,
        "hold_ms": hold_ms,
        "load": list(os.getloadavg()),
    }


def child(argv: list[str]) -> None:
    phase, *rest = argv
    _setup()
    if phase == "append":
        result = child_append(int(rest[0]))
    elif phase == "fill":
        result = child_fill(int(rest[0]))
    elif phase == "verify":
        result = child_verify()
    elif phase == "export":
        result = child_export(rest[0], int(rest[1]))
    elif phase == "writers":
        result = child_writers(rest[0], int(rest[1]), int(rest[2]), float(rest[3]), int(rest[4]))
    else:
        raise SystemExit(f"unknown phase {phase}")
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main(sys.argv[1:])
