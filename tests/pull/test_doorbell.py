"""Waiting agent polls sleep; one watcher thread per process reads every waiting poll's doorbell with one
cache read (bench/bench_agents.py: a thousand polls each reading the cache four times a second took both
cores of the web tier)."""

from __future__ import annotations

import threading
import time

from fleet.rollouts import doorbell


def test_a_rung_doorbell_wakes_its_poll_and_only_its_poll() -> None:
    clusters = list(range(91_000, 91_040))
    seen = {c: doorbell.current(c) for c in clusters}
    woken: dict[int, tuple[bool, str | None]] = {}

    def wait(cluster_id: int) -> None:
        woken[cluster_id] = doorbell.wait(cluster_id, seen[cluster_id], 3.0)

    threads = [threading.Thread(target=wait, args=(c,)) for c in clusters]
    for t in threads:
        t.start()
    time.sleep(2 * doorbell.WATCH_INTERVAL)  # all of them waiting
    reads_before = doorbell._watcher.reads
    doorbell.ring_now(clusters[7])
    for t in threads:
        t.join(10)
    rang = {c for c, (r, _value) in woken.items() if r}
    assert rang == {clusters[7]}
    assert woken[clusters[7]][1] == doorbell.current(clusters[7]) != seen[clusters[7]]
    # 40 polls waited about 3 s: the watcher read the cache a few times a second for all of them, not 40
    # times as often (each poll reading its own key every WATCH_INTERVAL would be ~480 reads).
    reads = doorbell._watcher.reads - reads_before
    assert 0 < reads <= 3.0 / doorbell.WATCH_INTERVAL + 4


def test_a_doorbell_rung_before_the_wait_started_wakes_at_once() -> None:
    cluster_id = 92_001
    seen = doorbell.current(cluster_id)
    doorbell.ring_now(cluster_id)
    rang, value = doorbell.wait(cluster_id, seen, 5.0)
    assert rang and value == doorbell.current(cluster_id)


def test_no_ring_times_out() -> None:
    cluster_id = 92_002
    rang, _value = doorbell.wait(cluster_id, doorbell.current(cluster_id), 0.6)
    assert not rang
