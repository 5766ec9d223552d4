from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from core.serializers import CONTROL_CHARACTERS, NameField


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    """The body of every error but a 400's field errors."""

    detail = serializers.CharField()


class AutoSchema(SpectacularAutoSchema):
    """Names the components of serializers nested in a view after that view.

    Every API view nests its own `InputSerializer` / `OutputSerializer` (STYLE.md); drf-spectacular would
    name them all `Input` / `Output` and silently merge different shapes into one component.
    `TenantListCreateApi.InputSerializer` becomes `TenantListCreateInput` instead.
    """

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False):
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        serializer_class = serializer if isinstance(serializer, type) else type(serializer)
        owner, _, nested = serializer_class.__qualname__.rpartition(".")
        has_own_name = getattr(getattr(serializer_class, "Meta", None), "ref_name", None) is not None
        if owner and not has_own_name and nested.removesuffix("Serializer") in name:
            return owner.split(".")[-1].removesuffix("Api") + name
        return name

    def _get_request_for_media_type(self, serializer, direction="request"):
        # drf-spectacular documents every PATCH body as partial (no field required). A view that validates its
        # PATCH body in full (the body is its only field) marks its serializer `required_on_patch`.
        if self.method == "PATCH" and getattr(serializer, "required_on_patch", False):
            self.method = "PUT"
            try:
                return super()._get_request_for_media_type(serializer, direction)
            finally:
                self.method = "PATCH"
        return super()._get_request_for_media_type(serializer, direction)

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction != "request":
            return schema
        if getattr(serializer, "refuses_unknown_fields", False):
            schema["additionalProperties"] = False  # a client must know that unknown fields are a 400
        for field in serializer.fields.values():
            property_schema = schema.get("properties", {}).get(field.field_name, {})
            if isinstance(field, NameField) and property_schema.get("type") == "string":
                # No control characters; and, trimmed and not blank, at least one other than a space.
                allowed = f"[^{CONTROL_CHARACTERS}]"
                visible = f"[^\\s{CONTROL_CHARACTERS}]"
                if field.trim_whitespace and not field.allow_blank:
                    property_schema["pattern"] = f"^{allowed}*{visible}{allowed}*$"
                else:
                    property_schema["pattern"] = f"^{allowed}*$"
            if (
                isinstance(field, serializers.CharField)
                and field.trim_whitespace
                and not field.allow_blank
                and property_schema.get("type") == "string"
                and "pattern" not in property_schema
            ):
                # DRF trims the value first, so "   " is "This field may not be blank.": say so.
                property_schema["pattern"] = r"\S"
        return schema

    # --- error responses -----------------------------------------------------------------------------------
    # The generator documents only the success answer of each operation; the API also answers 4xx errors,
    # and a client (or schemathesis' status_code_conformance check) must find them in the schema. The
    # statuses that follow from the view itself are added here, in one place; statuses that depend on the
    # business (409, 413, 429) are declared on the view with `extend_schema(responses={409: ERROR_RESPONSE})`.

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description, body in self._error_statuses():
            if code not in responses:
                responses[code] = self._get_response_for_code(body, code, direction=direction)
                responses[code]["description"] = description
        return responses

    def _error_statuses(self) -> list[tuple[str, str, object]]:
        statuses = []
        has_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        has_query = any(parameter.get("in") == "query" for parameter in self._get_parameters())
        if has_body or has_query:
            # DRF's field errors ({"field": ["message"]}, nested for nested input) or {"detail": "..."}.
            statuses.append(("400", "Invalid input: field errors, or `detail`.", OpenApiTypes.OBJECT))
        if self.view.get_authenticators():
            statuses.append(("401", "Missing or invalid credentials.", ErrorSerializer))
        if any(not isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            statuses.append(("403", "These credentials do not allow this.", ErrorSerializer))
        if "{" in self.path:
            statuses.append(("404", "Nothing has this identifier.", ErrorSerializer))
        if has_body:
            statuses.append(("415", "The body is not JSON.", ErrorSerializer))
        return statuses


ERROR_RESPONSE = OpenApiResponse(response=ErrorSerializer, description="See `detail`.")
