"""The OpenAPI schema documents every status code an operation can answer, not only its success.

drf-spectacular documents the success response of each operation. Fleetgate's API also answers, by
design: 400 with field messages for bad input, 401 without credentials, 403 outside the caller's role or
scope, 404 for objects the caller cannot see, 409 for a state conflict, 413 for an oversized body, 415 for a
body that is not JSON, 429 when throttled. A client generated from the schema (and schemathesis, which CI
runs over it) must find each of them documented with its body shape. The rules are derived from the
operation itself (its parameters, its body, its view's throttles), so a new endpoint is documented without a
decorator.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """Every error but a validation error: a sentence saying what went wrong."""

    detail = serializers.CharField()


class ValidationErrorSerializer(serializers.Serializer):
    """A validation error: the messages of each field that was refused (`non_field_errors` for the whole
    request), or a single `detail` sentence."""

    detail = serializers.CharField(required=False)
    non_field_errors = serializers.ListField(child=serializers.CharField(), required=False)

    class Meta:
        ref_name = "ValidationError"


DESCRIPTIONS = {
    "400": "The request was refused: the messages say which fields and why.",
    "401": "No valid credentials (an API token `Bearer fgt_…`, or a signed-in session).",
    "403": "The caller's role or scope does not allow this action.",
    "404": "No such object, or not one the caller may see.",
    "405": "The method is not allowed on this resource.",
    "409": (
        "A conflict with what exists: a name or binding taken already (with the field messages), or a state "
        "that does not allow this now."
    ),
    "413": "The request body is larger than the configured limit.",
    "415": "The request body's media type is not accepted (send JSON).",
    "429": "Too many requests; retry after the number of seconds in Retry-After.",
}


# A JSON value that may be anything but null (OpenAPI's `{}` admits null, which DRF's JSONField refuses).
ANY_BUT_NULL: dict[str, Any] = {"type": ["object", "array", "string", "number", "boolean"]}


def json_schema_of(field: serializers.Field) -> dict[str, Any] | None:
    """What a JSON field holds: the `json_schema` its model field's validator declares, else the type of the
    model field's default (an object or a list), else any non-null value."""
    if not isinstance(field, serializers.JSONField):
        return None
    model_field = None
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    if model is not None and field.source and "." not in field.source:
        try:
            model_field = model._meta.get_field(field.source)
        except Exception:  # not a model field: a serializer-only JSON field
            model_field = None
    if model_field is not None:
        for validator in getattr(model_field, "validators", ()):
            declared = getattr(validator, "json_schema", None)
            if declared is not None:
                return dict(declared)
        default = getattr(model_field, "default", None)
        if default is dict:
            return {"type": "object"}
        if default is list:
            return {"type": "array"}
    if field.allow_null:
        return None
    return dict(ANY_BUT_NULL)


class FleetAutoSchema(AutoSchema):
    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.JSONField) and field.allow_null and isinstance(schema, dict):
            # drf-spectacular writes a nullable free-form value as oneOf [{}, null], which null matches twice
            # (invalid under oneOf); any JSON value, null included, is simply {}.
            if schema.get("oneOf") and {} in schema["oneOf"]:
                schema = {k: v for k, v in schema.items() if k != "oneOf"}
            return schema
        if not isinstance(field, serializers.JSONField) and isinstance(schema, dict):
            # A validator that knows its own shape (a pattern, say) publishes it, so that the schema allows
            # exactly what the validator accepts.
            for validator in getattr(field, "validators", ()):
                declared_here = getattr(validator, "json_schema", None)
                if declared_here is not None:
                    schema = {**schema, **declared_here}
            return schema
        declared = json_schema_of(field)
        untyped = isinstance(schema, dict) and "type" not in schema and "$ref" not in schema
        if declared is not None and untyped:
            schema = {**schema, **declared}
        return schema

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> Any:
        """A request body's rules across fields (``Meta.request_schema``: ``anyOf`` of the required
        combinations, say) join its component, so that the schema refuses what the serializer's
        ``validate`` refuses."""
        schema = super()._map_basic_serializer(serializer, direction)
        extra = getattr(getattr(serializer, "Meta", None), "request_schema", None)
        if extra and direction == "request":
            schema = dict(schema)
            for key, value in extra.items():
                if key == "properties":  # constraints added to the fields' own schemas
                    properties = dict(schema.get("properties", {}))
                    for name, constraints in value.items():
                        properties[name] = {**properties.get(name, {}), **constraints}
                    schema["properties"] = properties
                else:
                    schema[key] = value
        return schema

    def get_operation(self, *args: Any, **kwargs: Any) -> Any:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        # a viewset's action, or an APIView's method handler
        handler = getattr(self.view, getattr(self.view, "action", None) or self.method.lower(), None)
        if "requestBody" in operation and getattr(handler, "body_required", False):
            operation["requestBody"]["required"] = True  # an action that cannot do anything without a body
        responses = operation.setdefault("responses", {})
        for code in self.error_codes(operation):
            serializer = ValidationErrorSerializer if code in ("400", "409") else ErrorSerializer
            content = {"application/json": {"schema": self.resolve_serializer(serializer, "response").ref}}
            if code not in responses:
                responses[code] = {"content": content, "description": DESCRIPTIONS.get(code, "")}
            elif code.startswith("4") and "content" not in responses[code]:
                # An operation that describes an error in words only still answers with a JSON body.
                responses[code]["content"] = content
        return operation

    def error_codes(self, operation: dict[str, Any]) -> list[str]:
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        codes = ["403"]
        if not self._is_public():
            codes.append("401")
        if any(p.get("in") == "path" for p in parameters) or self.method != "GET":
            codes.append("404")
        if has_body or any(p.get("in") == "query" for p in parameters) or self.method != "GET":
            codes.append("400")
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            codes.append("409")
        if has_body or self.method in ("POST", "PUT", "PATCH"):
            codes += ["413", "415"]
        if getattr(self.view, "throttle_classes", None):
            codes.append("429")
        return sorted(set(codes))

    def _is_public(self) -> bool:
        """An endpoint anyone may call (a webhook proves itself with a signature, not credentials)."""
        permissions = getattr(self.view, "permission_classes", [])
        return any(getattr(p, "__name__", "") == "AllowAny" for p in permissions)
