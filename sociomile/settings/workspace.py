"""The agent workspace (workspace app): attachments' limits and their URL rule."""

from sociomile.settings.env import env_bool, env_int, env_list

# --- Agent workspace: attachments (workspace app) ------------------------------------------------------------
# A message carries at most this many attachment references (PRODUCT.md, "Agent workspace").
ATTACHMENTS_MAX_PER_MESSAGE = env_int("ATTACHMENTS_MAX_PER_MESSAGE", 10)
# An attachment's URL, name and MIME type, in characters (a MIME type is at most 127 + "/" + 127: RFC 6838).
ATTACHMENT_URL_MAX_LENGTH = env_int("ATTACHMENT_URL_MAX_LENGTH", 2048)
ATTACHMENT_NAME_MAX_LENGTH = env_int("ATTACHMENT_NAME_MAX_LENGTH", 255)
ATTACHMENT_MIME_TYPE_MAX_LENGTH = 255
# Attachment URLs are references that agents' browsers, the stream's clients and webhook receivers may fetch:
# like the webhook URLs (core.outbound_urls), a host must resolve to public addresses only, checked when the
# message is accepted. Its own switch, not OUTBOUND_WEBHOOK_ALLOW_PRIVATE, which local runs and tests turn on
# for receivers on loopback: an attachment pointing inside the network is refused there too unless this is on.
ATTACHMENT_URL_ALLOW_PRIVATE = env_bool("ATTACHMENT_URL_ALLOW_PRIVATE", False)
# Host names let through anyway (a tenant's internal file store an operator trusts).
ATTACHMENT_URL_ALLOWED_HOSTS = env_list("ATTACHMENT_URL_ALLOWED_HOSTS", [])
