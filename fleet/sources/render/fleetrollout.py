"""Rancher Fleet's ``rolloutStrategy`` (a fleet.yaml key of the bundle, never of a target customization),
checked and mapped onto the batches of a Fleetgate rollout.  Django-free: plain data in, plain data out.

What Fleet does (``pkg/apis/fleet.cattle.io/v1alpha1/bundle_types.go`` ``RolloutStrategy``/``Partition``,
``internal/cmd/controller/target``: ``rollout.go``, ``partition.go``, ``status.go``):

* **partitions** (``partitions[]``, in order): a partition holds every target cluster its criteria match
  (``clusterName`` (or Rancher's display-name label), ``clusterGroup``, ``clusterGroupSelector``,
  ``clusterSelector``: every criterion given must match, none given matches nothing).  A cluster that matches
  no partition **is not rolled out at all** (Fleet's code and its rollout page agree; the type's comment
  saying such clusters go in automatic partitions at the end is stale).  A cluster matching several
  partitions is in each: it is first updated in the first.
* **automatic partitions** (no ``partitions``): one partition of every cluster when ``autoPartitionSize`` is
  an integer <= 0 or there are fewer clusters than ``autoPartitionThreshold`` (default 200); otherwise
  partitions of ``autoPartitionSize`` clusters (integer or percentage of all, default 25%).
* ``maxUnavailable`` (default 100%): how many of the bundle's clusters may be unavailable (updating, or not
  ready) at once; Fleet updates no further cluster while that many are.
* a partition's ``maxUnavailable`` (default: the bundle's ``maxUnavailable``, then 100%): inside the
  partition the same rule; the partition is *unavailable* while more of its clusters than that are not
  ready.  ``maxUnavailablePartitions`` (default 0): Fleet goes on to the next partition only while at most
  that many partitions are unavailable.
* a number is capped at the count it limits; a percentage is rounded down, and at least 1.
* ``maxNew`` (default 50): how many new BundleDeployments are created per reconcile.

How it maps onto Fleetgate (``plan_batches``): partitions (or automatic partitions) become the rollout's
batches in order, in place of the group's canary selector and batch size; a cluster in no partition is not
synced by the rollout (its leg is cancelled, with the reason); ``maxUnavailable`` becomes the rollout's halt
threshold (it halts once that many clusters failed) and caps its parallelism; a partition's limit does the
same inside its batch, and a batch whose failures pass it counts against ``maxUnavailablePartitions`` before
the next batch starts.  What does not fit is reported by name (``notes``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .context import ClusterContext
from .customize import _check_selector
from .errors import RenderError

STRATEGY_KEYS = ("maxUnavailable", "maxUnavailablePartitions", "autoPartitionSize", "autoPartitionThreshold",
                 "maxNew", "partitions")
PARTITION_KEYS = ("name", "maxUnavailable", "clusterName", "clusterSelector", "clusterGroup",
                  "clusterGroupSelector")
DEFAULT_LIMIT = "100%"
DEFAULT_AUTO_PARTITION_SIZE = "25%"
DEFAULT_AUTO_PARTITION_THRESHOLD = 200
DEFAULT_MAX_UNAVAILABLE_PARTITIONS = 0
DEFAULT_MAX_NEW = 50
_PERCENT = re.compile(r"^\s*(-?\d+(\.\d+)?)%\s*$")


# --------------------------------------------------------------------------------------------- checking


def _int_or_percent(value: Any, where: str, file: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RenderError(f"{where} must be a number or a percentage (\"25%\")", file=file)
    if isinstance(value, str) and not _PERCENT.match(value) and not (
            re.match(r"^\s*\d+\s*$", value) and int(value) > 0):
        raise RenderError(f"{where}: invalid value {value!r}, must be int or percentage (ending with %)",
                          file=file)


def check_strategy(value: Any, file: str) -> list[str]:
    """Check fleet.yaml's ``rolloutStrategy`` as Fleet would (a RenderError for what it refuses: wrong types,
    a bad int-or-percentage, an invalid selector); return the notes of what Fleetgate does not honour."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise RenderError("rolloutStrategy must be a mapping", file=file)
    notes = [f"fleet.yaml rolloutStrategy.{key}: unknown key, ignored (as Fleet ignores it)"
             for key in sorted(set(value) - set(STRATEGY_KEYS))]
    for key in ("maxUnavailable", "maxUnavailablePartitions", "autoPartitionSize"):
        _int_or_percent(value.get(key), f"rolloutStrategy.{key}", file)
    for key in ("autoPartitionThreshold", "maxNew"):
        v = value.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise RenderError(f"rolloutStrategy.{key} must be a number", file=file)
    if value.get("maxNew") is not None:
        notes.append("fleet.yaml rolloutStrategy.maxNew is not honoured: Fleetgate creates nothing on a "
                     "cluster outside a sync; how many clusters sync at once is the group's max_parallel "
                     "(and maxUnavailable)")
    parts = value.get("partitions")
    if parts is not None and not isinstance(parts, list):
        raise RenderError("rolloutStrategy.partitions must be a list", file=file)
    for i, part in enumerate(parts or []):
        where = f"rolloutStrategy.partitions[{i}]"
        if not isinstance(part, Mapping):
            raise RenderError(f"{where} must be a mapping", file=file)
        for key in ("name", "clusterName", "clusterGroup"):
            if part.get(key) is not None and not isinstance(part[key], str):
                raise RenderError(f"{where}.{key} must be a string", file=file)
        for key in ("clusterSelector", "clusterGroupSelector"):
            if part.get(key) is not None:
                _check_selector(part[key], f"{where}.{key}", file)
        _int_or_percent(part.get("maxUnavailable"), f"{where}.maxUnavailable", file)
        notes.extend(f"fleet.yaml {where}.{key}: unknown key, ignored (as Fleet ignores it)"
                     for key in sorted(set(part) - set(PARTITION_KEYS)))
    return notes


def limit(count: int, *values: Any) -> int:
    """Fleet's ``limit``: the first value given (else 100%) as a number of ``count`` items.  An integer is
    capped at ``count`` (and at least 0); a numeric string is taken as it is; a percentage is rounded down,
    at least 1 and at most ``count``; ``count`` <= 0 gives 1."""
    if count <= 0:
        return 1
    value = next((v for v in values if v is not None), DEFAULT_LIMIT)
    if isinstance(value, int) and not isinstance(value, bool):
        return max(0, min(value, count))
    text = str(value).strip()
    if re.match(r"^-?\d+$", text) and int(text) > 0:
        return int(text)
    m = _PERCENT.match(text)
    if not m:
        return 0
    percent = float(m.group(1))
    if percent <= 0:
        return 1
    n = math.floor(count * percent) // 100
    return min(max(n, 1), count)


# --------------------------------------------------------------------------------------------- mapping


@dataclass(frozen=True)
class Batch:
    """One partition as a batch: its name, its clusters (names, in rollout order), the most of them that
    may be unavailable (Fleet's partition ``maxUnavailable``, as a count)."""

    name: str
    clusters: tuple[str, ...]
    max_unavailable: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "clusters": list(self.clusters), "max_unavailable": self.max_unavailable}


@dataclass(frozen=True)
class BatchPlan:
    """What a rolloutStrategy makes of one rollout's clusters.  ``batches`` None: the group's batches
    (canary selector, batch size or percentage) stay; ``max_unavailable`` None: the group's failure threshold
    and parallelism stay."""

    batches: tuple[Batch, ...] | None = None
    unmatched: tuple[str, ...] = ()
    max_unavailable: int | None = None
    max_unavailable_partitions: int = DEFAULT_MAX_UNAVAILABLE_PARTITIONS
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": None if self.batches is None else [b.to_dict() for b in self.batches],
            "unmatched": list(self.unmatched),
            "max_unavailable": self.max_unavailable,
            "max_unavailable_partitions": self.max_unavailable_partitions,
            "notes": list(self.notes),
        }


def batch_slots(max_unavailable: int, in_flight: int) -> int:
    """How many more of a partition's legs may start now: Fleet updates no further cluster of a partition
    while as many as its ``maxUnavailable`` are unavailable; here the legs in flight are the updating ones
    (at least one at a time, so a limit of 0 syncs one by one). Failed legs do not block the batch: it runs
    to its end and is then judged by ``unavailable_partitions`` (no halt inside a batch)."""
    return max(1, max_unavailable) - in_flight


def partition_unavailable(failed: int, max_unavailable: int) -> bool:
    """Fleet's ``updatePartitionStatus``: a partition is unavailable when MORE of its clusters than its
    ``maxUnavailable`` are unavailable (here: failed)."""
    return failed > max_unavailable


def unavailable_partitions(failed: Mapping[int, int], batch_max: Mapping[int, int], before: int,
                           max_unavailable_partitions: int) -> list[int]:
    """The finished batches (those before ``before``) that are unavailable, when there are more of them than
    ``maxUnavailablePartitions`` allows (then the next batch does not start, as Fleet does not go on to the
    next partition), else ``[]``. Only counts of finished batches: the answer does not depend on the order in
    which their legs ended."""
    over = [b for b, most in sorted(batch_max.items())
            if b < before and partition_unavailable(failed.get(b, 0), most)]
    return over if len(over) > max_unavailable_partitions else []


def partitions_apply(spec: Mapping[str, Any]) -> bool:
    """Whether the strategy says how to partition (then it replaces the group's batches): partitions, or an
    automatic partition size or threshold.  ``maxUnavailable`` alone leaves the group's batches."""
    return any(spec.get(k) is not None for k in ("partitions", "autoPartitionSize", "autoPartitionThreshold"))


def _matches(part: Mapping[str, Any], cluster: ClusterContext) -> bool:
    from .fleetbundle import _target_matches  # Fleet's ClusterMatcher, shared with targetCustomizations

    return _target_matches(part, cluster)


def plan_batches(spec: Mapping[str, Any], clusters: Sequence[ClusterContext]) -> BatchPlan:
    """Fleet's partitions of ``clusters`` (in the order given) under ``spec`` (a checked rolloutStrategy),
    as Fleetgate batches and limits; notes for what differs."""
    notes: list[str] = []
    total = len(clusters)
    bundle_max = spec.get("maxUnavailable")
    batches: list[Batch] | None = None
    unmatched: list[str] = []
    if spec.get("partitions"):
        batches = []
        placed: set[str] = set()
        for i, part in enumerate(spec["partitions"]):
            name = str(part.get("name") or f"partition {i}")
            members = [c.name for c in clusters if _matches(part, c)]
            again = [n for n in members if n in placed]
            members = [n for n in members if n not in placed]
            if again:
                notes.append(f"fleet.yaml rolloutStrategy partition {name}: {', '.join(again)} matched an "
                             "earlier partition too and syncs there (Fleet updates a cluster in the first "
                             "partition that holds it)")
            # Fleet counts the partition's limit on every cluster it matches
            size = len(members) + len(again)
            if not members:
                if not again:
                    notes.append(f"fleet.yaml rolloutStrategy partition {name} matches no cluster")
                continue
            placed.update(members)
            batches.append(Batch(name, tuple(members), limit(size, part.get("maxUnavailable"), bundle_max)))
        unmatched = [c.name for c in clusters if c.name not in placed]
        if unmatched:
            notes.append(f"fleet.yaml rolloutStrategy: {len(unmatched)} cluster(s) match no partition and "
                         f"are not rolled out, as in Fleet: {', '.join(unmatched[:20])}"
                         + (" ..." if len(unmatched) > 20 else ""))
    elif partitions_apply(spec):
        size_spec = spec.get("autoPartitionSize")
        threshold = spec.get("autoPartitionThreshold")
        threshold = DEFAULT_AUTO_PARTITION_THRESHOLD if threshold is None else threshold
        names = [c.name for c in clusters]
        if isinstance(size_spec, int) and not isinstance(size_spec, bool) and size_spec <= 0:
            batches = [Batch("All", tuple(names), limit(total, bundle_max))] if names else []
        elif threshold <= 0 or total < threshold:
            batches = [Batch("All", tuple(names), limit(total, bundle_max))] if names else []
            if size_spec is not None and names:
                notes.append(f"fleet.yaml rolloutStrategy.autoPartitionSize {size_spec} does not apply: "
                             f"{total} cluster(s), fewer than autoPartitionThreshold {threshold}, so Fleet "
                             "makes one partition of them all")
        else:
            size = max(1, limit(total, size_spec, DEFAULT_AUTO_PARTITION_SIZE))
            batches = []
            for offset in range(0, total, size):
                chunk = names[offset:offset + size]
                batches.append(Batch(f"Partition {offset} - {offset + len(chunk)}", tuple(chunk),
                                     limit(len(chunk), bundle_max)))
    elif spec.get("maxUnavailablePartitions") is not None:
        notes.append("fleet.yaml rolloutStrategy.maxUnavailablePartitions does not apply: the group's "
                     "batches are used (no partitions, autoPartitionSize or autoPartitionThreshold)")
    global_max: int | None = None
    if bundle_max is not None:
        global_max = limit(total, bundle_max)
        if global_max <= 0:
            notes.append("fleet.yaml rolloutStrategy.maxUnavailable 0: Fleet would update no cluster that is "
                         "ready; Fleetgate syncs one cluster at a time and halts at the first failure")
            global_max = 1
    for batch in batches or ():
        if batch.max_unavailable <= 0:
            notes.append(f"fleet.yaml rolloutStrategy partition {batch.name}: maxUnavailable 0, Fleet would "
                         "update no cluster of it that is ready; Fleetgate syncs it one cluster at a time "
                         "and halts at its first failure")
    if batches and len(batches) > 1 and all(b.max_unavailable >= len(b.clusters) for b in batches[:-1]):
        notes.append("fleet.yaml rolloutStrategy: no partition limits its unavailable clusters "
                     "(maxUnavailable 100%, Fleet's default), so Fleet would start every partition without "
                     "waiting; Fleetgate's batches go one after the other")
    parts_max = limit(len(batches or ()), spec.get("maxUnavailablePartitions"),
                      DEFAULT_MAX_UNAVAILABLE_PARTITIONS)
    return BatchPlan(
        batches=None if batches is None else tuple(batches),
        unmatched=tuple(unmatched),
        max_unavailable=global_max,
        max_unavailable_partitions=parts_max,
        notes=tuple(dict.fromkeys(notes)),
    )


__all__ = [
    "PARTITION_KEYS",
    "STRATEGY_KEYS",
    "Batch",
    "BatchPlan",
    "check_strategy",
    "limit",
    "partitions_apply",
    "plan_batches",
]
