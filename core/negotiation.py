from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.settings import api_settings


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's content negotiation, with its most common case answered without parsing the Accept header.

    A request with no Accept header (or `*/*`) and no format override gets the view's first renderer, with
    that renderer's media type: exactly what DRF's loop returns for it, since `*/*` matches every renderer
    and the first match wins. Every other request goes through DRF's code (406s included). The parse showed
    up in the message-create path's profile (bench/README.md, "Figures behind the code").
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        if (
            renderers
            and not format_suffix
            and request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
            and api_settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)
