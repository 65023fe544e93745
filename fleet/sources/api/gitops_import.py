"""``POST /api/import/gitops/``: import Fleet, Argo CD and Flux configuration
(fleet/sources/gitops_import)."""

from __future__ import annotations

from typing import Any, ClassVar

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from fleet.sources.gitops_import import import_gitops

MAX_FILES = 50


class ImportFileSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, trim_whitespace=False, help_text="Named in messages.")
    content = serializers.CharField(trim_whitespace=False, help_text="The file's YAML (several documents).")


class GitOpsImportSerializer(serializers.Serializer):
    documents = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False,
        help_text="YAML documents (GitRepo, Application, ApplicationSet, GitRepository, Kustomization, "
        "HelmRelease...), several separated by '---'.")
    files = ImportFileSerializer(many=True, required=False, max_length=MAX_FILES,  # type: ignore[call-arg]
                                 help_text=f"Or the files (at most {MAX_FILES}), each with its name.")
    group = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=63,
        help_text="Target cluster group for Flux objects and Argo CD in-cluster destinations.")
    repository = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=100,
        help_text="An existing repository (by name) for the mappings of charts that name no Git repository "
        "(Argo CD source.chart, Flux charts from a HelmRepository/OCIRepository).")
    dry_run = serializers.BooleanField(default=False, help_text="Show what would be created; create nothing.")

    class Meta:
        # What validate() requires, for the schema: non-empty documents, or at least one file (and the
        # limit on files, which drf-spectacular does not read from a list serializer).
        request_schema: ClassVar[dict[str, Any]] = {
            "anyOf": [
                {"required": ["documents"], "properties": {"documents": {"minLength": 1}}},
                {"required": ["files"], "properties": {"files": {"minItems": 1}}},
            ],
            "properties": {"files": {"maxItems": MAX_FILES}},
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        files = [(f["name"], f["content"]) for f in attrs.get("files") or []]
        if attrs.get("documents"):
            files.insert(0, ("documents", attrs["documents"]))
        if not files:
            raise serializers.ValidationError({"documents": ["Give the YAML documents to import."]})
        attrs["inputs"] = files
        return attrs


class ImportFindingSerializer(serializers.Serializer):
    # "source" is also an attribute of every serializer field (a declared field named so shadows it)
    source = serializers.CharField(help_text="The document: kind/name (file).")  # type: ignore[assignment]
    setting = serializers.CharField()
    reason = serializers.CharField()


class ImportSecretReferenceSerializer(serializers.Serializer):
    source = serializers.CharField()  # type: ignore[assignment]
    setting = serializers.CharField()
    name = serializers.CharField(help_text="The Secret's name; its content is never read or imported.")
    use = serializers.CharField()


class NamesSerializer(serializers.Serializer):
    repositories = serializers.ListField(child=serializers.CharField())
    groups = serializers.ListField(child=serializers.CharField())
    mappings = serializers.ListField(child=serializers.CharField())


class GitOpsImportOutcomeSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    message = serializers.CharField()
    nothing_new = serializers.BooleanField()
    created = NamesSerializer(help_text="Created (or, in a dry run, would be created).")
    existing = NamesSerializer(help_text="Already there: reused, unchanged.")
    conflicts = serializers.ListField(child=serializers.CharField())
    repositories = serializers.ListField(child=serializers.DictField())
    groups = serializers.ListField(child=serializers.DictField())
    mappings = serializers.ListField(child=serializers.DictField())
    unsupported = ImportFindingSerializer(many=True,
                                          help_text="Settings that cannot be expressed (not imported).")
    notes = ImportFindingSerializer(many=True)
    secrets = ImportSecretReferenceSerializer(many=True,
                                        help_text="Secrets the sources name: listed, not imported.")
    skipped = ImportFindingSerializer(many=True, help_text="Whole items that became nothing, and why.")


class GitOpsImportView(APIView):
    """Import Rancher Fleet, Argo CD and Flux configuration as repositories, cluster groups and mappings.

    Needs the rights to create each object: `repository.add` on all clusters for a new repository,
    `clustergroup.add` for a new group, `pathmapping.add` in each mapping's group (403 otherwise). Every
    created object is audited, plus one `gitops.import` event. Malformed YAML or an unknown kind: 400
    naming the file and line. Importing the same documents again creates nothing (`nothing_new`)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=GitOpsImportSerializer,
        responses={
            200: OpenApiResponse(GitOpsImportOutcomeSerializer, description="dry run, or nothing new"),
            201: OpenApiResponse(GitOpsImportOutcomeSerializer, description="objects created"),
            400: OpenApiResponse(description="malformed YAML, unknown kind, refused by an allow-list"),
            403: OpenApiResponse(description="the user may not create these objects"),
        },
    )
    def post(self, request: Request) -> Response:
        body = GitOpsImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        outcome = import_gitops(request.user, data["inputs"], target_group=data["group"],
                                dry_run=data["dry_run"], repository=data["repository"])
        created = not outcome.dry_run and not outcome.nothing_new
        return Response(outcome.to_dict(), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    post.body_required = True  # type: ignore[attr-defined]
