"""Impact preview API: POST /api/policy-previews/ starts one (a background job), GET follows it (status,
done/total while it runs, then the report narrowed to the clusters the caller may see). See
docs/policies.md#impact-preview."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.models import ClusterGroup
from fleet.access.restrict import has_permission
from fleet.core.api.viewsets import FleetReadOnlyViewSet
from fleet.core.filters import FleetFilterSet
from policies.api.serializers import VisibleRelatedField
from policies.api.views import OwnRestrictMixin
from policies.choices import BindingEnforcement, PreviewStatus
from policies.models import Policy, PolicyBinding, PolicyPreview, PolicyVersion
from policies.services import preview as pv


class PreviewRequestSerializer(serializers.Serializer):
    policy = VisibleRelatedField(queryset=Policy.objects.all())
    binding = VisibleRelatedField(
        queryset=PolicyBinding.objects.all(),
        required=False,
        allow_null=True,
        help_text="The binding to change (empty: a new binding). Fields not given keep its values.",
    )
    cluster_group = VisibleRelatedField(
        queryset=ClusterGroup.objects.all(), required=False, allow_null=True, help_text="Empty: all clusters."
    )
    enforcement = serializers.ChoiceField(
        choices=BindingEnforcement.choices, required=False, allow_blank=True
    )
    pinned_version = VisibleRelatedField(
        queryset=PolicyVersion.objects.all(), required=False, allow_null=True
    )
    enabled = serializers.BooleanField(required=False)
    content = serializers.JSONField(
        required=False,
        help_text="A new version's definition (as PolicyVersion.content: style, modules or template and "
        "constraints), previewed without being saved.",
    )
    live = serializers.BooleanField(
        default=True, help_text="Read each cluster's live objects for UPDATE/DELETE reviews (as the gate)."
    )

    def proposal(self) -> pv.Proposal:
        v = self.validated_data
        policy: Policy = v["policy"]
        binding: PolicyBinding | None = v.get("binding")
        if binding is not None and binding.policy_id != policy.pk:
            raise serializers.ValidationError({"binding": ["This binding binds another policy."]})
        change_binding = binding is not None or any(
            k in v for k in ("cluster_group", "enforcement", "pinned_version", "enabled")
        )
        content = v.get("content")
        if not change_binding:
            if content is None:
                raise serializers.ValidationError(
                    {
                        "non_field_errors": [
                            "Give a binding change (enforcement, cluster_group, ...) or content."
                        ]
                    }
                )
            return pv.Proposal(policy.pk, policy.name, content)

        def pick(name: str, default: Any) -> Any:
            return v[name] if name in v else default

        return pv.binding_proposal(
            binding,
            policy=policy,
            cluster_group=pick("cluster_group", binding.cluster_group if binding else None),
            enforcement=pick("enforcement", binding.enforcement if binding else "deny"),
            pinned_version=pick("pinned_version", binding.pinned_version if binding else None),
            enabled=pick("enabled", binding.enabled if binding else True),
            content=content,
        )


class PolicyPreviewSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField(
        help_text="done / total, in percent (null before it starts)."
    )
    report = serializers.SerializerMethodField(
        help_text="The report (when done), narrowed to the clusters the caller may see."
    )

    class Meta:
        model = PolicyPreview
        fields = [
            "id",
            "policy",
            "policy_name",
            "cluster_group",
            "binding",
            "description",
            "proposal",
            "status",
            "done",
            "total",
            "progress",
            "report",
            "error",
            "created_by_name",
            "created",
            "finished",
        ]
        read_only_fields = fields

    def get_progress(self, obj: PolicyPreview) -> float | None:
        if obj.status == PreviewStatus.DONE:
            return 100.0
        return round(100.0 * obj.done / obj.total, 1) if obj.total else None

    def get_report(self, obj: PolicyPreview) -> dict[str, Any] | None:
        if self.context.get("brief"):
            return None
        report = pv.report_for(obj, self.context["request"].user)
        return report or None


class PolicyPreviewFilterSet(FleetFilterSet):
    status = django_filters.ChoiceFilter(choices=PreviewStatus.choices)

    class Meta:
        model = PolicyPreview
        fields = ["policy", "cluster_group", "binding", "status"]


class PolicyPreviewViewSet(OwnRestrictMixin, FleetReadOnlyViewSet):
    queryset = PolicyPreview.objects.select_related("cluster_group")
    serializer_class = PolicyPreviewSerializer
    filterset_class = PolicyPreviewFilterSet
    ordering_fields = ["id", "created"]
    ordering = ["-id"]

    def get_queryset(self) -> Any:
        qs = super().get_queryset()
        return qs.defer("report") if self.action == "list" else qs  # the list leaves reports out: not read

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        context["brief"] = self.action == "list"  # the list leaves reports out
        return context

    @extend_schema(request=PreviewRequestSerializer, responses={201: PolicyPreviewSerializer})
    def create(self, request: Request) -> Response:
        if not has_permission(request.user, PolicyPreview, "add"):
            raise PermissionDenied("You may not preview policy changes.")
        req = PreviewRequestSerializer(data=request.data, context={"request": request})
        req.is_valid(raise_exception=True)
        preview = pv.start(request.user, req.proposal(), live=req.validated_data["live"])
        body = PolicyPreviewSerializer(preview, context={"request": request, "brief": True}).data
        return Response(body, status=status.HTTP_201_CREATED)
