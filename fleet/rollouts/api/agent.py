"""The pull-mode agent API, ``/api/agent/v1/`` (docs/api.md "Pull mode: the agent API").

Only agent credentials are accepted here (clusters/agent_auth.py), and each touches only its own cluster's
legs and rows (another cluster's leg: 404). Every call is audited with the cluster as actor
(``agent:<cluster>``, action ``agent.<call>``); polls that hand out nothing are coalesced to at most one
``agent.polled`` row per cluster per minute. Bodies up to FLEETGATE_AGENT_MAX_BODY_BYTES (16 MiB, 413 above).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, AuthenticationFailed, NotFound, ParseError
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clusters import agent_tokens
from clusters.agent_auth import AgentAuthentication, AgentPrincipal, BootstrapAuthentication, IsAgent
from clusters.models import AgentCredential, Cluster
from fleet.audit.services import record
from fleet.core.request_body import read_up_to
from fleet.rollouts.services import agentwork

app_name = "agent-api"

POLLED_AUDIT_SECONDS = 60  # empty polls: at most one agent.polled row per cluster per this many seconds


class AgentJSONParser(BaseParser):
    """JSON bodies up to FLEETGATE_AGENT_MAX_BODY_BYTES (the request body middleware answers 413 above it).
    Not a subclass of DRF's JSONParser, which DRF feeds from ``request.body`` and so from Django's smaller
    limit for the rest of the API: this one reads the stream itself."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        if stream is None:
            return {}
        limit = int(settings.FLEETGATE_AGENT_MAX_BODY_BYTES)
        raw, larger = read_up_to(stream, limit)
        if larger:
            raise RequestTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        try:
            return json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This work is not yours any more."
    default_code = "conflict"


# -- serializers (the schema, and the validation of bodies) ------------------------------------------------
class RegisterSerializer(serializers.Serializer):
    agent_version = serializers.CharField(max_length=64, allow_blank=True)
    kubernetes_version = serializers.CharField(max_length=64, allow_blank=True, required=False, default="")


class CredentialSerializer(serializers.Serializer):
    cluster = serializers.CharField(help_text="The cluster this agent acts for.")
    token = serializers.CharField(help_text="The agent credential, fga_a_…: store it; it is shown once.")
    expires_at = serializers.DateTimeField()
    rotate_after = serializers.DateTimeField(help_text="Rotate (POST rotate) after this time.")
    poll_wait = serializers.IntegerField(help_text="The longest a work poll waits, in seconds.")
    report_interval = serializers.IntegerField(help_text="Report live state and drift this often (s).")


class WorkSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The cluster sync (leg) id.")
    attempt = serializers.IntegerField(help_text="Send it with heartbeats and the result.")
    lease_seconds = serializers.IntegerField(help_text="Heartbeat at least every third of this.")
    rollout = serializers.IntegerField()
    mapping = serializers.CharField(help_text="The tracking id of the mapping's objects.")
    namespace = serializers.CharField(help_text="The default namespace.")
    objects = serializers.ListField(child=serializers.DictField(), help_text="The objects to apply.")
    inventory = serializers.ListField(child=serializers.DictField(), help_text="The previous inventory.")
    prune = serializers.BooleanField()
    wave_timeout = serializers.FloatField()
    health_timeout = serializers.FloatField()
    restrict = serializers.DictField(allow_null=True, help_text="The group's allow-list rules, or null.")
    impersonate = serializers.CharField(allow_blank=True)
    digest = serializers.CharField(help_text='"sha256:<hex>" of {objects, inventory, prune}: verify it.')


class WorkListSerializer(serializers.Serializer):
    work = WorkSerializer(many=True)
    rotate = serializers.BooleanField(help_text="Rotate the credential now.")


class AttemptSerializer(serializers.Serializer):
    attempt = serializers.IntegerField(min_value=1)


class LeaseSerializer(serializers.Serializer):
    lease_seconds = serializers.IntegerField()


class HealthSerializer(serializers.Serializer):
    state = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True, required=False, default="")
    detail = serializers.DictField(required=False, default=dict)


class ResultSerializer(serializers.Serializer):
    attempt = serializers.IntegerField(min_value=1)
    digest = serializers.CharField(max_length=80)
    ok = serializers.BooleanField()
    results = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    counts = serializers.DictField(child=serializers.IntegerField(), required=False, default=dict)
    inventory = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    applied = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    error = serializers.CharField(allow_blank=True, required=False, default="")
    transient = serializers.BooleanField(required=False, default=False)
    health = HealthSerializer(required=False, allow_null=True, default=None)


class RecordedSerializer(serializers.Serializer):
    recorded = serializers.ChoiceField(choices=["synced", "failed", "retrying"])


class ManagedMappingSerializer(serializers.Serializer):
    mapping = serializers.CharField()
    namespace = serializers.CharField()
    applied = serializers.ListField(child=serializers.DictField())
    inventory = serializers.ListField(child=serializers.DictField())
    self_heal = serializers.BooleanField()
    impersonate = serializers.CharField(allow_blank=True)


class ManagedSerializer(serializers.Serializer):
    mappings = ManagedMappingSerializer(many=True)


class DriftReportSerializer(serializers.Serializer):
    drifted = serializers.BooleanField()
    objects = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    errors = serializers.ListField(  # type: ignore[assignment]  # the report's key (DRF pops declared fields)
        child=serializers.CharField(allow_blank=True), required=False, default=list)


class HealedSerializer(serializers.Serializer):
    counts = serializers.DictField(child=serializers.IntegerField(), required=False, default=dict)
    error = serializers.CharField(allow_blank=True, required=False, default="")


class ReportMappingSerializer(serializers.Serializer):
    mapping = serializers.CharField(max_length=200, trim_whitespace=False)
    live = serializers.ListField(child=serializers.DictField(), required=False)
    drift = DriftReportSerializer(required=False, allow_null=True)
    healed = HealedSerializer(required=False, allow_null=True)


class ReportSerializer(serializers.Serializer):
    agent_version = serializers.CharField(max_length=64, allow_blank=True, required=False, default="")
    kubernetes_version = serializers.CharField(max_length=64, allow_blank=True, required=False, default="")
    mappings = ReportMappingSerializer(many=True, required=False, default=list)


class AcceptedSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="How many of the reported mappings are managed here.")


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    text = {
        400: "malformed body",
        401: "no, an invalid, expired or revoked credential",
        403: "not an agent of a pull-mode cluster",
        404: "no such work of this cluster",
        409: "the work is not this attempt's any more (stop; nothing recorded)",
        413: "body over FLEETGATE_AGENT_MAX_BODY_BYTES",
    }
    # described here; the body shapes are added by the API's schema class (fleet/core/api/schema.py)
    return {c: OpenApiResponse(description=text[c]) for c in codes}


# -- views ---------------------------------------------------------------------------------------------------
class AgentView(APIView):
    """Agent credentials only; the cluster is the credential's."""

    authentication_classes = [AgentAuthentication]
    permission_classes = [IsAgent]
    parser_classes = [AgentJSONParser]
    call = ""

    query: tuple[str, ...] = ()  # the query parameters the call takes; others are refused (400)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        agent_tokens.touch(self.credential(request))
        unknown = sorted(set(request.query_params) - set(self.query))
        if unknown:
            raise serializers.ValidationError({name: "Unknown query parameter." for name in unknown[:10]})

    @staticmethod
    def credential(request: Request) -> AgentCredential:
        principal: AgentPrincipal = request.user  # type: ignore[assignment]
        return principal.credential

    @staticmethod
    def cluster(request: Request) -> Cluster:
        principal: AgentPrincipal = request.user  # type: ignore[assignment]
        return principal.cluster

    def audit(self, request: Request, message: str, **after: Any) -> None:
        record(f"agent.{self.call}", self.cluster(request), after=after or None, message=message[:500])


def _credential_answer(cluster: Cluster, plain: str, cred: AgentCredential) -> dict[str, Any]:
    return {
        "cluster": cluster.name,
        "token": plain,
        "expires_at": cred.expires_at,
        "rotate_after": agent_tokens.rotate_after(cred),
        "poll_wait": int(settings.FLEETGATE_AGENT_POLL_WAIT),
        "report_interval": int(settings.FLEETGATE_AGENT_REPORT_INTERVAL),
    }


class RegisterView(APIView):
    authentication_classes = [BootstrapAuthentication]
    permission_classes = [IsAgent]
    parser_classes = [AgentJSONParser]

    @extend_schema(operation_id="agent_register", tags=["agent"], request=RegisterSerializer,
                   responses={201: CredentialSerializer, **_errors(400, 401, 403, 413)})
    def post(self, request: Request) -> Response:
        """Exchange a one-time bootstrap token (`Bearer fga_b_…`) for the agent's credential (audited as
        `agent.registered`). The bootstrap token is spent; the cluster's earlier agent credentials are
        revoked."""
        body = RegisterSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            plain, cred = agent_tokens.exchange(
                getattr(request, "_agent_bootstrap", ""),
                body.validated_data["agent_version"], body.validated_data["kubernetes_version"],
            )
        except agent_tokens.AgentTokenRefused as exc:
            raise AuthenticationFailed(f"Registration refused: {exc}.") from None
        return Response(CredentialSerializer(_credential_answer(cred.cluster, plain, cred)).data, status=201)


class RotateView(AgentView):
    call = "rotated"

    @extend_schema(operation_id="agent_rotate", tags=["agent"], request=None,
                   responses={200: CredentialSerializer, **_errors(401, 403)})
    def post(self, request: Request) -> Response:
        """A new agent credential (audited as `agent.rotated`); the one used for this call keeps working
        for 60 seconds, then expires."""
        plain, cred = agent_tokens.rotate(self.credential(request))
        return Response(CredentialSerializer(_credential_answer(cred.cluster, plain, cred)).data)


class WorkView(AgentView):
    call = "polled"
    query = ("wait",)

    @extend_schema(
        operation_id="agent_work", tags=["agent"], request=None,
        parameters=[OpenApiParameter("wait", int, description="Seconds to wait for work (at most "
                                     "FLEETGATE_AGENT_POLL_WAIT, default 0).")],
        responses={200: WorkListSerializer, **_errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        """The cluster's work: queued legs, each claimed for this agent (attempt number and lease, as a push
        worker claims them), or nothing after `wait` seconds (a long poll, woken when work is queued)."""
        try:
            wait = int(request.query_params.get("wait", "0") or 0)
        except ValueError:
            raise serializers.ValidationError({"wait": "A whole number of seconds."}) from None
        wait = max(0, min(wait, int(settings.FLEETGATE_AGENT_POLL_WAIT)))
        cluster = self.cluster(request)
        work = agentwork.poll(cluster, wait)
        if work:
            self.audit(request, f"{len(work)} work item(s) handed out: "
                       + ", ".join(f"leg {w['id']} attempt {w['attempt']}" for w in work),
                       work=[{"id": w["id"], "attempt": w["attempt"], "digest": w["digest"]} for w in work])
        elif cache.add(f"agent-polled:{cluster.pk}", 1, POLLED_AUDIT_SECONDS):
            self.audit(request, f"no work (empty polls are recorded at most once per "
                       f"{POLLED_AUDIT_SECONDS} s)")
        cred = self.credential(request)
        rotate = timezone.now() >= agent_tokens.rotate_after(cred)
        return Response({"work": work, "rotate": rotate})


def _work_id(pk: Any) -> int:
    try:
        return int(pk)
    except (TypeError, ValueError):
        raise NotFound("No such work for this cluster.") from None


class HeartbeatView(AgentView):
    call = "heartbeat"

    @extend_schema(operation_id="agent_work_heartbeat", tags=["agent"], request=AttemptSerializer,
                   responses={200: LeaseSerializer, **_errors(400, 401, 403, 404, 409)})
    def post(self, request: Request, pk: int) -> Response:
        """Extend the lease of this attempt. 409: the attempt lost the work (lease expired and the work was
        queued again, finished, superseded): stop and do not report."""
        body = AttemptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        attempt = body.validated_data["attempt"]
        try:
            lease = agentwork.heartbeat(self.cluster(request), _work_id(pk), attempt)
        except agentwork.NotYours as exc:
            raise NotFound(str(exc)) from None
        except agentwork.Stale as exc:
            self.audit(request, f"leg {pk} attempt {attempt}: refused, {exc}", leg=int(pk), attempt=attempt)
            raise Conflict(str(exc)) from None
        self.audit(request, f"leg {pk} attempt {attempt}: lease extended", leg=int(pk), attempt=attempt)
        return Response({"lease_seconds": lease})


class ResultView(AgentView):
    call = "result"

    @extend_schema(operation_id="agent_work_result", tags=["agent"], request=ResultSerializer,
                   responses={200: RecordedSerializer, **_errors(400, 401, 403, 404, 409, 413)})
    def post(self, request: Request, pk: int) -> Response:
        """The outcome of this attempt, recorded as a push worker's is (synced, failed, or retrying for a
        transient failure), then the rollout moves on. 409: another attempt owns the work, or the digest
        is not the work's: nothing recorded."""
        body = ResultSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        try:
            recorded = agentwork.record_result(self.cluster(request), _work_id(pk), data)
        except agentwork.NotYours as exc:
            raise NotFound(str(exc)) from None
        except agentwork.Stale as exc:
            self.audit(request, f"leg {pk} attempt {data['attempt']}: result refused, {exc}",
                       leg=int(pk), attempt=data["attempt"], recorded=None)
            raise Conflict(str(exc)) from None
        self.audit(request, f"leg {pk} attempt {data['attempt']}: {recorded}", leg=int(pk),
                   attempt=data["attempt"], recorded=recorded, counts=data.get("counts") or {})
        return Response({"recorded": recorded})


class ManagedView(AgentView):
    call = "managed"

    @extend_schema(operation_id="agent_managed", tags=["agent"], request=None,
                   responses={200: ManagedSerializer, **_errors(401, 403)})
    def get(self, request: Request) -> Response:
        """What the agent manages on its cluster: per mapping synced there, the objects applied, the
        inventory and whether the group self-heals (the agent checks drift and heals)."""
        mappings = agentwork.managed(self.cluster(request))
        self.audit(request, f"{len(mappings)} managed mapping(s) read")
        return Response({"mappings": mappings})


class ReportView(AgentView):
    call = "reported"

    @extend_schema(operation_id="agent_report", tags=["agent"], request=ReportSerializer,
                   responses={200: AcceptedSerializer, **_errors(400, 401, 403, 413)})
    def post(self, request: Request) -> Response:
        """The agent's report: its version and the cluster's, and per managed mapping the live objects (for
        plans and the gate's reviews), drift and self-heal (audited as `drift.detected`, `drift.cleared`,
        `drift.healed`, as Fleetgate's own drift check does)."""
        body = ReportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        cluster = self.cluster(request)
        agent_tokens.touch(self.credential(request), data.get("agent_version") or "")
        accepted = agentwork.record_report(cluster, data)
        drifted = sum(1 for m in data.get("mappings") or [] if (m.get("drift") or {}).get("drifted"))
        self.audit(request, f"report: {accepted} mapping(s), {drifted} drifted",
                   accepted=accepted, drifted=drifted)
        return Response({"accepted": accepted})


urlpatterns = [
    path("register", RegisterView.as_view(), name="register"),
    path("rotate", RotateView.as_view(), name="rotate"),
    path("work", WorkView.as_view(), name="work"),
    path("work/<int:pk>/heartbeat", HeartbeatView.as_view(), name="heartbeat"),
    path("work/<int:pk>/result", ResultView.as_view(), name="result"),
    path("managed", ManagedView.as_view(), name="managed"),
    path("report", ReportView.as_view(), name="report"),
]
