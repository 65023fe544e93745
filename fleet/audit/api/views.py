from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from fleet.access.restrict import restrict
from fleet.audit.api.serializers import AuditEventSerializer, VerifySerializer
from fleet.audit.export import (
    CONTENT_TYPES,
    FORMATS,
    ExportError,
    export_filename,
    filter_events,
    iter_csv,
    iter_jsonl,
    used_filters,
    write_pdf,
)
from fleet.audit.filtersets import AuditEventFilterSet
from fleet.audit.models import AuditEvent
from fleet.audit.services import record, seal, verify
from fleet.core.api.viewsets import FleetReadOnlyViewSet


class ExportNegotiation(DefaultContentNegotiation):
    """On the export action `?format=` names the export format, not a DRF renderer; errors are JSON."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class AuditEventViewSet(FleetReadOnlyViewSet):
    """The audit log, restricted to the cluster groups the user may see."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet
    search_fields = ["target_repr", "message", "actor_name", "action"]
    ordering_fields = ["sequence", "time"]
    ordering = ["-sequence"]
    action_permissions = {"export": "export"}

    @extend_schema(responses=VerifySerializer)
    @action(detail=False, methods=["get"])
    def verify(self, request: Request) -> Response:
        """Walk the whole hash chain and report the first event that does not match."""
        return Response(asdict(verify()))

    @extend_schema(
        filters=True,
        parameters=[
            OpenApiParameter(
                "format", OpenApiTypes.STR, enum=list(FORMATS), required=True, description="the export format"
            )
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, one row per event"),
            (200, "application/jsonl"): OpenApiResponse(
                OpenApiTypes.STR, description="JSON Lines, one event per line, re-verifiable"
            ),
            (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="PDF report"),
            400: OpenApiResponse(description="bad format or filter"),
        },
    )
    @action(
        detail=False,
        methods=["get"],
        renderer_classes=[JSONRenderer],
        content_negotiation_class=ExportNegotiation,
        pagination_class=None,
    )
    def export(self, request: Request) -> Any:
        """Download the events the user may view, filtered like the list, as CSV, JSON Lines or a PDF report.

        CSV and JSON Lines stream in constant memory whatever the number of events.
        """
        fmt = request.query_params.get("format", "")
        if fmt not in FORMATS:
            raise ValidationError({"format": [f"Choose one of {', '.join(FORMATS)}."]})
        visible = restrict(AuditEvent.objects.all(), request.user, "export")
        try:
            queryset = filter_events(request.query_params, visible)
        except ExportError as exc:
            raise ValidationError(exc.errors) from exc
        filters = used_filters(request.query_params)
        record(
            "audit.export",
            target_type="auditevent",
            after={"format": fmt, "filters": filters},
            message=f"exported audit events as {fmt}",
        )
        filename = export_filename(fmt)
        response: StreamingHttpResponse
        if fmt == "pdf":
            spool = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # FileResponse closes it
            write_pdf(queryset, spool, filters=filters, requested_by=request.user.get_username())
            spool.seek(0)
            response = FileResponse(
                spool, as_attachment=True, filename=filename, content_type=CONTENT_TYPES[fmt]
            )
        else:
            chunks = iter_csv(queryset) if fmt == "csv" else iter_jsonl(queryset)
            response = StreamingHttpResponse(chunks, content_type=CONTENT_TYPES[fmt])
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Accel-Buffering"] = "no"
        response["Cache-Control"] = "no-store"
        return response

    # Last in the class body: a method named `list` would shadow the builtin for the decorators above.
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Events newest first; events committed so far are sealed first, so that each has its sequence and
        hash (one recorded after that is listed as pending: `sequence` null, empty hashes)."""
        seal(wait=True)
        return super().list(request, *args, **kwargs)
