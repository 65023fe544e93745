from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from clusters import agent_tokens, membership_guard
from clusters.choices import AgentCredentialKind, AuthMethod, ClusterStatus, ConnectionMode
from clusters.filtersets import filter_by_selector
from clusters.management.commands import agent_manifest
from clusters.models import AgentCredential, AllowList, Cluster, ClusterGroup
from clusters.selectors import matches, parse_selector_string, validate_selector
from clusters.services import agent_silence
from fleet.access.restrict import has_permission
from fleet.web.views.base import get_visible, paginate, require, visible

# A pull-mode cluster's agent at a glance: (state, label). Connected = a live agent credential and a call
# within three report intervals (clusters.services.agent_silence, the same window that turns a silent
# agent's cluster unreachable and that agent_tokens.status calls connected).
AGENT_STATES = {
    "connected": "agent connected",
    "stale": "agent silent",
    "revoked": "no live credential",
    "never": "agent never registered",
}


def agent_state(seen: datetime | None, live_credential: bool, now: datetime | None = None) -> str:
    """never: no agent call yet; revoked: no live agent credential (revoked or expired); connected: a call
    within the window; stale: silent longer."""
    if seen is None:
        return "never"
    if not live_credential:
        return "revoked"
    return "connected" if (now or timezone.now()) - seen <= agent_silence() else "stale"


def _live_agent_credential() -> Exists:
    return Exists(
        AgentCredential.objects.filter(
            cluster=OuterRef("pk"),
            kind=AgentCredentialKind.AGENT,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
    )


@login_required
def cluster_list(request: HttpRequest) -> HttpResponse:
    clusters = (
        visible(request, Cluster.objects.prefetch_related("groups"))
        .annotate(agent_live=_live_agent_credential())
        .order_by("name")
    )
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
    if request.GET.get("mode") in ConnectionMode.values:
        clusters = clusters.filter(connection_mode=request.GET["mode"])
    page = paginate(request, clusters)
    now = timezone.now()
    for cluster in page:
        if cluster.is_pull:
            cluster.agent_state = agent_state(cluster.agent_seen, cluster.agent_live, now)
            cluster.agent_state_label = AGENT_STATES[cluster.agent_state]
    context = {
        "page": page,
        "groups": visible(request, ClusterGroup.objects.all()).order_by("name"),
        "statuses": ClusterStatus.choices,
        "modes": ConnectionMode.choices,
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
    if cluster.is_pull:
        context["agent"] = _agent_context(cluster)
    return render(request, "web/clusters/detail.html", context)


def _agent_context(cluster: Cluster) -> dict[str, Any]:
    """The agent as the detail page shows it: agent_tokens.status (credentials without digests) and the
    at-a-glance state."""
    agent = agent_tokens.status(cluster)
    now = timezone.now()
    live = any(c["live"] and c["kind"] == AgentCredentialKind.AGENT for c in agent["credentials"])
    agent["state"] = agent_state(cluster.agent_seen, live, now)
    agent["state_label"] = AGENT_STATES[agent["state"]]
    agent["silence_seconds"] = int(agent_silence().total_seconds())
    for cred in agent["credentials"]:
        if cred["revoked_at"] is not None:
            cred["state"] = "revoked"
        elif cred["kind"] == AgentCredentialKind.BOOTSTRAP and cred["used_at"] is not None:
            cred["state"] = "used"
        elif cred["expires_at"] <= now:
            cred["state"] = "expired"
        else:
            cred["state"] = "live"
    return agent


@login_required
@require_POST
@never_cache  # the page shows the plain token: no cache, no back-button copy
def cluster_agent_bootstrap(request: HttpRequest, pk: int) -> HttpResponse:
    """Issue a one-time bootstrap token for a pull-mode cluster's agent and show it on this response only (it
    is never stored, so no later page can show it). Earlier unused bootstrap tokens are revoked."""
    cluster = get_visible(request, Cluster.objects.all(), pk=pk)
    require(request, Cluster, "change", cluster)
    if not cluster.is_pull:
        messages.error(request, f"{cluster.name} is a push-mode cluster: an agent is only for pull mode.")
        return redirect("web:cluster-detail", pk=pk)
    plain, cred = agent_tokens.issue_bootstrap(cluster, request.user)
    server = request.build_absolute_uri("/").rstrip("/")
    context = {
        "cluster": cluster,
        "token": plain,
        "credential": cred,
        "server": server,
        "ttl_minutes": int((cred.expires_at - cred.created).total_seconds() // 60),
        # where the agent's manifest (manage.py agent_manifest) reads its bootstrap token from
        "namespace": agent_manifest.NAMESPACE,
        "deployment": agent_manifest.NAME,
        "secret_name": agent_manifest.BOOTSTRAP_SECRET,
    }
    return render(request, "web/clusters/bootstrap.html", context)


@login_required
@require_POST
def cluster_agent_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke every credential of a pull-mode cluster's agent (bootstrap tokens too), once confirmed."""
    cluster = get_visible(request, Cluster.objects.all(), pk=pk)
    require(request, Cluster, "change", cluster)
    if not cluster.is_pull:
        messages.error(request, f"{cluster.name} is a push-mode cluster: it has no agent.")
    elif request.POST.get("confirm") != "yes":
        messages.error(request, "Nothing revoked: tick the confirmation first.")
    else:
        count = agent_tokens.revoke(cluster, request.user)
        messages.success(
            request,
            f"{count} credential{'s' if count != 1 else ''} of {cluster.name}'s agent revoked: the agent is "
            "refused from now on. Issue a new bootstrap token to register it again.",
        )
    return redirect("web:cluster-detail", pk=pk)


# What a push-mode cluster is registered with and a pull-mode one must leave empty (its agent holds the
# access; Fleetgate stores no credential for it: clusters.models.PULL_EMPTY_FIELDS).
PUSH_ONLY_FIELDS = ("auth_method", "api_url", "token", "kubeconfig_file", "kubeconfig_context", "ca_data")


class ClusterForm(forms.ModelForm):
    """Register a cluster: push mode by URL and token or by uploading a kubeconfig; pull mode with no
    credentials at all (an agent on the cluster registers with a bootstrap token from the cluster's page).
    Editing one (an instance given): the mode stays as registered (as the API: a new cluster to change it);
    a push cluster's empty token or kubeconfig keeps the stored one; a pull cluster is not asked for any."""

    connection_mode = forms.ChoiceField(
        choices=ConnectionMode.choices,
        initial=ConnectionMode.PUSH,
        required=False,  # a form posted without it registers a push cluster, as before pull mode
        widget=forms.RadioSelect,
        label="Connection mode",
        help_text="Pull for clusters Fleetgate cannot reach: no API URL or credential is asked or stored.",
    )
    token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    kubeconfig_file = forms.FileField(required=False, help_text="A kubeconfig with inline credentials.")
    labels_text = forms.CharField(
        required=False, label="Labels", help_text="key=value, comma-separated, e.g. env=prod,region=eu"
    )

    class Meta:
        model = Cluster
        fields = [
            "name",
            "description",
            "connection_mode",
            "auth_method",
            "api_url",
            "token",
            "kubeconfig_context",
            "ca_data",
        ]
        widgets = {"ca_data": forms.Textarea(attrs={"rows": 4})}

    push_only_fields = PUSH_ONLY_FIELDS

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["auth_method"].required = False  # not asked in pull mode; push defaults to a token
        if self.instance.pk:
            mode = self.fields["connection_mode"]
            mode.disabled = True  # the registered mode; a posted one is refused in clean()
            mode.help_text = "Set at registration: register a new cluster for another mode."
            labels = self.instance.labels or {}
            self.fields["labels_text"].initial = ",".join(f"{k}={v}" for k, v in labels.items())
            if self.instance.is_pull:
                for name in PUSH_ONLY_FIELDS:
                    del self.fields[name]
            else:
                self.fields["token"].help_text = "Empty keeps the stored token."
                self.fields["kubeconfig_file"].help_text = "Empty keeps the stored kubeconfig, if any."

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
        posted_mode = self.data.get("connection_mode")
        if self.instance.pk and posted_mode not in (None, "", self.instance.connection_mode):
            self.add_error(
                "connection_mode", "The connection mode is set at registration: register a new cluster."
            )
        if not cleaned.get("connection_mode"):
            cleaned["connection_mode"] = ConnectionMode.PUSH
        if cleaned["connection_mode"] == ConnectionMode.PULL:
            given = [f for f in PUSH_ONLY_FIELDS if f != "auth_method" and cleaned.get(f)]
            for field in given:
                self.add_error(field, "A pull-mode cluster stores no credentials: leave this empty.")
            self.instance.auth_method = AuthMethod.TOKEN
            if "auth_method" in self.fields:
                cleaned["auth_method"] = AuthMethod.TOKEN
            self.instance.labels = cleaned.get("labels_text") or {}
            return cleaned
        if not cleaned.get("auth_method"):
            cleaned["auth_method"] = self.instance.auth_method = AuthMethod.TOKEN
        if self.instance.pk and not cleaned.get("token"):
            cleaned.pop("token", None)  # keep the stored token (not shown, so not re-sent)
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
    return _save_cluster_form(request, form, None, "registered") or render(
        request, "web/clusters/register.html", {"form": form}
    )


@login_required
@require_http_methods(["GET", "POST"])
def cluster_edit(request: HttpRequest, pk: int) -> HttpResponse:
    cluster = get_visible(request, Cluster.objects.all(), pk=pk)
    require(request, Cluster, "change", cluster)
    editing = Cluster.objects.get(pk=cluster.pk)  # the form's copy (the page keeps the saved name)
    form = ClusterForm(request.POST or None, request.FILES or None, instance=editing)
    return _save_cluster_form(request, form, cluster, "saved") or render(
        request, "web/clusters/register.html", {"form": form, "cluster": cluster}
    )


def _save_cluster_form(
    request: HttpRequest, form: ClusterForm, cluster: Cluster | None, done: str
) -> HttpResponse | None:
    """A posted, valid cluster form saved through the one create/update service of clusters (API, UI,
    admin: membership checks, the re-check that the saved cluster is within the user's scope, the audit
    event): the redirect to the cluster, or None to show the form again (with the refusal, if any)."""
    if request.method != "POST" or not form.is_valid():
        return None
    try:
        saved = membership_guard.save_cluster(
            request.user,
            cluster,
            form.save,
            name=form.cleaned_data["name"],
            labels=form.instance.labels or {},
        )
    except PermissionDenied as exc:
        form.add_error(None, str(exc))
        return None
    messages.success(request, f"Cluster {saved.name} {done}.")
    return redirect("web:cluster-detail", pk=saved.pk)


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
