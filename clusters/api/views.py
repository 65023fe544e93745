from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from clusters import agent_tokens, membership_guard, services, tenancy
from clusters.api.serializers import (
    AgentBootstrapSerializer,
    AgentRevokeSerializer,
    AgentStatusSerializer,
    AllowListSerializer,
    ClusterGroupSerializer,
    ClusterSerializer,
    ConnectionTestSerializer,
)
from clusters.filtersets import ClusterFilterSet, ClusterGroupFilterSet
from clusters.models import AllowList, Cluster, ClusterGroup
from fleet.core.api.viewsets import FleetModelViewSet


class ModeConflict(APIException):
    status_code = 409
    default_detail = "Not possible in this cluster's connection mode."
    default_code = "connection_mode"


class ClusterViewSet(FleetModelViewSet):
    queryset = Cluster.objects.prefetch_related("groups")
    serializer_class = ClusterSerializer
    filterset_class = ClusterFilterSet
    search_fields = ["name", "description", "api_url"]
    ordering_fields = ["name", "status", "last_seen", "created"]
    ordering = ["name"]
    action_permissions = {"test_connection": "test", "agent_bootstrap": "change", "agent_revoke": "change"}

    @extend_schema(request=None, responses=ConnectionTestSerializer)
    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request: Request, pk: Any = None) -> Response:
        """Contact the cluster now: records status, version, last_seen and last_error (audited)."""
        cluster = self.get_object()  # 404 out of sight, 403 without the "test" permission
        try:
            outcome = services.test_connection(cluster)
        except Cluster.DoesNotExist:  # deleted while it was being tested
            raise NotFound("Not found.") from None
        return Response(ConnectionTestSerializer(outcome).data)

    # Pull mode (docs/clusters.md "Pull mode"): the cluster's agent. Seen with the cluster; a bootstrap token
    # is issued and credentials are revoked with the cluster's change permission (audited in agent_tokens).
    @extend_schema(request=None, responses=AgentStatusSerializer)
    @action(detail=True, methods=["get"], url_path="agent")
    def agent(self, request: Request, pk: Any = None) -> Response:
        """The cluster's agent: connected, version, last call, credentials (never a token or digest)."""
        cluster = self.get_object()
        return Response(AgentStatusSerializer(agent_tokens.status(cluster)).data)

    @extend_schema(request=None, responses={201: AgentBootstrapSerializer})
    @action(detail=True, methods=["post"], url_path="agent/bootstrap")
    def agent_bootstrap(self, request: Request, pk: Any = None) -> Response:
        """A one-time bootstrap token for the cluster's agent (shown once; earlier unused ones are revoked).
        Only for a pull-mode cluster (409 otherwise)."""
        cluster = self.get_object()  # 404 out of sight, 403 without the change permission
        if not cluster.is_pull:
            raise ModeConflict("This cluster is in push mode: an agent is only for pull-mode clusters.")
        plain, cred = agent_tokens.issue_bootstrap(cluster, request.user)
        server = request.build_absolute_uri("/").rstrip("/")
        command = (f"FLEETGATE_AGENT_BOOTSTRAP_TOKEN={plain} python -m clusters.agent --server {server} "
                   "--kubeconfig KUBECONFIG")
        return Response(
            AgentBootstrapSerializer(
                {"token": plain, "expires_at": cred.expires_at, "manifest_command": command}
            ).data,
            status=201,
        )

    @extend_schema(request=None, responses=AgentRevokeSerializer)
    @action(detail=True, methods=["post"], url_path="agent/revoke")
    def agent_revoke(self, request: Request, pk: Any = None) -> Response:
        """Revoke every credential of the cluster's agent (bootstrap tokens too): refused from now on."""
        cluster = self.get_object()
        return Response(AgentRevokeSerializer({"revoked": agent_tokens.revoke(cluster, request.user)}).data)

    # One service for API, UI and admin (membership_guard.save_cluster): a scoped user's create or change may
    # not move clusters across their scope; the saved cluster is re-checked and the change audited there.
    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        membership_guard.save_cluster(
            self.request.user,
            None,
            serializer.save,
            name=data.get("name", ""),
            labels=data.get("labels") or {},
        )

    def perform_update(self, serializer: Any) -> None:
        cluster, data = serializer.instance, serializer.validated_data
        membership_guard.save_cluster(
            self.request.user,
            cluster,
            serializer.save,
            name=data.get("name", cluster.name),
            labels=data["labels"] if "labels" in data else cluster.labels,
        )


class ClusterGroupViewSet(FleetModelViewSet):
    queryset = ClusterGroup.objects.prefetch_related("include", "exclude", "members")
    serializer_class = ClusterGroupSerializer
    filterset_class = ClusterGroupFilterSet
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created"]
    ordering = ["name"]

    # One service for API, UI and admin (membership_guard.save_group): selector, include and exclude are
    # checked against the user's scope before and after saving; the change is audited there.
    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        membership_guard.save_group(
            self.request.user,
            None,
            serializer.save,
            name=data.get("name", ""),
            selector=data.get("selector") or {},
            include=data.get("include"),
            exclude=data.get("exclude"),
        )

    def perform_update(self, serializer: Any) -> None:
        group, data = serializer.instance, serializer.validated_data
        membership_guard.save_group(
            self.request.user,
            group,
            serializer.save,
            name=data.get("name", group.name),
            selector=data["selector"] if "selector" in data else group.selector,
            include=data["include"] if "include" in data else group.include.all(),
            exclude=data["exclude"] if "exclude" in data else group.exclude.all(),
        )

    # The tenant allow-list: seen by whoever sees the group, written only by the admin role on all clusters
    # (clusters/tenancy.py: 403 otherwise), audited with before/after. 404 when the group has none.
    @extend_schema(methods=["GET"], request=None, responses=AllowListSerializer)
    @extend_schema(methods=["PUT"], request=AllowListSerializer, responses=AllowListSerializer)
    @extend_schema(methods=["DELETE"], request=None, responses={204: None})
    @action(detail=True, methods=["get", "put", "delete"], url_path="allow-list")
    def allow_list(self, request: Request, pk: Any = None) -> Response:
        """The group's tenant allow-list. PUT creates or replaces it (the group becomes restricted),
        DELETE removes it (unrestricted)."""
        group = self.get_object()  # 404 out of sight
        if request.method == "GET":
            row = AllowList.objects.filter(cluster_group=group).select_related("cluster_group").first()
            if row is None:
                raise NotFound("This cluster group has no allow-list (it is unrestricted).")
            return Response(AllowListSerializer(row).data)
        if not tenancy.may_change_allow_lists(request.user):  # 403 before any lesson in field rules
            raise tenancy.AllowListRefused(
                "Only the admin role on all clusters may change a cluster group's allow-list.")
        if request.method == "DELETE":
            if not tenancy.delete_allow_list(request.user, group):
                raise NotFound("This cluster group has no allow-list (it is unrestricted).")
            return Response(status=204)
        serializer = AllowListSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = tenancy.save_allow_list(request.user, group, dict(serializer.validated_data))
        return Response(AllowListSerializer(row).data)
