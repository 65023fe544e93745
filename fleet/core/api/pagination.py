from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from fleet.core.filters import INT64_MAX


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """DRF's limit/offset pagination, except that a limit or offset that is not a whole number in range is
    refused with a 400 naming it, instead of being silently replaced by the default (a client that asked for
    `offset=abc` should learn that, not receive the first page)."""

    default_limit = 50
    max_limit = 1000

    def get_limit(self, request: Request) -> int | None:
        if self.limit_query_param in request.query_params:
            self._whole_number(request, self.limit_query_param, minimum=0)
        return super().get_limit(request)

    def get_offset(self, request: Request) -> int:
        if self.offset_query_param in request.query_params:
            self._whole_number(request, self.offset_query_param, minimum=0)
        return super().get_offset(request)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 0
            if parameter["name"] == self.offset_query_param:
                parameter["schema"]["maximum"] = INT64_MAX
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["maximum"] = INT64_MAX
        return parameters

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """DRF's page schema, in OpenAPI 3.1's terms: `next`/`previous` are a URI or null."""
        page = super().get_paginated_response_schema(schema)
        for link in ("next", "previous"):
            prop = page["properties"][link]
            prop.pop("nullable", None)
            prop["type"] = ["string", "null"]
        return page

    @staticmethod
    def _whole_number(request: Request, name: str, minimum: int) -> int:
        values = request.query_params.getlist(name)
        if len(values) != 1:
            raise ValidationError({name: ["Give this parameter once."]})
        try:
            number = int(values[0])
        except ValueError:
            raise ValidationError({name: ["A whole number is required."]}) from None
        if number < minimum:
            raise ValidationError({name: [f"Ensure this value is greater than or equal to {minimum}."]})
        if number > INT64_MAX:
            raise ValidationError({name: [f"Ensure this value is less than or equal to {INT64_MAX}."]})
        return number
