"""Attachments: references to files a message carries (`{"url","mime_type","size","name"}`), validated when the
message is accepted, stored as given in the message's row and its message.created event, never fetched.

One serializer for every path that creates a message (the client API, an agent's reply or note, the channel
webhook), so the rules cannot drift between them:
- at most ATTACHMENTS_MAX_PER_MESSAGE per message;
- `url` http(s), at most ATTACHMENT_URL_MAX_LENGTH characters, on a host whose every address is public (the SSRF
  rule of the webhook URLs, core.outbound_urls): the reference is fetched later by agents' browsers, the
  stream's clients or webhook receivers, inside or beside our network. A name is resolved now, as the message
  is accepted; a name that does not resolve is refused too (nothing to check it against);
- `size` a non-negative integer (bytes), `name` and `mime_type` bounded, no control characters in either.
NUL and lone surrogates never get this far: the JSON parser refuses them in any request (core.parsers).
"""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.validators import MaxLengthValidator, RegexValidator
from rest_framework import serializers

from core.outbound_urls import OutboundUrlRefused, OutboundUrlUnresolved, outbound_url_check
from core.serializers import NameField

# Largest size accepted: a bigint's range, so that anything reading the JSON as a 64-bit integer can.
ATTACHMENT_SIZE_MAX = 2**63 - 1


class AttachmentUrlField(serializers.CharField):
    default_error_messages = {
        "scheme": "Use an http:// or https:// URL with a host name.",
        "unresolved": 'The host "{host}" does not resolve.',
        "not_public": 'The host "{host}" resolves to a loopback, private or otherwise non-public address; '
        "attachments must be on public hosts.",
    }

    def to_internal_value(self, data):
        url = super().to_internal_value(data)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (a port out of range raises here)
        except ValueError:
            self.fail("scheme")
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            self.fail("scheme")
        try:
            outbound_url_check(
                url=url,
                allow_private=settings.ATTACHMENT_URL_ALLOW_PRIVATE,
                allowed_hosts=settings.ATTACHMENT_URL_ALLOWED_HOSTS,
            )
        except OutboundUrlUnresolved:
            self.fail("unresolved", host=parts.hostname)
        except OutboundUrlRefused:
            self.fail("not_public", host=parts.hostname)
        return url


class AttachmentListSerializer(serializers.ListSerializer):
    def get_validators(self):
        # For the schema's maxItems: drf-spectacular reads validators, not the list's max_length (which refuses an
        # over-long list first, in to_internal_value, so this validator never speaks).
        return [MaxLengthValidator(self.max_length)] if self.max_length is not None else []


class AttachmentSerializer(serializers.Serializer):
    class Meta:
        ref_name = "Attachment"
        list_serializer_class = AttachmentListSerializer

    # Unknown keys refused, as StrictSerializer does for a whole body (whose check reads `initial_data`, which
    # an item of a list does not have): a typo such as "mimetype" must not store an attachment without its type.
    refuses_unknown_fields = True  # core.openapi.AutoSchema: `additionalProperties: false`

    # The pattern is for the OpenAPI schema (to_internal_value refuses anything it would, with its own message).
    url = AttachmentUrlField(
        max_length=settings.ATTACHMENT_URL_MAX_LENGTH, validators=[RegexValidator(r"\A[Hh][Tt][Tt][Pp][Ss]?://\S+\Z")]
    )
    mime_type = serializers.RegexField(
        r"\A[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z",
        max_length=settings.ATTACHMENT_MIME_TYPE_MAX_LENGTH,
        error_messages={"invalid": "Use a MIME type such as image/png."},
    )
    size = serializers.IntegerField(min_value=0, max_value=ATTACHMENT_SIZE_MAX)
    name = NameField(min_length=1, max_length=settings.ATTACHMENT_NAME_MAX_LENGTH, trim_whitespace=False)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError({field: ["Unknown field."] for field in sorted(unknown)})
        return super().to_internal_value(data)


def attachments_field() -> AttachmentSerializer:
    """The `attachments` field of a message-creating input: a list of AttachmentSerializer items, bounded."""
    return AttachmentSerializer(
        many=True,
        max_length=settings.ATTACHMENTS_MAX_PER_MESSAGE,
        required=False,
        help_text=f"At most {settings.ATTACHMENTS_MAX_PER_MESSAGE} references to files (never downloaded): "
        "http(s) URLs on public hosts.",
    )


def attachments_data(attachments: list) -> list[dict]:
    """Validated attachments as stored (plain dicts, the keys in the contract's order)."""
    return [{"url": a["url"], "mime_type": a["mime_type"], "size": a["size"], "name": a["name"]} for a in attachments]
