from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from fleet.access import roles
from fleet.access.models import RoleBinding
from fleet.access.restrict import groups_where
from fleet.web.views.base import require, visible


@login_required
def access(request: HttpRequest) -> HttpResponse:
    require(request, RoleBinding, "view")
    # Users and Django groups are listed only with an all-clusters binding (docs/roles.md); a group-scoped
    # admin sees the bindings `restrict()` lets them see, and nothing about other people.
    everywhere = groups_where(request.user, get_user_model(), "view").everywhere
    users = get_user_model().objects.order_by("username").only("username", "is_active", "last_login")
    context = {
        "bindings": visible(request, RoleBinding.objects.select_related("user", "group", "scope")),
        "show_people": everywhere,
        "users": users if everywhere else users.none(),
        "groups": Group.objects.annotate(members=Count("user")).order_by("name") if everywhere else [],
        "roles": roles.describe(),
    }
    return render(request, "web/access.html", context)
