"""Helpers that build signed inbound deliveries the way a channel provider sends them."""

import json

from conversations import inbound
from conversations.models import Application


def webhook_url(application: Application) -> str:
    return f"/api/channels/{application.token}/webhook"


def webhook_deliver(
    client,
    application: Application,
    payload: dict | bytes,
    *,
    signature: str | None = None,
    signed: bool = True,
    timestamp: str | None = None,
    content_type: str = "application/json",
):
    """POSTs `payload` (a dict, or raw bytes as sent) signed with the application's webhook secret, unless
    `signature` is given (used as the header as is) or `signed` is False (no header at all). With
    `timestamp`, sends X-Sociomile-Timestamp and signs `{timestamp}.{body}`."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {}
    if timestamp is not None:
        headers["HTTP_X_SOCIOMILE_TIMESTAMP"] = timestamp
    if signature is not None:
        headers["HTTP_X_SOCIOMILE_SIGNATURE"] = signature
    elif signed:
        headers["HTTP_X_SOCIOMILE_SIGNATURE"] = inbound.signature_for(
            secret=application.webhook_secret, body=body, timestamp=timestamp
        )
    return client.post(webhook_url(application), data=body, content_type=content_type, **headers)
