"""Outbound messages: queued for the tenant's next runs, and put back in line by an operator."""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.exceptions import Conflict
from scheduler.models import OutboundMessage, validate_e164
from scheduler.services.schedule import _outbound_work_mark_new_message


def outbound_message_create(*, to: str, content: str) -> OutboundMessage:
    """Queues a message for the tenant's next runs. Raises ValidationError (nothing written) on bad input."""
    errors = {}
    try:
        validate_e164(to)
    except ValidationError as error:
        errors["to"] = error.messages
    max_length = settings.OUTBOUND_CONTENT_MAX_LENGTH
    if not content.strip():
        errors["content"] = ["This field may not be blank."]
    elif len(content) > max_length:
        errors["content"] = [f"Ensure this field has no more than {max_length} characters."]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        message = OutboundMessage.objects.create(to=to, content=content)
        _outbound_work_mark_new_message()
    return message


def outbound_message_retry(*, message_id: uuid.UUID) -> OutboundMessage:
    """Puts a failed message back in line with a fresh set of attempts. 409 unless it is `failed`."""
    with transaction.atomic():
        updated = OutboundMessage.objects.filter(id=message_id, status=OutboundMessage.Status.FAILED).update(
            status=OutboundMessage.Status.PENDING, attempts=0, next_attempt_at=timezone.now(), updated_at=timezone.now()
        )
        message = OutboundMessage.objects.get(id=message_id)  # DoesNotExist for an unknown id
        if not updated:
            raise Conflict(f'Only failed messages can be retried; this one is "{message.status}".')
        _outbound_work_mark_new_message()
    return message
