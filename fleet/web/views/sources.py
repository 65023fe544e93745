"""Repositories, their commits with the per-mapping render and rollout status, and one commit's page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from fleet.rollouts.models import ClusterSync, Rollout
from fleet.sources.models import Commit, MappingRender, PathMapping, Repository
from fleet.web.views.base import get_visible, paginate, visible


@login_required
def repository_list(request: HttpRequest) -> HttpResponse:
    repositories = visible(request, Repository.objects.all()).order_by("name")
    return render(request, "web/sources/repositories.html", {"repositories": repositories})


@login_required
def repository_detail(request: HttpRequest, pk: int) -> HttpResponse:
    repository = get_visible(request, Repository.objects.all(), pk=pk)
    mappings = visible(
        request, PathMapping.objects.filter(repository=repository).select_related("cluster_group")
    )
    visible_mappings = list(mappings)
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
    context = {"repository": repository, "mappings": visible_mappings, "page": page, "rows": rows}
    return render(request, "web/sources/repository.html", context)


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
    context = {"commit": commit, "renders": renders, "rollouts": shown}
    return render(request, "web/sources/commit.html", context)
