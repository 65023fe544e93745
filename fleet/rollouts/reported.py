"""Pull mode: the live state and plan of a cluster Fleetgate does not contact, from its agent's reports.

An agent reports the objects it manages for each mapping as it read them on its cluster
(``SyncedState.live``, ``live_reported_at``). A plan for a pull-mode cluster is a client-side diff of the
rendered objects against that report, marked ``"source": "agent report"`` with the report's time. What it
cannot know (docs/clusters.md "Pull mode"): objects the agent does not manage (an object of the same name
created by someone else is shown as a CREATE), changes since the report, and what the API server would
default or refuse (no server-side dry run): the agent's apply finds those.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import Any

import yaml

from clusters.connector import hooks
from clusters.connector import objects as o
from clusters.connector.results import CREATE, DELETE, NOOP, UPDATE, LiveObject, LiveState

SOURCE = "agent report"


class AgentReportMissing(Exception):
    """No report of the agent for this mapping yet: what the cluster holds is not known."""


def _key(ref: o.ObjectRef) -> tuple[str, str, str, str]:
    return ref.key


def _index(live: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for obj in live:
        if isinstance(obj, dict) and obj.get("kind") and (obj.get("metadata") or {}).get("name"):
            out[o.ObjectRef.of(obj).key] = obj
    return out


def _find(found: dict[tuple[str, str, str, str], dict[str, Any]], ref: o.ObjectRef,
          default_namespace: str) -> tuple[o.ObjectRef, dict[str, Any] | None]:
    """The reported object of a manifest's reference: in its namespace (or the default one), else
    cluster-scoped (the report says which a kind is: a cluster-scoped object carries no namespace)."""
    namespaced = o.ObjectRef(ref.api_version, ref.kind, ref.namespace or default_namespace, ref.name)
    if namespaced.key in found:
        return namespaced, found[namespaced.key]
    cluster_scoped = o.ObjectRef(ref.api_version, ref.kind, "", ref.name)
    if cluster_scoped.key in found:
        return cluster_scoped, found[cluster_scoped.key]
    return (cluster_scoped if ref.kind == "Namespace" else namespaced), None


def live_state(
    objects: Sequence[dict[str, Any]],
    reported: Sequence[dict[str, Any]],
    inventory: Sequence[dict[str, Any]],
    *,
    default_namespace: str,
    prune: bool,
) -> LiveState:
    """A LiveState as ``Connector.read_live`` gives it, from reported objects: each manifest's reported
    counterpart (None: not reported, i.e. absent as far as the agent knows), and as prunes the reported
    objects of the inventory that left the desired set."""
    found = _index(reported)
    state = LiveState()
    desired: set[tuple[str, str, str, str]] = set()
    for index, manifest in enumerate(objects):
        try:
            o.check_manifest(manifest)
        except o.ManifestError:
            continue
        if hooks.created(manifest):
            continue
        ref, live = _find(found, o.ObjectRef.of(manifest), default_namespace)
        desired.add(ref.key)
        state.objects.append(LiveObject(index, ref, copy.deepcopy(live) if live is not None else None))
    if prune:
        for item in inventory:
            ref = o.ObjectRef.from_dict(item)
            if ref.key in desired:
                continue
            live = found.get(ref.key)
            if live is not None:
                state.prunes.append((ref, copy.deepcopy(live)))
    return state


def _merged(live: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any]:
    """What an apply of ``desired`` over ``live`` leaves, approximately: desired fields set over the live
    object (maps merged, lists and scalars replaced), as server-side apply mostly does."""
    if live is None:
        return copy.deepcopy(desired)
    out = copy.deepcopy(live)

    def merge(into: dict[str, Any], given: dict[str, Any]) -> None:
        for key, value in given.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    merge(out, desired)
    return out


def _yaml(obj: dict[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def _path(ref: o.ObjectRef) -> str:
    return f"{ref.group or 'core'}/{ref.version}/{ref.kind}/{ref.namespace or '_'}/{ref.name}"


def plan(objects: Sequence[dict[str, Any]], live: LiveState, *, default_namespace: str,
         reported_at: str) -> dict[str, Any]:
    """The plan of ``objects`` against the reported live state, in the shape of ``Plan.to_dict()`` plus
    ``source`` and ``reported_at``. Secret values are masked as in a server-side plan."""
    by_index = {lo.index: lo for lo in live.objects}
    items: list[dict[str, Any]] = []
    for index, manifest in enumerate(objects):
        if not isinstance(manifest, dict):
            continue
        lo = by_index.get(index)
        if lo is None:  # a hook or generated object (created on every sync), or not a valid object
            ref = o.ObjectRef.of(manifest)
            after_m = o.mask_secret_pair(None, o.normalize(manifest))[1]
            diff = "".join(difflib.unified_diff([], _yaml(after_m), f"live/{_path(ref)}",
                                                f"desired/{_path(ref)}"))
            items.append({"ref": ref.to_dict(), "action": CREATE, "diff": diff,
                          "message": "created by the sync", "conflicts": [], "step": {}})
            continue
        desired = copy.deepcopy(manifest)
        desired.setdefault("metadata", {})
        if lo.ref.namespace and not desired["metadata"].get("namespace"):
            desired["metadata"]["namespace"] = lo.ref.namespace
        before_n = o.normalize(lo.live)
        after_n = o.normalize(_merged(lo.live, desired))
        if lo.live is not None and before_n == after_n:
            items.append({"ref": lo.ref.to_dict(), "action": NOOP, "diff": "", "message": "",
                          "conflicts": [], "step": {}})
            continue
        before_m, after_m = o.mask_secret_pair(before_n, after_n)
        diff = "".join(difflib.unified_diff(_yaml(before_m), _yaml(after_m), f"live/{_path(lo.ref)}",
                                            f"desired/{_path(lo.ref)}"))
        items.append({"ref": lo.ref.to_dict(), "action": CREATE if lo.live is None else UPDATE, "diff": diff,
                      "message": "" if lo.live is not None else "not in the agent's report",
                      "conflicts": [], "step": {}})
    for ref, current in live.prunes:
        before, _ = o.mask_secret_pair(o.normalize(current), None)
        diff = "".join(difflib.unified_diff(_yaml(before), [], f"live/{_path(ref)}", f"desired/{_path(ref)}"))
        items.append({"ref": ref.to_dict(), "action": DELETE, "diff": diff,
                      "message": "no longer in the source: will be pruned", "conflicts": [], "step": {}})
    counts = {CREATE: 0, UPDATE: 0, DELETE: 0, NOOP: 0, "conflict": 0, "failed": 0}
    for item in items:
        counts[item["action"]] += 1
    return {"items": items, "counts": counts, "ok": True, "source": SOURCE, "reported_at": reported_at}
