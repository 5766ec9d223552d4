"""Django REST framework and the OpenAPI schema (drf-spectacular)."""

from sociomile.settings.env import env_int

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "core.negotiation.ContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "core.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Reverse proxies of ours in front of the web server, each appending the address it saw to
    # X-Forwarded-For: the client's address is that many entries from the header's end. 0: REMOTE_ADDR, and
    # the header (which a client may write itself) is ignored. Used by the sign-in limit.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sociomile API",
    "DESCRIPTION": "Multi-tenant omnichannel customer-service messaging backend.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a `status` (or `role`) with choices of their own: name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "ChatStatusEnum": "conversations.models.Chat.Status",
        "MessageSenderEnum": "conversations.models.Message.Sender",
        "UserRoleEnum": "core.models.User.Role",
        "OutboundMessageStatusEnum": "scheduler.models.OutboundMessage.Status",
        "TicketStatusEnum": "conversations.models.Ticket.Status",
        # The agents API's `role` (admin | agent) next to the user's (which also has platform_admin), named apart.
        "StaffRoleEnum": ["admin", "agent"],
    },
}
