from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from clusters import membership_guard
from clusters.choices import AuthMethod, ClusterStatus
from clusters.filtersets import filter_by_selector
from clusters.models import AllowList, Cluster, ClusterGroup
from clusters.selectors import matches, parse_selector_string, validate_selector
from fleet.access.restrict import has_permission
from fleet.web.views.base import get_visible, paginate, require, visible


@login_required
def cluster_list(request: HttpRequest) -> HttpResponse:
    clusters = visible(request, Cluster.objects.prefetch_related("groups")).order_by("name")
    selector = request.GET.get("label", "").strip()
    error = ""
    if selector:
        try:
            clusters = filter_by_selector(clusters, selector)
        except Exception as exc:  # a bad selector is shown, not raised
            error = "; ".join(getattr(exc, "detail", {}).get("label", [str(exc)]))
    if request.GET.get("status") in ClusterStatus.values:
        clusters = clusters.filter(status=request.GET["status"])
    if request.GET.get("group", "").isdigit():
        clusters = clusters.filter(groups__id=int(request.GET["group"]))
    context = {
        "page": paginate(request, clusters),
        "groups": visible(request, ClusterGroup.objects.all()).order_by("name"),
        "statuses": ClusterStatus.choices,
        "selector_error": error,
        "can_add": has_permission(request.user, Cluster, "add"),
    }
    return render(request, "web/clusters/list.html", context)


@login_required
def cluster_detail(request: HttpRequest, pk: int) -> HttpResponse:
    from fleet.rollouts.models import SyncedState

    cluster = get_visible(request, Cluster.objects.prefetch_related("groups"), pk=pk)
    synced = visible(
        request,
        SyncedState.objects.filter(cluster=cluster).select_related("mapping__repository", "commit"),
    ).order_by("mapping__name")
    context = {
        "cluster": cluster,
        "synced": synced,
        "can_test": has_permission(request.user, Cluster, "test", cluster),
        "can_change": has_permission(request.user, Cluster, "change", cluster),
    }
    return render(request, "web/clusters/detail.html", context)


class ClusterForm(forms.ModelForm):
    """Register a cluster by URL and token, or by uploading a kubeconfig."""

    token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    kubeconfig_file = forms.FileField(required=False, help_text="A kubeconfig with inline credentials.")
    labels_text = forms.CharField(
        required=False, label="Labels", help_text="key=value, comma-separated, e.g. env=prod,region=eu"
    )

    class Meta:
        model = Cluster
        fields = ["name", "description", "auth_method", "api_url", "token", "kubeconfig_context", "ca_data"]
        widgets = {"ca_data": forms.Textarea(attrs={"rows": 4})}

    def clean_labels_text(self) -> dict[str, str]:
        text = self.cleaned_data.get("labels_text", "").strip()
        if not text:
            return {}
        selector = parse_selector_string(text)
        if selector["matchExpressions"]:
            raise ValidationError("Labels are key=value pairs.")
        return selector["matchLabels"]

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        upload = cleaned.get("kubeconfig_file")
        if upload is not None:
            if upload.size > 256 * 1024:
                raise ValidationError({"kubeconfig_file": "The kubeconfig is larger than 256 KiB."})
            self.instance.kubeconfig = upload.read().decode("utf-8", errors="replace")
            self.instance.auth_method = AuthMethod.KUBECONFIG
        self.instance.labels = cleaned.get("labels_text") or {}
        return cleaned


@login_required
@require_POST
def cluster_test(request: HttpRequest, pk: int) -> HttpResponse:
    """Test the connection now (the same service as the API's test-connection) and say what happened."""
    from clusters.services import test_connection

    cluster = get_visible(request, Cluster.objects.all(), pk=pk)
    require(request, Cluster, "test", cluster)
    try:
        test_connection(cluster)
    except Cluster.DoesNotExist:  # deleted while it was being tested
        raise Http404("Not found.") from None
    cluster.refresh_from_db()
    if cluster.status == ClusterStatus.REACHABLE:
        messages.success(request, f"{cluster.name} is reachable (Kubernetes {cluster.kubernetes_version}).")
    else:
        messages.error(request, f"{cluster.name} is unreachable: {cluster.last_error}")
    return redirect("web:cluster-detail", pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def cluster_register(request: HttpRequest) -> HttpResponse:
    require(request, Cluster, "add")
    form = ClusterForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            # The one create/update service of clusters (API, UI, admin): membership checks, the re-check
            # that the saved cluster is within the user's scope, and the audit event.
            cluster = membership_guard.save_cluster(
                request.user,
                None,
                form.save,
                name=form.cleaned_data["name"],
                labels=form.instance.labels or {},
            )
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Cluster {cluster.name} registered.")
            return redirect("web:cluster-detail", pk=cluster.pk)
    return render(request, "web/clusters/register.html", {"form": form})


@login_required
def group_list(request: HttpRequest) -> HttpResponse:
    groups = visible(request, ClusterGroup.objects.prefetch_related("members")).order_by("name")
    return render(request, "web/groups/list.html", {"groups": groups})


@login_required
def group_detail(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_visible(
        request, ClusterGroup.objects.prefetch_related("members", "include", "exclude"), pk=pk
    )
    context = {
        "group": group,
        "can_change": has_permission(request.user, ClusterGroup, "change", group),
        # the tenant allow-list, read-only here (changed through the API or the admin by an admin on all
        # clusters: docs/clusters.md#tenant-allow-lists)
        "allow_list": AllowList.objects.filter(cluster_group=group).first(),
    }
    return render(request, "web/groups/detail.html", context)


@login_required
@require_GET
def selector_preview(request: HttpRequest) -> JsonResponse:
    """Clusters (that the user may see) matching a selector, for the group editor's live preview."""
    text = request.GET.get("selector", "")
    try:
        selector = parse_selector_string(text) if text else {}
        if selector:
            validate_selector(selector)
    except ValidationError as exc:
        return JsonResponse({"error": "; ".join(exc.messages)}, status=400)
    clusters = visible(request, Cluster.objects.all()).values_list("name", "labels")
    names = [name for name, labels in clusters if matches(selector, labels or {})]
    return JsonResponse({"selector": selector, "count": len(names), "clusters": names[:200]})


def _labels_from_text(text: str) -> dict[str, str]:
    """``key=value,key=value`` as labels (validated as cluster and group labels are)."""
    text = text.strip()
    if not text:
        return {}
    selector = parse_selector_string(text)
    if selector["matchExpressions"]:
        raise ValidationError("Labels are key=value pairs.")
    return selector["matchLabels"]


class GroupForm(forms.ModelForm):
    labels_text = forms.CharField(
        required=False,
        label="Labels",
        help_text="The group's own labels, key=value, comma-separated (a fleet.yaml clusterGroupSelector "
        "matches them), e.g. tier=gold",
    )
    selector_text = forms.CharField(
        required=False, label="Selector", help_text="e.g. env=prod,region in (eu,us),!legacy"
    )

    class Meta:
        model = ClusterGroup
        fields = [
            "name",
            "description",
            "approval_required",
            "approvals_required",
            "sync_mode",
            "batch_size",
            "batch_percent",
            "max_parallel",
            "batch_pause_seconds",
            "failure_threshold",
            "health_timeout_seconds",
            "prune",
            "self_heal",
            "create_only_review",
        ]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        from clusters.selectors import selector_to_string

        self.fields["selector_text"].initial = selector_to_string(self.instance.selector)
        labels = self.instance.labels or {}
        self.fields["labels_text"].initial = ",".join(f"{k}={v}" for k, v in labels.items())

    def clean_labels_text(self) -> dict[str, str]:
        return _labels_from_text(self.cleaned_data.get("labels_text", ""))

    def clean_selector_text(self) -> dict:
        text = self.cleaned_data.get("selector_text", "").strip()
        return parse_selector_string(text) if text else {}

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        if "selector_text" in cleaned:
            self.instance.selector = cleaned["selector_text"]
        if "labels_text" in cleaned:
            self.instance.labels = cleaned["labels_text"]
        return cleaned


@login_required
@require_http_methods(["GET", "POST"])
def group_edit(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_visible(request, ClusterGroup.objects.all(), pk=pk)
    require(request, ClusterGroup, "change", group)
    form = GroupForm(request.POST or None, instance=group)
    if request.method == "POST" and form.is_valid():
        try:
            # The one create/update service of groups (API, UI, admin), as for clusters above.
            group = membership_guard.save_group(
                request.user,
                group,
                form.save,
                name=form.cleaned_data["name"],
                selector=form.instance.selector,
                include=group.include.all(),
                exclude=group.exclude.all(),
            )
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Group {group.name} saved.")
            return redirect("web:group-detail", pk=group.pk)
    return render(request, "web/groups/edit.html", {"form": form, "group": group})
