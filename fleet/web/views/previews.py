"""Impact preview in the UI: "Preview impact" of a binding change on a policy or binding page (a background
job), the report page (progress while it runs, then counts and the objects, coloured by what changes), and
the binding page with its scheduled dryrun -> deny switch and the report attached to it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from clusters.models import ClusterGroup
from fleet.access.restrict import has_permission
from fleet.core.errors import DomainError
from fleet.web.views.base import get_visible, refused, require, visible
from policies.choices import BindingEnforcement
from policies.models import Policy, PolicyBinding, PolicyPreview
from policies.services import preview as pv

STATUS_CLASS = {
    "new_block": "bad",
    "resolved_block": "ok",
    "unchanged_block": "blocked",
    "new_warning": "warn",
    "resolved_warning": "ok",
    "unchanged_warning": "warned",
    "waived": "unknown",
}
CHANGE_CLASS = {"newly_blocked": "bad", "unblocked": "ok", "unknown": "unreachable"}


class PreviewForm(forms.Form):
    enforcement = forms.ChoiceField(choices=BindingEnforcement.choices, required=False, initial="deny")
    cluster_group = forms.ModelChoiceField(
        queryset=ClusterGroup.objects.none(), required=False, empty_label="all clusters"
    )
    live = forms.BooleanField(required=False, initial=True, help_text="Read the live objects")

    def __init__(self, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        group_field: Any = self.fields["cluster_group"]
        group_field.queryset = visible(request, ClusterGroup.objects.all())


@login_required
@require_POST
def preview_start(request: HttpRequest, pk: int, binding_pk: int | None = None) -> HttpResponse:
    policy = get_visible(request, Policy.objects.select_related("current"), pk=pk)
    binding = (
        get_visible(request, PolicyBinding.objects.filter(policy=policy), pk=binding_pk)
        if binding_pk
        else None
    )
    require(request, PolicyPreview, "add")
    back = redirect("web:binding-detail", pk=binding.pk) if binding else redirect("web:policy-detail", pk=pk)
    form = PreviewForm(request.POST, request=request)
    if not form.is_valid():
        return refused(request, DomainError(f"Cannot preview: {form.errors.as_text()}"), back)
    data = form.cleaned_data
    try:
        proposal = pv.binding_proposal(
            binding,
            policy=policy,
            cluster_group=data["cluster_group"] if binding is None else binding.cluster_group,
            enforcement=data["enforcement"] or "",
            pinned_version=binding.pinned_version if binding else None,
        )
        preview = pv.start(request.user, proposal, live=bool(data["live"]), binding=binding)
    except DomainError as exc:
        return refused(request, exc, back)
    return redirect("web:preview-detail", pk=preview.pk)


def preview_version(request: HttpRequest, policy: Policy, definition: Any) -> HttpResponse:
    """The editor's "Preview impact": ``definition`` (compiled first, its tests run) previewed as the next
    version of ``policy`` on its bindings; nothing is saved. Compile errors come back as a message."""
    from policies.services.definitions import EngineUnavailableForSave, PolicyInvalid, validate_definition

    require(request, PolicyPreview, "add")
    back = redirect("web:policy-edit", pk=policy.pk)
    try:
        validate_definition(definition)
    except PolicyInvalid as exc:
        return refused(request, DomainError(f"Cannot preview: {exc.message}"), back)
    except EngineUnavailableForSave as exc:
        return refused(request, DomainError(f"Cannot preview: the policy engine is unavailable: {exc}"), back)
    try:
        preview = pv.start(request.user, pv.Proposal(policy.pk, policy.name, definition.as_content()))
    except DomainError as exc:
        return refused(request, exc, back)
    return redirect("web:preview-detail", pk=preview.pk)


@login_required
@require_GET
def preview_detail(request: HttpRequest, pk: int) -> HttpResponse:
    preview = get_visible(request, PolicyPreview.objects.select_related("cluster_group", "binding"), pk=pk)
    report = pv.report_for(preview, request.user)
    targets = report.get("targets") or []
    for t in targets:
        t["change_class"] = CHANGE_CLASS.get(t["change"], "")
        for f in t["objects"]:
            f["css"] = STATUS_CLASS.get(f["status"], "")
            f["label"] = f["status"].replace("_", " ")
    context = {
        "preview": preview,
        "report": report,
        "counts": report.get("counts") or {},
        "targets": targets,
        "waivers": list((report.get("waivers") or {}).values()),
        "running": preview.status in ("pending", "running"),
        "percent": int(100 * preview.done / preview.total) if preview.total else 0,
    }
    return render(request, "web/policies/preview.html", context)


@login_required
@require_GET
def binding_detail(request: HttpRequest, pk: int) -> HttpResponse:
    binding = get_visible(
        request,
        PolicyBinding.objects.select_related("policy", "cluster_group", "pinned_version", "preview"),
        pk=pk,
    )
    previews = visible(request, PolicyPreview.objects.filter(binding=binding)).order_by("-id")[:10]
    context = {
        "binding": binding,
        "previews": previews,
        "form": PreviewForm(request=request, initial={"enforcement": "deny", "live": True}),
        "can_preview": has_permission(request.user, PolicyPreview, "add"),
    }
    return render(request, "web/policies/binding.html", context)
