from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from clusters.models import Cluster, ClusterGroup
from fleet.audit.models import AuditEvent
from fleet.web.views.base import visible


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    clusters = visible(request, Cluster.objects.all())
    by_status = {row["status"]: row["n"] for row in clusters.values("status").annotate(n=Count("id"))}
    context = {
        "cluster_total": sum(by_status.values()),
        "by_status": by_status,
        "groups": visible(request, ClusterGroup.objects.all()).annotate(n=Count("members")),
        "events": visible(request, AuditEvent.objects.all())[:15],
    }
    return render(request, "web/dashboard.html", context)
