from base64 import b64encode
from datetime import datetime
from urllib.parse import urlencode

from django.core.exceptions import FieldDoesNotExist, ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from core.text import is_storable_text


class CursorPagination(pagination.CursorPagination):
    """`?cursor=<opaque>&limit=<n>` (default 50, max 200) -> `{"data": [...], "next_cursor": "<opaque>" | null}`.

    Keyset pagination: a page deep into a large table costs the same as the first one.
    """

    page_size = 50
    max_page_size = 200
    page_size_query_param = "limit"
    cursor_query_param = "cursor"
    ordering = ("created_at",)

    def encode_cursor(self, cursor):
        # The contract hands out the opaque cursor only, where DRF's returns a whole URL. Built here, as DRF
        # builds it, rather than cut out of that URL: a cursor of no tokens is "", which a URL parse drops.
        tokens = {}
        if cursor.offset != 0:
            tokens["o"] = str(cursor.offset)
        if cursor.reverse:
            tokens["r"] = "1"
        if cursor.position is not None:
            tokens["p"] = cursor.position
        return b64encode(urlencode(tokens).encode("ascii")).decode("ascii")

    def get_page_size(self, request):
        # DRF falls back to the default for a bad `limit` and clamps a big one: the caller would get a page
        # of another size than asked, silently. Bad input is a 400 here, like any other.
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"Must be an integer from 1 to {self.max_page_size}."]})
        return int(raw)

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model  # for decode_cursor, which DRF calls without the queryset
        return super().paginate_queryset(queryset, request, view=view)

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except NotFound as error:  # a malformed cursor is bad input, not a missing resource
            raise ValidationError({"cursor": ["Invalid cursor."]}) from error
        if cursor is None:
            return None
        # Every cursor this API hands out goes forward (there is no previous page in the contract). A forged
        # reverse one made DRF build a "next" cursor of no position, and its DRF-made URL lost it: a 500.
        # A position PostgreSQL cannot compare (a NUL) is forged too.
        if cursor.reverse or (cursor.position is not None and not is_storable_text(cursor.position)):
            raise ValidationError({"cursor": ["Invalid cursor."]})
        model = getattr(self, "_model", None)
        if cursor.position is not None and model is not None:
            # DRF filters on the position as it comes: a forged one that is not a value of the ordering's field
            # (p=x on an integer) would fail in the ORM, a 500.
            try:
                value = model._meta.get_field(self.ordering[0].lstrip("-")).to_python(cursor.position)
            except FieldDoesNotExist:
                pass  # ordered by an annotation: nothing to check it against
            except DjangoValidationError as error:
                raise ValidationError({"cursor": ["Invalid cursor."]}) from error
            else:
                # Positions handed out are aware (str() of an aware datetime); a naive one is forged, and the
                # ORM would read it in the server's time zone, with a warning.
                if isinstance(value, datetime) and timezone.is_naive(value):
                    raise ValidationError({"cursor": ["Invalid cursor."]})
        return cursor

    # For lists read by a selector of their own (message search), by an integer position, in the cursors this
    # paginator hands out for an ordering on that field: `p=<n>` means "after n".
    def position_after(self, request) -> int | None:
        """The position `?cursor=` points after (None without one); a cursor that is not a forward one on an
        integer position is a 400, like a malformed one."""
        cursor = self.decode_cursor(request)
        if cursor is None:
            return None
        position = cursor.position or "0"
        if cursor.reverse or not (position.isascii() and position.isdigit()):
            raise ValidationError({"cursor": ["Invalid cursor."]})
        return int(position)

    def position_response(self, *, data, next_after: int | None) -> Response:
        next_cursor = None
        if next_after is not None:
            self.base_url = "/"  # encode_cursor builds a URL, of which only the cursor is kept
            next_cursor = self.encode_cursor(pagination.Cursor(offset=0, reverse=False, position=str(next_after)))
        return Response({"data": data, "next_cursor": next_cursor})

    def get_paginated_response(self, data):
        return Response({"data": data, "next_cursor": self.get_next_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["data", "next_cursor"],
            "properties": {
                "data": schema,
                "next_cursor": {"type": "string", "nullable": True, "description": "Pass as ?cursor= for the next page."},
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {"name": self.cursor_query_param, "required": False, "in": "query", "description": "Opaque cursor from a previous page.", "schema": {"type": "string"}},
            {"name": self.page_size_query_param, "required": False, "in": "query", "description": f"Page size, 1-{self.max_page_size} (default {self.page_size}).", "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size}},
        ]


def paginate(*, request, view, queryset, serializer_class, ordering=None):
    """Runs the cursor paginator over a queryset and serializes the page: the list step of a list API."""
    paginator = CursorPagination()
    if ordering is not None:
        paginator.ordering = ordering
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
