"""Text that PostgreSQL and the JSON renderer can hold.

PostgreSQL refuses a NUL character in text and jsonb, and a lone UTF-16 surrogate (which Python's json
module decodes from `"\\ud800"`) cannot be encoded to UTF-8 at all: either one turns an INSERT or UPDATE
into a DataError or UnicodeEncodeError, and a response that echoes it into a 500. Two uses:

- input from our clients is refused (`unstorable_text_find`, used by the API's parser): a 400 that says
  where, without echoing the text;
- data from elsewhere that we must record anyway (a provider's answer, an exception's message) is cleaned
  (`storable_text`): the unstorable characters become U+FFFD, and the text is bounded.
"""

import re

from django.core.validators import RegexValidator

REPLACEMENT = "\ufffd"
# NUL, and a surrogate code point (only ever lone in a Python str: a valid pair decodes to one character).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable_text(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def storable_text(text: str, *, max_length: int | None = None) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD, cut to `max_length` characters."""
    cleaned = _UNSTORABLE.sub(REPLACEMENT, text)
    return cleaned if max_length is None else cleaned[:max_length]


def unstorable_text_find(value, *, path: str = "") -> str | None:
    """The location (`a.b[2]`, or "" for the top) of the first key or string, at any depth of decoded JSON,
    that holds a NUL or a lone surrogate; None when there is none."""
    stack = [(path, value)]
    while stack:  # iterative: the parser has already bounded the depth, but a stack costs nothing
        location, item = stack.pop()
        if isinstance(item, str):
            if not is_storable_text(item):
                return location
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not is_storable_text(key):
                    return location or "(a key)"
                stack.append((f"{location}.{key}" if location else str(key), child))
        elif isinstance(item, list):
            stack.extend((f"{location}[{index}]", child) for index, child in enumerate(item))
    return None


# Values we later send in an HTTP header or request line (an auth key, a webhook URL): printable ASCII
# without spaces. A CR or LF would split the request (http.client refuses it, so every send would fail for
# good), and non-ASCII has no one encoding in a header. Refused when the value is set, a 400, rather than
# accepted and failing every send later.
visible_ascii_validator = RegexValidator(
    r"\A[\x21-\x7e]*\Z",
    message="Use visible ASCII characters only (no spaces, line breaks or non-ASCII): it is sent in HTTP requests "
    "as it is. Encode an international domain name or path first (punycode, percent-encoding).",
    code="not_visible_ascii",
)
