from __future__ import annotations

from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from fleet.access import roles
from fleet.access.api.serializers import (
    APITokenSerializer,
    MeSerializer,
    NewAPITokenSerializer,
    RoleBindingSerializer,
    RoleSerializer,
)
from fleet.access.models import APIToken, RoleBinding
from fleet.access.restrict import groups_where
from fleet.audit.services import record
from fleet.core.api.viewsets import FleetModelViewSet
from fleet.core.filters import FleetFilterSet, IdFilter


class RoleBindingFilterSet(FleetFilterSet):
    # Ids, not object lookups: an id of a user, group or cluster group that exists answers like one that does
    # not (an empty page), so the filter cannot be used to learn which exist.
    user = IdFilter(field_name="user")
    group = IdFilter(field_name="group")
    scope = IdFilter(field_name="scope")

    class Meta:
        model = RoleBinding
        fields = ["user", "group", "role", "scope"]


class RoleBindingViewSet(FleetModelViewSet):
    queryset = RoleBinding.objects.select_related("user", "group", "scope")
    serializer_class = RoleBindingSerializer
    filterset_class = RoleBindingFilterSet
    ordering_fields = ["id", "role"]
    ordering = ["id"]

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        # Bindings belong to no group: only an all-clusters binding may add one. Refuse before the body is
        # validated, so that a group-scoped admin cannot learn from "already has this role" (400) which
        # bindings exist in groups they cannot see.
        if not groups_where(request.user, RoleBinding, "add").everywhere:
            raise PermissionDenied("Role bindings are managed with an all-clusters admin binding only.")
        return super().create(request, *args, **kwargs)


class RoleViewSet(viewsets.ViewSet):
    """The built-in roles and their permissions."""

    pagination_class = None

    @extend_schema(responses=RoleSerializer(many=True))
    def list(self, request: Request) -> Response:
        return Response(roles.describe())


class MeView(APIView):
    """The signed-in user and the role bindings that apply to them."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(MeSerializer.for_user(request.user))


class APITokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """The signed-in user's own API tokens. The key is returned once, by create."""

    serializer_class = APITokenSerializer
    queryset = APIToken.objects.all()
    ordering = ["-created"]

    def get_queryset(self) -> Any:
        return APIToken.objects.filter(user_id=self.request.user.pk or 0).order_by("-created")

    @extend_schema(request=APITokenSerializer, responses={201: NewAPITokenSerializer})
    def create(self, request: Request) -> Response:
        serializer = APITokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            token, key = APIToken.issue(
                request.user,
                description=serializer.validated_data.get("description", ""),
                days=serializer.validated_data.get("days"),
            )
            record("apitoken.create", token, message=f"token {token.prefix}… issued")
        data = NewAPITokenSerializer(token).data
        data["key"] = key
        return Response(data, status=201)

    def perform_destroy(self, instance: APIToken) -> None:
        with transaction.atomic():
            record("apitoken.delete", instance, message=f"token {instance.prefix}… revoked")
            instance.delete()
