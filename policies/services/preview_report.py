"""An impact preview's report as people read it: the one-line summary, the text of
``import_policies --preview``, and the report narrowed to the clusters a user may see (API and UI).

The report itself is built by :func:`policies.services.preview.compute`; its counts are kept per cluster
group (``groups``) so that a narrowed report's counts are those of the groups shown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from fleet.access.restrict import groups_where
from policies.models import Evaluation, PolicyPreview

COUNT_KEYS = (
    "targets",
    "blocked_today",
    "blocked_proposed",
    "warned_today",
    "warned_proposed",
    "newly_blocked",
    "unblocked",
    "new_blocks",
    "resolved_blocks",
    "unchanged_blocks",
    "new_warnings",
    "resolved_warnings",
    "unchanged_warnings",
    "waived",
    "unreachable",
)


def whole(counts: Counter[str]) -> dict[str, int]:
    return {k: int(counts.get(k, 0)) for k in COUNT_KEYS}


def summarize(
    groups: Mapping[str, Mapping[str, Any]], visible: Callable[[int], bool] | None
) -> dict[str, int]:
    total: Counter[str] = Counter()
    clusters: set[int] = set()
    shown = 0
    for gid, g in groups.items():
        if visible is not None and not visible(int(gid)):
            continue
        shown += 1
        total.update(g["counts"])
        clusters.update(g["clusters"])
    out = whole(total)
    out["clusters"] = len(clusters)
    out["groups"] = shown
    return out


def summary_text(counts: Mapping[str, int]) -> str:
    return (
        f"{counts.get('targets', 0)} target(s) on {counts.get('clusters', 0)} cluster(s): "
        f"{counts.get('blocked_proposed', 0)} would be blocked ({counts.get('blocked_today', 0)} today), "
        f"{counts.get('newly_blocked', 0)} newly, {counts.get('unblocked', 0)} unblocked; "
        f"{counts.get('new_blocks', 0)} new block(s), {counts.get('resolved_blocks', 0)} resolved, "
        f"{counts.get('unchanged_blocks', 0)} unchanged; {counts.get('new_warnings', 0)} new warning(s); "
        f"{counts.get('waived', 0)} waived; {counts.get('unreachable', 0)} unreachable"
    )


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The report as text (``import_policies --preview``): the summary, then each target with findings."""
    lines = [f"Impact preview: {report.get('description', '')}", summary_text(report.get("counts") or {})]
    for t in report.get("targets") or []:
        head = f"{t['cluster']} / {t['mapping']} at {str(t.get('commit', ''))[:10]}: "
        if t["review"] == "unreachable":
            lines.append(head + f"UNREACHABLE ({t['reason']})")
            continue
        lines.append(head + f"{t['today']} -> {t['proposed']} ({t['change']}, reviewed {t['review']})")
        for f in t["objects"]:
            where = f"{f['namespace']}/" if f["namespace"] else ""
            waiver = f" [waiver #{f['waived_by']}]" if f["waived_by"] else ""
            label = f["status"].replace("_", " ").upper()
            lines.append(f"  {label}: {f['kind']} {where}{f['name']}: {f['message']} ({f['policy']}){waiver}")
        lines += [f"  ERROR: {e}" for e in t.get("errors") or []]
    return lines


def report_for(preview: PolicyPreview, user: Any) -> dict[str, Any]:
    """The stored report narrowed to the clusters ``user`` may see (through their mappings' groups, as
    evaluations are): targets, groups and counts of the other groups are left out."""
    report = dict(preview.report or {})
    if not report:
        return report
    scope = groups_where(user, Evaluation, "view")
    if scope.everywhere:
        return report
    groups = {gid: g for gid, g in (report.get("groups") or {}).items() if scope.covers(int(gid))}
    report["groups"] = groups
    report["targets"] = [t for t in report.get("targets") or [] if scope.covers(t.get("group_id"))]
    report["counts"] = summarize(groups, None)
    shown_waivers = {str(f["waived_by"]) for t in report["targets"] for f in t["objects"] if f["waived_by"]}
    report["waivers"] = {k: v for k, v in (report.get("waivers") or {}).items() if k in shown_waivers}
    report["narrowed"] = True
    return report
