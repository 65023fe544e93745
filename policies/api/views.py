"""Policy API: policies (versions nested), bindings, waivers, evaluations and violations, policy sources,
import and check-before-merge. Every queryset is narrowed by its model's ``restrict`` (see models.py)."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.db.models import Count, Model, Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.access.restrict import groups_where, scope_for
from fleet.audit.redact import snapshot
from fleet.audit.services import record_change
from fleet.core.api.parsers import JSONParser
from fleet.core.api.viewsets import FleetModelViewSet, FleetReadOnlyViewSet
from fleet.sources.models import PathMapping
from policies.api import serializers as s
from policies.api.reports import CHECK_RENDERERS
from policies.filtersets import (
    EvaluationFilterSet,
    PolicyBindingFilterSet,
    PolicyFilterSet,
    ViolationFilterSet,
    WaiverFilterSet,
)
from policies.models import Evaluation, Policy, PolicyBinding, PolicySource, PolicyVersion, Violation, Waiver
from policies.services import reports
from policies.services.checking import CheckInputError, CheckReport, check_mapping, live_cluster_for
from policies.services.definitions import EngineUnavailableForSave, PolicyInvalid
from policies.services.importing import ImportError_, holds_exceptions, import_files
from policies.services.reports import MappingError
from policies.services.scheduling import cancel_schedule, schedule_enforcement
from policies.services.sources import sync_policy_source
from policies.services.waivers import authored_by, expire_waiver, save_waiver


class OwnRestrictMixin:
    """Use the queryset's own ``restrict`` (models with custom visibility rules)."""

    request: Any

    def get_queryset(self) -> QuerySet:
        return self.base_queryset().restrict(self.request.user, "view")  # type: ignore[attr-defined]


def _require_global(user: Any, model: type[Model], action: str, what: str) -> None:
    if not groups_where(user, model, action).everywhere:
        raise PermissionDenied(f"Only a role on all clusters may {what}.")


class PolicyViewSet(OwnRestrictMixin, FleetModelViewSet):
    queryset = Policy.objects.select_related("current").prefetch_related(
        Prefetch("versions", queryset=PolicyVersion.objects.order_by("-number"))
    )
    serializer_class = s.PolicySerializer
    filterset_class = PolicyFilterSet
    search_fields = ["name", "description", "kind"]
    ordering_fields = ["name", "created", "updated"]
    ordering = ["name"]
    action_permissions = {"import_policies": "add", "check": "view"}

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        _require_global(request.user, Policy, "add", "add policies (they can be bound anywhere)")
        return super().create(request, *args, **kwargs)

    # save_policy audits (policy.create / policy.version); the base class would record a second event.
    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():
            serializer.save()

    def perform_update(self, serializer: Any) -> None:
        with transaction.atomic():
            before = snapshot(serializer.instance)
            instance = serializer.save()
            if instance.name != before.get("name") or instance.description != before.get("description"):
                record_change("policy.update", instance, before)

    @extend_schema(
        request={
            "application/json": s.ImportRequestSerializer,
            # One part per file, named by its relative path (e.g. `lib/k8s.rego`), plus optional plain fields.
            "multipart/form-data": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "cluster_group": {"type": "integer"},
                    "enforcement": {"type": "string", "enum": ["deny", "warn", "dryrun"]},
                    "allow_failing_tests": {"type": "boolean"},
                },
                "additionalProperties": {"type": "string", "format": "binary"},
            },
        },
        responses={
            201: s.ImportResultSerializer,
            400: OpenApiResponse(description="refused, nothing stored"),
        },
        description=(
            "Import policies as they are: JSON {files: {path: content}} or {documents: multi-doc YAML}, or "
            "multipart with one part per file (the part name is the relative path)."
        ),
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="import",
        url_name="import",
        parser_classes=[JSONParser, MultiPartParser],
    )
    def import_policies(self, request: Request) -> Response:
        _require_global(request.user, Policy, "add", "import policies")
        files: dict[str, str] = {}
        data: dict[str, Any] = {}
        if request.FILES:
            for key, upload in request.FILES.items():
                path = key if ("/" in key or "." in key) else upload.name
                try:
                    files[path] = upload.read().decode("utf-8")
                except UnicodeDecodeError:
                    raise ValidationError({"files": [f"{path}: not UTF-8 text"]}) from None
            data = {k: v for k, v in request.data.items() if k not in request.FILES}  # type: ignore[union-attr]
        else:
            data = request.data.dict() if hasattr(request.data, "dict") else dict(request.data)
        req = s.ImportRequestSerializer(data=data, context={"request": request})
        req.is_valid(raise_exception=True)
        v = req.validated_data
        files.update(v.get("files") or {})
        if v.get("documents"):
            files["documents.yaml"] = v["documents"]
        if not files:
            raise ValidationError({"files": ["Give files, documents or uploaded files."]})
        group = v.get("cluster_group")
        enforcement = v.get("enforcement")
        if enforcement:
            if not groups_where(request.user, PolicyBinding, "add").covers(group.pk if group else None):
                raise PermissionDenied(
                    "You may not bind policies in this group."
                    if group is not None
                    else "Only a role on all clusters may bind policies to all clusters."
                )
        if holds_exceptions(files) and not groups_where(request.user, Waiver, "add").covers(
            group.pk if group else None
        ):
            raise PermissionDenied(
                "Kyverno PolicyExceptions become waivers: you may not waive policies "
                + ("in this group." if group is not None else "on all clusters.")
            )
        try:
            result = import_files(
                files,
                name=v.get("name") or "",
                user=request.user,
                group=group,
                enforcement=enforcement,
                allow_failing_tests=v.get("allow_failing_tests", False),
            )
        except PolicyInvalid as exc:
            raise s.invalid(exc) from None
        except ImportError_ as exc:
            raise ValidationError({"files": [str(exc)]}) from None
        except EngineUnavailableForSave as exc:
            raise s.EngineUnavailableError(str(exc)) from None
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)

    import_policies.body_required = True  # type: ignore[attr-defined]

    @extend_schema(
        request=s.CheckRequestSerializer,
        responses={
            (200, "application/json"): s.CheckResponseSerializer,
            (200, "application/xml"): OpenApiTypes.STR,  # ?format=junit
            (200, "application/sarif+json"): OpenApiTypes.OBJECT,  # ?format=sarif: a SARIF 2.1.0 log
        },
        description=(
            "Check before merge: the decisions for the mapping's clusters at a branch, a commit or uploaded "
            "manifests, in conftest's shape. Nothing is stored (the check is audited). ?format=junit answers "
            "JUnit XML (a testsuite per mapping/cluster), ?format=sarif SARIF 2.1.0 (a run per mapping)."
        ),
    )
    @action(detail=False, methods=["post"], renderer_classes=CHECK_RENDERERS)
    def check(self, request: Request) -> Response:
        req = s.CheckRequestSerializer(data=request.data, context={"request": request})
        req.is_valid(raise_exception=True)
        v = req.validated_data
        if v.get("mapping") is not None:
            mappings = [v["mapping"]]
        else:
            mappings = list(
                PathMapping.objects.filter(repository=v["repository"], enabled=True)
                .restrict(request.user, "view")
                .order_by("name")
            )
        visible_groups = groups_where(request.user, Evaluation, "view")
        for m in mappings:
            if not visible_groups.covers(m.cluster_group_id):
                raise PermissionDenied("You may not see the evaluations of this mapping.")
        single = v.get("mapping") is not None
        if v.get("live_cluster"):
            # Reading live objects with the cluster's credentials is what a sync does: it takes the right
            # to start one (rollout.sync) on the mapping's group, not only the right to view.
            may_sync = scope_for(request.user, "rollout.sync")
            if not all(may_sync.covers(m.cluster_group_id) for m in mappings):
                raise PermissionDenied(
                    "Reviewing against a live cluster needs the right to start a sync (rollout.sync) on "
                    "the mapping's cluster group."
                )
        try:  # a cluster the caller may not see is answered like an unknown one
            live = live_cluster_for(v["live_cluster"], request.user) if v.get("live_cluster") else None
        except CheckInputError as exc:
            raise ValidationError({exc.field: [exc.message]}) from None
        old = [("old_manifests", v["old_manifests"])] if v.get("old_manifests") else []
        bodies: list[dict[str, Any]] = []
        checked: list[CheckReport | MappingError] = []
        for mapping in PathMapping.objects.filter(pk__in=[m.pk for m in mappings]).select_related(
            "repository", "cluster_group"
        ):
            try:
                report = check_mapping(
                    mapping,
                    commit=v.get("commit") or "",
                    branch=v.get("branch") or "",
                    manifests=v.get("manifests"),
                    operation=v.get("operation") or "",
                    old=old,
                    live_cluster=live,
                    user=request.user,
                )
            except CheckInputError as exc:
                if single:
                    detail: dict[str, Any] = {exc.field: [exc.message]}
                    if exc.file or exc.line:
                        detail["location"] = {"file": exc.file, "line": exc.line}
                    raise ValidationError(detail) from None
                # Checking a whole repository: a mapping that cannot render is reported as blocked.
                bodies.append(
                    {
                        "mapping": {"id": mapping.pk, "name": mapping.name},
                        "ref": v.get("branch") or v.get("commit") or "",
                        "blocked": True,
                        "error": exc.message,
                        "decisions": {},
                        "clusters": [],
                        "summary": "",
                        "policies": [],
                    }
                )
                checked.append(MappingError(mapping.name, exc.message))
                continue
            bodies.append({**report.as_dict(), "error": ""})
            checked.append(report)
        fmt = getattr(request.accepted_renderer, "format", "json")
        if fmt == "junit":
            return Response(reports.junit_many(checked))
        if fmt == "sarif":
            lines = [reports.report_lines(r) if isinstance(r, CheckReport) else None for r in checked]
            return Response(json.dumps(reports.sarif_many(checked, lines), indent=2))
        body = {"blocked": any(b["blocked"] for b in bodies), "mappings": bodies}
        return Response(body)


class PolicyBindingViewSet(OwnRestrictMixin, FleetModelViewSet):
    queryset = PolicyBinding.objects.select_related("policy", "cluster_group", "pinned_version")
    serializer_class = s.PolicyBindingSerializer
    filterset_class = PolicyBindingFilterSet
    ordering_fields = ["id", "created"]
    ordering = ["id"]

    # The one audited save, then (same transaction) the scheduled enforcement: a binding given deny (or
    # warn) with dryrun_days runs as dryrun with the preview of the enforcement attached; a binding whose
    # enforcement is set by hand forgets an earlier schedule (policies/services/scheduling.py).
    def perform_create(self, serializer: Any) -> None:
        days = serializer.validated_data.pop("dryrun_days", None)
        with transaction.atomic():
            super().perform_create(serializer)
            if days:
                binding = serializer.instance
                schedule_enforcement(binding, days=days, enforce_as=binding.enforcement)

    def perform_update(self, serializer: Any) -> None:
        days = serializer.validated_data.pop("dryrun_days", None)
        with transaction.atomic():
            super().perform_update(serializer)
            binding = serializer.instance
            if days:
                schedule_enforcement(binding, days=days, enforce_as=binding.enforcement)
            elif "enforcement" in serializer.validated_data:
                cancel_schedule(binding)


class WaiverViewSet(OwnRestrictMixin, FleetModelViewSet):
    queryset = Waiver.objects.select_related("policy", "cluster_group").annotate(use_count=Count("uses"))
    serializer_class = s.WaiverSerializer
    filterset_class = WaiverFilterSet
    search_fields = ["justification", "name_pattern", "kind", "namespace"]
    ordering_fields = ["id", "expires_at", "created"]
    ordering = ["-expires_at", "id"]
    action_permissions = {"expire": "change"}

    # One service for API and UI: scope re-check after saving and the audit event (save_waiver).
    def perform_create(self, serializer: Any) -> None:
        user = self.request.user
        save_waiver(user, lambda: serializer.save(**authored_by(user)))

    def perform_update(self, serializer: Any) -> None:
        save_waiver(self.request.user, serializer.save, before=snapshot(serializer.instance))

    @extend_schema(request=None, responses={200: s.WaiverSerializer})
    @action(detail=True, methods=["post"])
    def expire(self, request: Request, pk: Any = None) -> Response:
        waiver = self.get_object()
        expire_waiver(waiver)
        return Response(
            s.WaiverSerializer(self.get_queryset().get(pk=waiver.pk), context={"request": request}).data
        )


class EvaluationViewSet(FleetReadOnlyViewSet):
    queryset = Evaluation.objects.select_related("commit", "mapping", "cluster")
    serializer_class = s.EvaluationSerializer
    filterset_class = EvaluationFilterSet
    ordering_fields = ["id", "created", "decision"]
    ordering = ["-id"]

    def get_serializer_class(self) -> Any:
        return s.EvaluationDetailSerializer if self.action == "retrieve" else s.EvaluationSerializer

    def get_queryset(self) -> QuerySet:
        qs = super().get_queryset()
        if self.action == "retrieve":
            qs = qs.prefetch_related(
                Prefetch(
                    "violations",
                    queryset=Violation.objects.select_related(
                        "waived_by", "evaluation__cluster", "evaluation__commit"
                    ),
                )
            )
        return qs


class ViolationViewSet(OwnRestrictMixin, FleetReadOnlyViewSet):
    queryset = Violation.objects.select_related("waived_by", "evaluation__cluster", "evaluation__commit")
    serializer_class = s.ViolationSerializer
    filterset_class = ViolationFilterSet
    search_fields = ["message", "name", "policy_name"]
    ordering_fields = ["id"]
    ordering = ["-id"]


class PolicySourceViewSet(OwnRestrictMixin, FleetModelViewSet):
    """Policy sources use the ``policy.*`` permissions; writes need a policy-admin on all clusters."""

    queryset = PolicySource.objects.select_related("repository", "bind_group")
    serializer_class = s.PolicySourceSerializer
    ordering_fields = ["id", "path"]
    ordering = ["id"]
    action_permissions = {"sync": "change"}

    def get_object(self) -> Model:
        obj = self._visible_object()
        needed = self.permission_action()
        if needed != "view":
            _require_global(self.request.user, Policy, needed, f"{needed} policy sources")
        return obj

    def _visible_object(self) -> Model:
        from django.shortcuts import get_object_or_404

        pk = str(self.kwargs.get("pk", ""))
        if not pk.isascii() or not pk.isdigit() or len(pk) > 18:  # "abc", "false", "null,null": no such row
            raise NotFound("Not found.")
        return get_object_or_404(self.get_queryset(), pk=int(pk))

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        _require_global(request.user, Policy, "add", "add policy sources")
        return super(FleetModelViewSet, self).create(request, *args, **kwargs)

    def _ensure_allowed(self, instance: Model, action: str) -> None:
        _require_global(self.request.user, Policy, action, f"{action} policy sources")

    @extend_schema(request=s.SyncRequestSerializer, responses={200: s.ImportResultSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: Any = None) -> Response:
        source: PolicySource = self.get_object()  # type: ignore[assignment]
        req = s.SyncRequestSerializer(data=request.data)
        req.is_valid(raise_exception=True)
        sha = req.validated_data.get("commit") or source.repository.head_sha
        if not sha:
            raise ValidationError({"commit": ["The repository has no fetched head; give a commit."]})
        outcome = sync_policy_source(source, sha, user=request.user)
        if not outcome.ok:
            raise ValidationError({"non_field_errors": [outcome.error]})
        assert outcome.result is not None  # noqa: S101
        return Response(outcome.result.as_dict())
