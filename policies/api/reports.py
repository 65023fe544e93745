"""``GET /api/policy-reports/{cluster id}/?format=wgpolicyk8s|openreports``: the cluster's policy results as
Kubernetes policy-report objects (:mod:`policies.services.policyreports`). The cluster must be one the user
may view (404 otherwise); results come only from the Evaluations the user may view."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.models import Cluster
from fleet.core.api.viewsets import RestrictedViewSetMixin
from policies.services.policyreports import FLAVOURS, cluster_reports


class WgPolicyReportRenderer(JSONRenderer):
    """``?format=wgpolicyk8s``: wgpolicyk8s.io/v1alpha2 PolicyReport / ClusterPolicyReport (the default)."""

    format = "wgpolicyk8s"


class OpenReportsRenderer(JSONRenderer):
    """``?format=openreports``: openreports.io/v1alpha1 Report / ClusterReport."""

    format = "openreports"


class _TextRenderer(BaseRenderer):
    """Renders a report already written as text; any other body (DRF's error shape) as JSON, labelled so."""

    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, str):
            return data.encode("utf-8")
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode("utf-8")


class JUnitRenderer(_TextRenderer):
    """``?format=junit`` on the check: JUnit XML."""

    media_type = "application/xml"
    format = "junit"


class SarifRenderer(_TextRenderer):
    """``?format=sarif`` on the check: SARIF 2.1.0."""

    media_type = "application/sarif+json"
    format = "sarif"


CHECK_RENDERERS = [JSONRenderer, JUnitRenderer, SarifRenderer]


class PolicyReportViewSet(RestrictedViewSetMixin, viewsets.GenericViewSet):
    queryset = Cluster.objects.all()
    renderer_classes = [JSONRenderer, WgPolicyReportRenderer, OpenReportsRenderer]
    pagination_class = None
    filter_backends: list[Any] = []

    @extend_schema(
        summary="Policy reports of a cluster",
        description=(
            "The latest policy results of the cluster (per mapping, its latest Evaluation) as a Kubernetes "
            "List of PolicyReport (per namespace) and ClusterPolicyReport objects: wgpolicyk8s.io/v1alpha2 "
            "(default, ?format=wgpolicyk8s) or openreports.io/v1alpha1 Report/ClusterReport "
            "(?format=openreports). Results: fail (blocking deny), warn (warn, dryrun), skip (waived), "
            "error (engine error), pass (policy x object without a finding). See docs/policies.md."
        ),
        parameters=[
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=list(FLAVOURS),
                description="Report API group: wgpolicyk8s (default) or openreports.",
            )
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def retrieve(self, request: Request, pk: Any = None) -> Response:
        cluster = self.get_object()  # 404 for a cluster the user may not view
        chosen = getattr(request.accepted_renderer, "format", "")
        flavour = chosen if chosen in FLAVOURS else FLAVOURS[0]
        return Response(cluster_reports(cluster, request.user, flavour))
