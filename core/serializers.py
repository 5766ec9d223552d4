"""The API's input types, as strict as the OpenAPI schema says they are.

DRF's fields coerce: a CharField takes a JSON number (`{"name": 0}` is stored as "0"), a BooleanField takes
0, 1, "yes", "on", "true"..., an IntegerField takes "4", 4.0 and true. The schema promises a string, a
boolean, an integer, and a client that sends something else has a bug it should hear about (schemathesis'
negative_data_rejection holds us to it). `strict_json_types_install` (called once, CoreConfig.ready)
makes those fields refuse another JSON type, for every serializer that reads a JSON body: the rule cannot be
forgotten on a new field, as a strict subclass in each serializer could. Query parameters are strings by
nature (`?agent=5`, a QueryDict): serializers reading them keep DRF's conversions.
"""

import re

from django.http import QueryDict
from rest_framework import serializers

# C0 and C1 control characters and DEL: never part of a name a person reads.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def _reads_json(field: serializers.Field) -> bool:
    return not isinstance(getattr(field.root, "initial_data", None), QueryDict)


def _is_string(data) -> bool:
    return isinstance(data, str)


def _is_boolean(data) -> bool:
    return isinstance(data, bool)


def _is_integer(data) -> bool:
    return isinstance(data, int) and not isinstance(data, bool)


def _is_number(data) -> bool:
    return isinstance(data, (int, float)) and not isinstance(data, bool)


_STRICT_TYPES = (
    (serializers.CharField, _is_string),  # EmailField, URLField, RegexField, SlugField...
    (serializers.BooleanField, _is_boolean),
    (serializers.IntegerField, _is_integer),
    (serializers.FloatField, _is_number),
)


def strict_json_types_install() -> None:
    """Makes DRF's string, boolean, integer and float fields refuse another JSON type in a JSON body (400 with
    the field's own "invalid" message). Idempotent."""
    for field_class, accepts in _STRICT_TYPES:
        original = field_class.to_internal_value
        if getattr(original, "is_strict_json_type", False):
            continue

        def to_internal_value(self, data, _original=original, _accepts=accepts):
            if not _accepts(data) and _reads_json(self):
                self.fail("invalid")
            return _original(self, data)

        to_internal_value.is_strict_json_type = True
        field_class.to_internal_value = to_internal_value


class NameField(serializers.CharField):
    """A name or title people read: no control characters (a line break, a tab, an escape sequence), checked
    on the value as sent, before DRF trims it. core.openapi puts the rule in the schema as a pattern."""

    default_error_messages = {"control_characters": "Control characters (line breaks, tabs...) are not allowed."}

    def to_internal_value(self, data):
        if isinstance(data, str) and _CONTROL.search(data):
            self.fail("control_characters")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only, in a query string too: DRF's IntegerField would also take "4", 4.0 and true
    (`strict_json_types_install` refuses those only in a JSON body)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know (a typo must not be silently ignored)."""

    refuses_unknown_fields = True  # core.openapi.AutoSchema: `additionalProperties: false` in the schema

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({field: ["Unknown field."] for field in sorted(unknown)})
        return attrs
