from __future__ import annotations

import copy
from typing import Any

from django.db import models
from rest_framework import serializers

from fleet.access.restrict import restrict


class RestrictedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A writable reference that only accepts objects the requesting user may see."""

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        if queryset is None:
            raise RuntimeError("a restricted field needs a queryset")
        request = self.context.get("request")
        if request is None:
            return queryset
        return restrict(queryset, request.user, "view")


class StrictCharField(serializers.CharField):
    """A text field that takes only JSON strings: DRF's CharField turns 12 into "12", which the schema (type:
    string) does not promise and hides a client's mistake."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictTextSerializerMixin:
    """Model text columns map to StrictCharField."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
    }


class FleetModelSerializer(StrictTextSerializerMixin, serializers.ModelSerializer):
    """Runs the model's `clean()` so that the API and the admin validate alike, as 400 field errors."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        model: Any = self.Meta.model
        instance = copy.copy(self.instance) if self.instance is not None else model()
        m2m = {f.name for f in model._meta.many_to_many}
        for key, value in attrs.items():
            if key not in m2m:
                setattr(instance, key, value)
        # A DjangoValidationError raised here is turned into field errors by DRF with its codes kept, so that
        # a duplicate (code "unique") answers 409 like DRF's own uniqueness validators.
        instance.clean()
        # clean() may derive fields (a kubeconfig's server URL, its context): keep them.
        for field in getattr(self.Meta, "derived_fields", ()):
            attrs[field] = getattr(instance, field)
        return attrs


class BriefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
