from django.db.models import QuerySet

from conversations.models import InboundEvent


def inbound_event_list() -> QuerySet[InboundEvent]:
    return InboundEvent.objects.all()
