from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.audit.api.serializers import AuditEventSerializer, VerifySerializer
from fleet.audit.filtersets import AuditEventFilterSet
from fleet.audit.models import AuditEvent
from fleet.audit.services import verify
from fleet.core.api.viewsets import FleetReadOnlyViewSet


class AuditEventViewSet(FleetReadOnlyViewSet):
    """The audit log, restricted to the cluster groups the user may see."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet
    search_fields = ["target_repr", "message", "actor_name", "action"]
    ordering_fields = ["sequence", "time"]
    ordering = ["-sequence"]

    @extend_schema(responses=VerifySerializer)
    @action(detail=False, methods=["get"])
    def verify(self, request: Request) -> Response:
        """Walk the whole hash chain and report the first event that does not match."""
        return Response(asdict(verify()))
