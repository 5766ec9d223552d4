"""The inbound channel webhook's state in Redis: signatures, rate limits, idempotency, open chats.

Keys, all under the tenant's schema name (core.redis.tenant_key):
- `app:<id>:webhook:rate`                  deliveries counted in the current rate-limit window (expires with it)
- `app:<id>:webhook:delivery:<external_id>` `claim:<hex>` while a delivery is being handled, then its answer
                                           (`{"chat_number","message_number"}`) for WEBHOOK_IDEMPOTENCY_TTL_SECONDS
- `app:<id>:customer:<customer_id>:open`   the number of the chat a webhook opened for this customer

The open-chat record is a hint, not the truth: the chat's row decides once it exists (a resolved chat's
record is dropped), and PostgreSQL is asked when Redis has no record (expired, lost, or a chat made another way).
"""

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass

from django.db import connection

from core.redis import get_redis, redis_delete_if_equal, tenant_key, window_count

SIGNATURE_HEADER = "X-Sociomile-Signature"
SIGNATURE_PREFIX = "sha256="
# Optional: Unix seconds, covered by the signature (`{timestamp}.{body}`). A signed delivery without an
# external_id could otherwise be replayed for ever; with it, only within this many seconds either side of now.
TIMESTAMP_HEADER = "X-Sociomile-Timestamp"
TIMESTAMP_TOLERANCE_SECONDS = 300

# A claim outlives any sane request; if its holder died, a retry of the delivery may proceed after this.
DELIVERY_CLAIM_SECONDS = 30
# How long the open-chat record lives; once it expires, PostgreSQL is asked and the record is made again.
OPEN_CHAT_TTL_SECONDS = 7 * 24 * 3600

_CLAIM_PREFIX = "claim:"

def _key(*parts: object) -> str:
    return tenant_key(connection.schema_name, *parts)


def signature_for(*, secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The header value a sender computes: `sha256=` and the hex HMAC-SHA256 of the raw body, or of
    `{timestamp}.{body}` when it sends X-Sociomile-Timestamp."""
    signed = body if timestamp is None else timestamp.encode("ascii") + b"." + body
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_refusal(*, secret: str, body: bytes, header: str | None, timestamp: str | None, now: float) -> str | None:
    """Why a delivery's signature is refused (a 401's detail), or None when it holds. Constant-time compare.

    With a timestamp header, the signature must cover `{timestamp}.{body}` and the timestamp be within
    TIMESTAMP_TOLERANCE_SECONDS of now; without one, the body alone (as before the header existed).
    """
    if not header:
        return f"Missing or invalid {SIGNATURE_HEADER} header."
    if timestamp is not None and not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return f"Invalid {TIMESTAMP_HEADER} header: Unix seconds expected."
    expected = signature_for(secret=secret, body=body, timestamp=timestamp)
    if not hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace")):
        return f"Missing or invalid {SIGNATURE_HEADER} header."
    # Checked once the signature holds: only the sender can have chosen this timestamp.
    if timestamp is not None and abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS:
        return f"{TIMESTAMP_HEADER} is more than {TIMESTAMP_TOLERANCE_SECONDS} seconds from the server's clock: a replay, or a clock to fix."
    return None


# --- rate limit ---------------------------------------------------------------------------------------------


def rate_limit_hit(*, application_id: int, limit: int, window_seconds: int) -> int | None:
    """Counts one delivery in the application's fixed window; None if within `limit`, else the seconds until
    the window ends (the Retry-After). The window starts with its first delivery and the count lives in
    Redis, so it holds across web processes."""
    count, seconds_left = window_count(_key("app", application_id, "webhook", "rate"), window_seconds=window_seconds)
    return None if count <= limit else seconds_left


# --- idempotency --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The outcome of claiming an external_id: ours to handle (`claim`), already answered (`answer`),
    or being handled by another request right now (neither)."""

    key: str
    claim: str | None = None
    answer: dict | None = None


def delivery_key(*, application_id: int, external_id: str) -> str:
    return _key("app", application_id, "webhook", "delivery", external_id)


def delivery_claim(*, application_id: int, external_id: str) -> Delivery:
    """Claims a delivery with SET NX before anything is allocated: of two identical deliveries at once,
    exactly one gets the claim."""
    key = delivery_key(application_id=application_id, external_id=external_id)
    redis = get_redis()
    claim = _CLAIM_PREFIX + uuid.uuid4().hex
    while True:
        if redis.set(key, claim, nx=True, ex=DELIVERY_CLAIM_SECONDS):
            return Delivery(key=key, claim=claim)
        value = redis.get(key)
        if value is None:
            continue  # the other claim expired or was abandoned between our two calls: try again
        value = value.decode()
        if value.startswith(_CLAIM_PREFIX):
            return Delivery(key=key)
        return Delivery(key=key, answer=json.loads(value))


def delivery_answer(*, key: str) -> dict | None:
    """The stored answer of a delivery, None while it is still claimed or if it is unknown."""
    value = get_redis().get(key)
    if value is None or value.decode().startswith(_CLAIM_PREFIX):
        return None
    return json.loads(value)


def delivery_abandon(*, delivery: Delivery) -> None:
    """Releases a claim whose handling failed before its message was queued, so a retry can start at once.
    A claim already replaced by an answer is left alone."""
    redis_delete_if_equal(delivery.key, delivery.claim)


# --- the customer's open chat -------------------------------------------------------------------------------


def open_chat_key(*, application_id: int, customer_id: str) -> str:
    return _key("app", application_id, "customer", customer_id, "open")


def open_chat_get(*, application_id: int, customer_id: str) -> int | None:
    value = get_redis().get(open_chat_key(application_id=application_id, customer_id=customer_id))
    return int(value) if value is not None else None


def open_chat_remember(*, application_id: int, customer_id: str, chat_number: int) -> bool:
    """Records an open chat found in PostgreSQL, unless another request recorded one first (SET NX)."""
    key = open_chat_key(application_id=application_id, customer_id=customer_id)
    return bool(get_redis().set(key, chat_number, nx=True, ex=OPEN_CHAT_TTL_SECONDS))


def open_chat_forget(*, application_id: int, customer_id: str, chat_number: int) -> None:
    """Drops the record if it still names `chat_number` (resolved): never a newer chat another request opened."""
    key = open_chat_key(application_id=application_id, customer_id=customer_id)
    redis_delete_if_equal(key, str(chat_number))
