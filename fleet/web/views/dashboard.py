from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from clusters.models import Cluster, ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.rollouts.api.views import progress_of
from fleet.rollouts.choices import RolloutState
from fleet.rollouts.models import Rollout, SyncedState
from fleet.web.views.base import visible
from fleet.web.views.rollouts import _bar

IN_FLIGHT = [RolloutState.QUEUED, RolloutState.SYNCING, RolloutState.HALTED]


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    clusters = visible(request, Cluster.objects.all())
    by_status = {row["status"]: row["n"] for row in clusters.values("status").annotate(n=Count("id"))}
    drifted = (
        visible(request, SyncedState.objects.filter(drift_status="drifted"))
        .values("cluster")
        .distinct()
        .count()
    )
    rollouts = visible(request, Rollout.objects.select_related("mapping__cluster_group", "commit"))
    in_flight = list(rollouts.filter(state__in=IN_FLIGHT).order_by("-id")[:10])
    progress = progress_of([r.pk for r in in_flight])
    # Waiting for this user: rollouts in the groups where they may approve (the one restrict helper).
    waiting = visible(
        request,
        rollouts.filter(state=RolloutState.AWAITING_APPROVAL).exclude(approvals__user=request.user),
        "approve",
    )
    context = {
        "cluster_total": sum(by_status.values()),
        "by_status": by_status,
        "drifted": drifted,
        "groups": visible(request, ClusterGroup.objects.all()).annotate(n=Count("members")),
        "in_flight": [
            {"rollout": r, "bar": _bar(progress.get(r.pk, {})), "progress": progress.get(r.pk, {})}
            for r in in_flight
        ],
        "blocked": rollouts.filter(decision="blocked").order_by("-id")[:10],
        "waiting": list(waiting.order_by("-id")[:10]),
        "events": visible(request, AuditEvent.objects.all())[:15],
    }
    return render(request, "web/dashboard.html", context)
