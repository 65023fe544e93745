"""Policies in the UI: the list with versions and unit-test results, one policy with its source, compile
errors and tests, violations over time by policy, and waivers (create with justification and expiry)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from clusters.models import ClusterGroup
from fleet.access.restrict import has_permission
from fleet.web.views import previews
from fleet.web.views.base import get_visible, require, visible
from fleet.web.views.previews import PreviewForm
from policies.models import Policy, PolicyBinding, PolicyPreview, Violation, Waiver
from policies.services.waivers import authored_by, expire_waiver, save_waiver

CHART_DAYS = 14
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]


def violations_chart(violations: Any, days: int = CHART_DAYS) -> dict[str, Any]:
    """Stacked daily bars of violations by policy over the last `days` days, as SVG geometry."""
    since = timezone.now() - timedelta(days=days - 1)
    rows = (
        violations.filter(evaluation__created__gte=since)
        .annotate(day=TruncDate("evaluation__created"))
        .values("day", "policy_name")
        .annotate(n=Count("id"))
        .order_by("day")
    )
    dates = [(since + timedelta(days=i)).date() for i in range(days)]
    policies = sorted({r["policy_name"] for r in rows})
    counts = {(r["day"], r["policy_name"]): r["n"] for r in rows}
    peak = max([sum(counts.get((d, p), 0) for p in policies) for d in dates] + [1])
    width, height, gap = 36, 160, 6
    bars = []
    for i, day in enumerate(dates):
        y = height
        for j, policy in enumerate(policies):
            n = counts.get((day, policy), 0)
            if not n:
                continue
            h = round(height * n / peak, 1)
            y -= h
            bars.append(
                {
                    "x": i * (width + gap),
                    "y": round(y, 1),
                    "w": width,
                    "h": h,
                    "color": PALETTE[j % len(PALETTE)],
                    "title": f"{day}: {n} × {policy}",
                }
            )
    return {
        "bars": bars,
        "labels": [
            {"x": i * (width + gap) + width / 2, "text": d.strftime("%m-%d")} for i, d in enumerate(dates)
        ],
        "legend": [{"name": p, "color": PALETTE[j % len(PALETTE)]} for j, p in enumerate(policies)],
        "width": days * (width + gap),
        "height": height,
        "peak": peak,
    }


@login_required
def policy_list(request: HttpRequest) -> HttpResponse:
    policies = (
        visible(request, Policy.objects.select_related("current"))
        .annotate(bindings_n=Count("bindings", distinct=True), versions_n=Count("versions", distinct=True))
        .order_by("name")
    )
    violations = visible(request, Violation.objects.all())
    context = {
        "policies": policies,
        "bindings": visible(request, PolicyBinding.objects.select_related("policy", "cluster_group")),
        "chart": violations_chart(violations),
        "can_add": has_permission(request.user, Policy, "add"),
    }
    return render(request, "web/policies/list.html", context)


@login_required
def policy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    policy = get_visible(request, Policy.objects.select_related("current"), pk=pk)
    context = {
        "policy": policy,
        "version": policy.current,
        "versions": policy.versions.order_by("-number")[:20],
        "waivers": visible(request, Waiver.objects.filter(policy=policy).select_related("cluster_group")),
        "can_change": has_permission(request.user, Policy, "change", policy),
        # impact preview (fleet/web/views/previews.py): its bindings and a "Preview impact" form
        "bindings": visible(
            request, PolicyBinding.objects.filter(policy=policy).select_related("cluster_group")
        ),
        "preview_form": PreviewForm(request=request, initial={"enforcement": "deny", "live": True}),
        "can_preview": has_permission(request.user, PolicyPreview, "add"),
    }
    return render(request, "web/policies/detail.html", context)


class WaiverForm(forms.ModelForm):
    class Meta:
        model = Waiver
        fields = [
            "policy",
            "kind",
            "namespace",
            "name_pattern",
            "cluster_group",
            "cluster_pattern",
            "expires_at",
            "justification",
        ]
        widgets = {
            "expires_at": forms.DateTimeInput(attrs={"type": "datetime-local"}),
            "justification": forms.Textarea(attrs={"rows": 3}),
        }

    def __init__(self, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        policy_field: Any = self.fields["policy"]
        policy_field.queryset = visible(request, Policy.objects.all())
        group_field: Any = self.fields["cluster_group"]
        group_field.queryset = visible(request, ClusterGroup.objects.all(), "view")
        group_field.required = False
        group_field.empty_label = "all clusters"
        for name, value in authored_by(request.user).items():
            setattr(self.instance, name, value)


@login_required
@require_http_methods(["GET", "POST"])
def waivers(request: HttpRequest) -> HttpResponse:
    rows = visible(request, Waiver.objects.select_related("policy", "cluster_group", "author")).order_by(
        "-expires_at"
    )
    can_add = has_permission(request.user, Waiver, "add")
    form = WaiverForm(request.POST or None, request=request) if can_add else None
    if request.method == "POST":
        require(request, Waiver, "add")
        if form is not None and form.is_valid():
            try:
                # The API's path too: the scope re-check after saving and the audit event (save_waiver).
                waiver = save_waiver(request.user, form.save)
            except PermissionDenied as exc:
                form.add_error("cluster_group", str(exc))
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(
                    request, f"Waiver for {waiver.policy.name} until {waiver.expires_at:%Y-%m-%d %H:%M}."
                )
                return redirect("web:waivers")
    now = timezone.now()
    context = {"waivers": rows, "form": form, "now": now}
    return render(request, "web/policies/waivers.html", context)


@login_required
@require_POST
def waiver_expire(request: HttpRequest, pk: int) -> HttpResponse:
    waiver = get_visible(request, Waiver.objects.all(), pk=pk)
    require(request, Waiver, "change", waiver)
    expire_waiver(waiver)
    messages.success(request, "Waiver expired.")
    return redirect("web:waivers")


class PolicyEditForm(forms.Form):
    name = forms.RegexField(regex=r"^[a-z0-9]([-a-z0-9_.]{0,98}[a-z0-9])?$", max_length=100)
    module_path = forms.CharField(initial="policy.rego", max_length=200)
    source = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 18, "class": "code", "spellcheck": "false"})
    )


@login_required
@require_http_methods(["GET", "POST"])
def policy_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """Write or change a conftest-style policy: compiled and its test_ rules run on save; errors inline."""
    from policies.services.definitions import (
        EngineUnavailableForSave,
        PolicyDefinition,
        PolicyInvalid,
        PolicyWriteDenied,
        author_policy,
    )

    policy = get_visible(request, Policy.objects.select_related("current"), pk=pk) if pk else None
    require(request, Policy, "change" if policy else "add", policy)
    initial: dict[str, Any] = {}
    if policy is not None and policy.current is not None:
        modules = policy.current.content.get("modules") or []
        if policy.style != "conftest" or len(modules) != 1:
            messages.error(
                request, "Only single-module conftest policies are edited here; use the API for others."
            )
            return redirect("web:policy-detail", pk=policy.pk)
        initial = {"name": policy.name, "module_path": modules[0]["path"], "source": modules[0]["source"]}
    form = PolicyEditForm(request.POST or None, initial=initial)
    errors: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        definition = PolicyDefinition(style="conftest", modules=((data["module_path"], data["source"]),))
        if "preview" in request.POST and policy is not None:
            # "Preview impact": this source as the policy's next version, replayed over what its bound
            # clusters run now (fleet/web/views/previews.py); nothing is saved
            return previews.preview_version(request, policy, definition)
        try:
            # The service checks scope against the policy it changes (a new one, this one, or the one that
            # already has this name), not "may add somewhere".
            result = author_policy(request.user, data["name"], definition, policy=policy)
        except PolicyWriteDenied as exc:
            errors, status = [{"line": 0, "message": exc.message}], 403
        except PolicyInvalid as exc:
            errors, tests = exc.errors or [{"line": 0, "message": exc.message}], exc.tests
        except EngineUnavailableForSave as exc:
            errors = [{"line": 0, "message": f"the policy engine is unavailable: {exc}"}]
        else:
            number = result.policy.current.number if result.policy.current else "?"
            messages.success(request, f"Saved {result.policy.name} v{number}.")
            return redirect("web:policy-detail", pk=result.policy.pk)
    context = {"form": form, "policy": policy, "errors": errors, "tests": tests}
    return render(request, "web/policies/edit.html", context, status=status)
