"""Rollouts in the UI: progress at a glance, per-cluster results, plans and policy results, and the actions
(approve, reject, pause, resume, cancel, sync) for those allowed — the server checks again."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from fleet.access.restrict import has_permission
from fleet.rollouts import services
from fleet.rollouts.api.views import progress_of
from fleet.rollouts.choices import RolloutState, SyncState
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.rollouts.services import dependencies
from fleet.web.views.base import get_visible, paginate, refused, require, visible

# Colours of the progress bar, in the order they are drawn.
BAR_STATES = [
    "synced", "syncing", "queued", "pending", "waiting", "failed", "blocked", "cancelled", "superseded"
]

ACTIONS = {
    # action: (permission, service call, allowed states)
    "approve": ("approve", lambda r, u, _: services.approve(r, u), {RolloutState.AWAITING_APPROVAL}),
    "reject": (
        "approve",
        lambda r, u, reason: services.reject(r, u, reason),
        {RolloutState.AWAITING_APPROVAL},
    ),
    "pause": ("control", lambda r, u, _: services.pause(r, u), {RolloutState.QUEUED, RolloutState.SYNCING}),
    "resume": (
        "control",
        lambda r, u, _: services.resume(r, u),
        {RolloutState.QUEUED, RolloutState.SYNCING, RolloutState.HALTED},
    ),
    "cancel": (
        "control",
        lambda r, u, _: services.cancel(r, u),
        {
            RolloutState.AWAITING_APPROVAL,
            RolloutState.APPROVED,
            RolloutState.EVALUATED,
            RolloutState.QUEUED,
            RolloutState.SYNCING,
            RolloutState.HALTED,
        },
    ),
    "sync": (
        "sync",
        lambda r, u, _: services.start_sync(r, u),
        {RolloutState.EVALUATED, RolloutState.APPROVED},
    ),
}


def _bar(progress: dict[str, Any]) -> list[dict[str, Any]]:
    total = progress.get("total") or 0
    by_state = progress.get("by_state", {})
    return [
        {"state": state, "count": by_state[state], "percent": round(100 * by_state[state] / total, 1)}
        for state in BAR_STATES
        if by_state.get(state) and total
    ]


TIMELINE_COLORS = {"synced": "#22c55e", "failed": "#ef4444", "syncing": "#3b82f6", "queued": "#93c5fd"}


def timeline(syncs: list[Any]) -> dict[str, Any]:
    """Per cluster, when its sync ran (queued → started → finished), scaled to the rollout's span."""
    from django.utils import timezone

    moments = [t for cs in syncs for t in (cs.queued_at, cs.started_at, cs.finished_at) if t]
    if not moments:
        return {"rows": [], "seconds": 0}
    start, end = (
        min(moments),
        max(
            max(moments),
            timezone.now() if any(cs.finished_at is None and cs.started_at for cs in syncs) else max(moments),
        ),
    )
    span = max((end - start).total_seconds(), 0.001)
    rows = []
    for cs in syncs:
        begin = cs.started_at or cs.queued_at
        if begin is None:
            continue
        finish = cs.finished_at or end
        rows.append(
            {
                "cluster": cs.cluster.name,
                "state": cs.state,
                "left": round(100 * (begin - start).total_seconds() / span, 2),
                "width": max(round(100 * (finish - begin).total_seconds() / span, 2), 0.8),
                "color": TIMELINE_COLORS.get(cs.state, "#9ca3af"),
                "seconds": round((finish - begin).total_seconds(), 1),
            }
        )
    return {"rows": rows, "seconds": round(span, 1)}


def _named_batches(rollout: Rollout, batches: dict[int, list[Any]]) -> list[tuple[int, list[Any], str]]:
    """(number, legs, name) per batch: the fleet.yaml partition's name when the batches come from one, and
    "not rolled out" for the clusters in no partition."""
    planned = (rollout.strategy or {}).get("batches")
    names = {i: str(b.get("name") or "") for i, b in enumerate(planned or [])}
    if planned is not None:
        names[len(planned)] = "in no partition: not rolled out"
    return [(number, legs, names.get(number, "")) for number, legs in sorted(batches.items())]


@login_required
def rollout_list(request: HttpRequest) -> HttpResponse:
    rollouts = visible(
        request, Rollout.objects.select_related("mapping__repository", "mapping__cluster_group", "commit")
    ).order_by("-id")
    state = request.GET.get("state", "")
    if state in RolloutState.values:
        rollouts = rollouts.filter(state=state)
    page = paginate(request, rollouts)
    progress = progress_of([r.pk for r in page])
    rows = [
        {"rollout": r, "progress": progress.get(r.pk, {}), "bar": _bar(progress.get(r.pk, {}))} for r in page
    ]
    return render(
        request, "web/rollouts/list.html", {"page": page, "rows": rows, "states": RolloutState.choices}
    )


WAITED_ON_SHOWN = 200  # rows of the "waiting for this mapping" table


def waited_on_by(request: HttpRequest, rollout: Rollout) -> list[dict[str, Any]]:
    """Legs of other rollouts (that the user may see) waiting for this rollout's mapping, per cluster: the
    legs the dependency service wakes (``dependencies.waits_for``), the first WAITED_ON_SHOWN of them."""
    legs = visible(
        request,
        ClusterSync.objects.filter(
            state=SyncState.WAITING, rollout__state__in=(RolloutState.QUEUED, RolloutState.SYNCING)
        ).select_related("rollout__mapping__repository", "cluster"),
    ).order_by("rollout_id", "cluster__name")
    out: list[dict[str, Any]] = []
    for cs in legs.iterator():
        mapping = cs.rollout.mapping
        for w in dependencies.waits_for(cs.waiting_for, rollout.mapping):
            out.append({"rollout": cs.rollout_id, "mapping": f"{mapping.repository.name}/{mapping.name}",
                        "cluster": cs.cluster.name, "reason": w.get("reason", "")})
            if len(out) >= WAITED_ON_SHOWN:
                return out
    return out


@login_required
def rollout_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rollout = get_visible(
        request,
        Rollout.objects.select_related(
            "mapping__repository", "mapping__cluster_group", "commit", "created_by"
        ),
        pk=pk,
    )
    syncs = list(rollout.syncs.select_related("cluster").order_by("batch", "cluster__name"))
    batches: dict[int, list[Any]] = {}
    for cs in syncs:
        batches.setdefault(cs.batch, []).append(cs)
    progress = progress_of([rollout.pk]).get(rollout.pk, {})
    allowed = {
        name: has_permission(request.user, Rollout, perm, rollout) and rollout.state in states
        for name, (perm, _, states) in ACTIONS.items()
    }
    allowed["rollback"] = has_permission(request.user, Rollout, "rollback", rollout)
    earlier = (
        Rollout.objects.filter(
            mapping=rollout.mapping, state=RolloutState.SYNCED, commit__sequence__lt=rollout.commit.sequence
        )
        .select_related("commit")
        .order_by("-commit__sequence")[:10]
        if allowed["rollback"]
        else []
    )
    allowed["pause"] = allowed["pause"] and not rollout.paused
    allowed["resume"] = allowed["resume"] and (rollout.paused or rollout.state == RolloutState.HALTED)
    depends_on, missing = dependencies.dependencies_of(rollout.mapping)
    context = {
        "rollout": rollout,
        "depends_on": sorted([f"{m.repository.name}/{m.name}" for m in depends_on] + missing),
        "waited_on_by": waited_on_by(request, rollout),
        "batches": _named_batches(rollout, batches),
        "syncs": syncs,
        "waiting": [cs for cs in syncs if cs.state == SyncState.WAITING],
        "progress": progress,
        "bar": _bar(progress),
        "approvals": rollout.approvals.select_related("user").order_by("created"),
        "allowed": allowed,
        "timeline": timeline(syncs),
        "earlier": earlier,
    }
    return render(request, "web/rollouts/detail.html", context)


@login_required
@require_POST
def rollout_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a rollout of an earlier commit of the same mapping; it passes the gate and approval again."""
    from fleet.sources.models import Commit

    rollout = get_visible(request, Rollout.objects.select_related("mapping", "commit"), pk=pk)
    require(request, Rollout, "rollback", rollout)
    commit = Commit.objects.filter(
        pk=request.POST.get("commit") or 0, repository=rollout.mapping.repository_id
    ).first()
    if commit is None:
        messages.error(request, "Choose an earlier commit of this mapping.")
        return redirect("web:rollout-detail", pk=pk)
    try:
        new = services.rollback(rollout, commit, request.user)
    except services.RolloutError as exc:
        return refused(request, exc, redirect("web:rollout-detail", pk=pk))
    messages.success(request, f"Rollback to {commit.sha[:10]} started as rollout {new.pk}.")
    return redirect("web:rollout-detail", pk=new.pk)


@login_required
@require_POST
def rollout_act(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    rollout = get_visible(request, Rollout.objects.select_related("mapping__cluster_group", "commit"), pk=pk)
    if action not in ACTIONS:
        return HttpResponse("Unknown action.", status=404)
    permission, call, _ = ACTIONS[action]
    require(request, Rollout, permission, rollout)
    reason = request.POST.get("reason", "").strip()
    if action == "reject" and not reason:
        messages.error(request, "A rejection needs a reason.")
        return redirect("web:rollout-detail", pk=pk)
    try:
        call(rollout, request.user, reason)
    except services.RolloutError as exc:
        return refused(request, exc, redirect("web:rollout-detail", pk=pk))
    messages.success(request, f"Rollout {rollout.pk}: {action} done.")
    return redirect("web:rollout-detail", pk=pk)
