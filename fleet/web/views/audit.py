from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from fleet.audit.filtersets import AuditEventFilterSet
from fleet.audit.models import AuditEvent
from fleet.audit.services import verify
from fleet.web.views.base import paginate, visible

FILTERS = ("since", "until", "actor", "action", "cluster", "group", "repository", "search")


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    events = visible(request, AuditEvent.objects.all())
    filterset = AuditEventFilterSet(request.GET, queryset=events)
    events = filterset.qs if filterset.is_valid() else events.none()
    search = request.GET.get("search", "").strip()
    if search:
        events = events.filter(message__icontains=search) | events.filter(target_repr__icontains=search)
    events = events.order_by("-sequence")
    params = {k: request.GET[k] for k in FILTERS if request.GET.get(k)}
    context = {
        "page": paginate(request, events),
        "filters": params,
        "errors": filterset.errors,
        "export_query": urlencode({k: v for k, v in params.items() if k != "search"}),
        "chain": verify() if request.GET.get("verify") else None,
    }
    return render(request, "web/audit/list.html", context)
