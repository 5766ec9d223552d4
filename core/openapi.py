from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


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
