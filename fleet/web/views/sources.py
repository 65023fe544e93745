"""Repositories, their commits with the per-mapping render and rollout status, and one commit's page."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from fleet.access.restrict import has_permission
from fleet.access.writes import save_in_scope
from fleet.audit.redact import snapshot
from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.choices import VerificationMode
from fleet.sources.models import Commit, MappingRender, PathMapping, RenderedManifest, Repository
from fleet.sources.services.dependencies import mapping_label, resolve_label
from fleet.sources.services.signing import normalize_trusted_keys
from fleet.web.views.base import get_visible, paginate, require, visible


@login_required
def repository_list(request: HttpRequest) -> HttpResponse:
    repositories = visible(request, Repository.objects.all()).order_by("name")
    return render(request, "web/sources/repositories.html", {"repositories": repositories})


def directory_note(mapping: PathMapping) -> str:
    """A mapping's Argo CD directory options, when not the defaults (recursive, no globs)."""
    parts = [] if mapping.directory_recurse else ["not recursive"]
    if mapping.directory_include:
        parts.append(f"include {mapping.directory_include}")
    if mapping.directory_exclude:
        parts.append(f"exclude {mapping.directory_exclude}")
    return "; ".join(parts)


@login_required
def repository_detail(request: HttpRequest, pk: int) -> HttpResponse:
    repository = get_visible(request, Repository.objects.all(), pk=pk)
    mappings = visible(
        request,
        PathMapping.objects.filter(repository=repository)
        .select_related("cluster_group")
        .prefetch_related("depends_on__repository"),
    )
    visible_mappings = list(mappings)
    for m in visible_mappings:  # what each mapping waits for on a cluster (set and from fleetgate.yaml)
        m.after = sorted(  # type: ignore[attr-defined]
            {mapping_label(d) for d in m.depends_on.all()}
            | {resolve_label(str(d), repository.name) for d in m.declared_depends_on or []}
        )
        m.directory = directory_note(m)  # type: ignore[attr-defined]
    commits = visible(request, Commit.objects.filter(repository=repository)).order_by("-sequence", "-id")
    page = paginate(request, commits)
    commit_ids = [c.pk for c in page]
    renders = MappingRender.objects.filter(commit_id__in=commit_ids, mapping__in=visible_mappings)
    rollouts = Rollout.objects.filter(commit_id__in=commit_ids, mapping__in=visible_mappings)
    by_commit: dict[int, dict[int, dict[str, object]]] = {}
    for r in renders:
        by_commit.setdefault(r.commit_id, {}).setdefault(r.mapping_id, {})["render"] = r
    for ro in rollouts:
        by_commit.setdefault(ro.commit_id, {}).setdefault(ro.mapping_id, {})["rollout"] = ro
    rows = [
        {"commit": c, "cells": [by_commit.get(c.pk, {}).get(m.pk, {}) for m in visible_mappings]}
        for c in page
    ]
    context = {"repository": repository, "mappings": visible_mappings, "page": page, "rows": rows,
               "can_change": has_permission(request.user, Repository, "change", repository)}
    return render(request, "web/sources/repository.html", context)


class SigningForm(forms.Form):
    """Verified commits of one repository: the mode, keys to remove, and one key to add."""

    verification_mode = forms.ChoiceField(choices=VerificationMode.choices)
    remove = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                       label="Remove keys")
    new_key_name = forms.CharField(required=False, max_length=100, label="New key: name")
    new_public_key = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 6, "cols": 80}), strip=False,
        label="New key: public key",
        help_text="An OpenPGP public key block (gpg --armor --export FINGERPRINT) or one SSH public key "
        "line (the .pub file).",
    )

    def __init__(self, *args: Any, repository: Repository, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repository = repository
        self.fields["verification_mode"].initial = repository.verification_mode
        cast(forms.MultipleChoiceField, self.fields["remove"]).choices = [
            (k["name"], f"{k['name']} ({k['kind']} {k['fingerprint']})")
            for k in repository.trusted_keys or []
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        removed = set(cleaned.get("remove") or [])
        keys: list[dict[str, Any]] = [
            {"name": k["name"], "public_key": k["public_key"]}
            for k in self.repository.trusted_keys or [] if k["name"] not in removed
        ]
        name, key = cleaned.get("new_key_name", "").strip(), cleaned.get("new_public_key", "")
        if "PRIVATE KEY" in key:
            # Refused below; never sent back into the page.
            data = cast(QueryDict, self.data).copy()
            data["new_public_key"] = ""
            self.data = data
        if bool(name) != bool(key.strip()):
            raise forms.ValidationError("A new key needs both a name and the public key.")
        if name:
            keys.append({"name": name, "public_key": key})
        try:
            cleaned["trusted_keys"] = normalize_trusted_keys(keys)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned


@login_required
@require_http_methods(["GET", "POST"])
def repository_signing(request: HttpRequest, pk: int) -> HttpResponse:
    """Verified commits: the mode and the trusted keys, with the permission to change the repository."""
    repository = get_visible(request, Repository.objects.all(), pk=pk)
    require(request, Repository, "change", repository)
    form = SigningForm(request.POST or None, repository=repository)
    if request.method == "POST" and form.is_valid():
        before = snapshot(repository)
        repository.verification_mode = form.cleaned_data["verification_mode"]
        repository.trusted_keys = form.cleaned_data["trusted_keys"]

        def save() -> Repository:
            repository.save(update_fields=["verification_mode", "trusted_keys", "updated"])
            return repository

        try:
            save_in_scope(request.user, save, before=before)
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Signature verification of {repository.name} saved.")
            return redirect("web:repository-detail", pk=repository.pk)
    return render(request, "web/sources/signing.html", {"form": form, "repository": repository})


def violations_by_policy(legs: list[ClusterSync]) -> list[dict[str, object]]:
    """The policy results of a rollout's clusters, grouped by policy: which clusters, which objects, why."""
    groups: dict[str, list[dict[str, object]]] = {}
    for leg in legs:
        for violation in (leg.evaluation or {}).get("violations") or []:
            groups.setdefault(violation.get("policy_name") or "?", []).append(
                {"cluster": leg.cluster.name, **violation}
            )
    return [{"policy": name, "findings": findings} for name, findings in sorted(groups.items())]


@login_required
def commit_detail(request: HttpRequest, pk: int) -> HttpResponse:
    commit = get_visible(request, Commit.objects.select_related("repository"), pk=pk)
    mappings = visible(request, PathMapping.objects.filter(repository=commit.repository_id))
    renders = MappingRender.objects.filter(commit=commit, mapping__in=mappings).select_related(
        "mapping__cluster_group"
    )
    rollouts = visible(
        request,
        Rollout.objects.filter(commit=commit)
        .select_related("mapping__cluster_group")
        .prefetch_related(
            Prefetch("syncs", queryset=ClusterSync.objects.select_related("cluster"), to_attr="legs")
        ),
    )
    shown = list(rollouts)
    for rollout in shown:
        rollout.by_policy = violations_by_policy(rollout.legs)
    shown_renders = list(renders)
    warnings: dict[int, list[str]] = {}  # render warnings (fleet.yaml keys reported by name), once each
    for render_id, texts in RenderedManifest.objects.filter(mapping_render__in=shown_renders).exclude(
            warnings=[]).values_list("mapping_render_id", "warnings"):
        seen = warnings.setdefault(render_id, [])
        seen.extend(t for t in texts or [] if t not in seen)
    for r in shown_renders:
        setattr(r, "warning_list", warnings.get(r.pk, []))  # noqa: B010 - a template-only attribute
    context = {"commit": commit, "renders": shown_renders, "rollouts": shown}
    return render(request, "web/sources/commit.html", context)
