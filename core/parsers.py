import json
import math

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json as drf_json

from core.exceptions import RequestBodyTooLarge
from core.text import unstorable_text_find


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with two limits of its own, so hostile bodies get a 4xx, never a 500:

    - at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes are read (413 past it). DRF usually hands JSON parsers
      `request.body`, which enforces the same limit; reading with a cap here keeps it true whatever
      stream we are given (a body without Content-Length, a future DRF);
    - JSON nested deeper than Python's decoder can recurse (`[[[[...` ) is a 400, where json.load raises
      RecursionError, which is not a ValueError and would escape DRF's parser as a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(raw) > limit:
            raise RequestBodyTooLarge()
        # get_encoding() allows text codecs only
        return json_decode(raw, encoding=parsers.get_encoding(parser_context or {}), strict=self.strict)


def json_decode(raw: bytes, *, encoding: str = "utf-8", strict: bool = True):
    """A JSON body as the API's parser reads it, for the views that must read the raw bytes themselves (a
    signed webhook checks the signature of exactly those bytes): every bad body is a ParseError (400), deep
    nesting included. `strict` refuses NaN and Infinity, as DRF's parser does, and numbers too large for a
    float (`1e400`, which Python reads as infinity), which the renderer and jsonb cannot hold either.

    Text PostgreSQL or the renderer cannot hold is refused here, for every endpoint at once: a NUL character
    (refused by text and jsonb columns) or a lone surrogate (`"\\ud800"`, which no UTF-8 encoder takes), in
    a key or a value at any depth. The error names where, never the text itself, so the 400 always renders.
    """
    try:
        text = raw.decode(encoding)
        data = json.loads(
            text,
            parse_constant=drf_json.strict_constant if strict else None,
            parse_float=_finite_float if strict else float,
        )
    except RecursionError as error:
        raise ParseError("JSON parse error - nested too deeply.") from error
    except ValueError as error:  # includes UnicodeDecodeError
        raise ParseError(f"JSON parse error - {error}") from error
    location = unstorable_text_find(data)
    if location is not None:
        where = f' at "{location[:100]}"' if location else ""
        raise ParseError(f"JSON parse error - a NUL character or a lone surrogate{where}: neither can be stored.")
    return data


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"Out of range float value: {text[:40]}")
    return value
