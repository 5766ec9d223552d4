from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication (`Authorization: Token <key>`), answering a request without an Authorization
    header from the WSGI environ.

    DRF reads the header through `request.headers`, which builds a dict of every header of the request the first
    time it is read: on the client endpoints, which carry no token (a chat or message create), that was the only
    reader (its cost: bench/README.md, "Figures behind the code"). Only the `Authorization` header becomes
    `HTTP_AUTHORIZATION` in the environ, so absent there means absent in `request.headers`, and DRF's own answer
    (None: not authenticated by this class) is given without it. Every request that carries the header goes
    through DRF's code, its errors and its token lookup unchanged.
    """

    def authenticate(self, request):
        if "HTTP_AUTHORIZATION" not in request.META:
            return None
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        # A key holding a NUL matches no token, and PostgreSQL refuses it in a lookup (a DataError: a 500): it
        # gets DRF's refusal of an unknown key without the query.
        if "\x00" in key:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        return super().authenticate_credentials(key)
