import math
from dataclasses import dataclass

from django.db import connection
from django.db.models import BooleanField, F, IntegerField, Max, QuerySet, Value
from django.db.models.expressions import RawSQL

from conversations.models import (
    SEARCH_BUCKET_CHAT_STRIDE,
    SEARCH_BUCKET_SIZE,
    SEARCH_BUCKET_SQL,
    Application,
    Chat,
    InboundEvent,
    Message,
    Ticket,
)
from core.routing import RoutingCache
from routing.sla import chats_sla_filter


def inbound_event_list() -> QuerySet[InboundEvent]:
    return InboundEvent.objects.all()


def application_list() -> QuerySet[Application]:
    return Application.objects.annotate(team_id=F("route__team_id"))  # routing: its team, or None


def application_get(*, token: str) -> Application | None:
    return application_list().filter(token=token).first()


_applications_by_token = RoutingCache("application by schema and token")


def application_ref_get(*, token: str) -> Application | None:
    """The application with this token, with only `id` and `token` loaded, for the hot paths that need no
    more (creating chats and messages, reading a chat's messages). Inside a request it comes from the
    process-local routing cache (core.routing), keyed by schema: an application's id and token never change,
    and its deletion invalidates the cache. Read anything else from `application_get`."""
    return _applications_by_token.get_or_load(
        (connection.schema_name, token), lambda: Application.objects.only("id", "token").filter(token=token).first()
    )


def chat_list(*, application: Application, status: str | None = None) -> QuerySet[Chat]:
    chats = Chat.objects.filter(application=application).select_related("sla")  # routing: the item's `sla`
    if status:
        chats = chats.filter(status=status)
    return chats


def chat_get(*, application: Application, number: int) -> Chat | None:
    return Chat.objects.filter(application=application, number=number).select_related("sla").first()


def chat_inbox_list(*, status: str | None = None, agent_id: int | None = None, sla: str | None = None) -> QuerySet[Chat]:
    """The staff inbox: chats of every application of the tenant, optionally by status, assigned agent and SLA
    state (routing.sla.chats_sla_filter)."""
    chats = Chat.objects.select_related("application", "sla")
    if status:
        chats = chats.filter(status=status)
    if agent_id is not None:
        chats = chats.filter(assigned_agent_id=agent_id)
    if sla:
        chats = chats_sla_filter(chats, sla=sla)
    return chats


def chat_open_for_customer_get(*, application: Application, customer_id: str) -> Chat | None:
    """The customer's most recent open (waiting or assigned) chat row in the application, if any."""
    open_statuses = [Chat.Status.WAITING, Chat.Status.ASSIGNED]
    return (
        Chat.objects.filter(application=application, customer_id=customer_id, status__in=open_statuses)
        .order_by("-number")
        .first()
    )


# What a page of messages reads of each: named rows (`.number`, `.body`, ..., `.chat_number`), not Message
# instances. A page serializes up to 200 of them, and the API writes these fields and no others: a model per
# row (its __init__, signals, the chat set on each) made fetching and serializing a page measurably slower
# (bench/README.md, "Figures behind the code"; docs/architecture.md, "Message pages").
MESSAGE_ROW = ("chat_number", "number", "body", "sender", "created_at", "updated_at", "is_private", "attachments")


def _message_rows(messages: QuerySet[Message], *, chat: Chat) -> QuerySet:
    # The chat's number as a constant column: no join, and the row names it as Message.chat_number does.
    return messages.annotate(chat_number=Value(chat.number, output_field=IntegerField())).values_list(
        *MESSAGE_ROW, named=True
    )


def _visible(messages: QuerySet[Message], *, include_private: bool) -> QuerySet[Message]:
    # Private notes are staff-only (PRODUCT.md, "Agent workspace"): the client API reads as if they did not exist.
    return messages if include_private else messages.filter(is_private=False)


def message_list(*, chat: Chat, include_private: bool = False) -> QuerySet:
    """The chat's messages as MESSAGE_ROW rows, for a page (the paginator orders and slices them); private
    notes only with `include_private` (staff)."""
    return _message_rows(_visible(chat.messages.all(), include_private=include_private), chat=chat)


def message_get(*, chat: Chat, number: int, include_private: bool = False) -> Message | None:
    """The chat's message with this number; a private note only with `include_private` (staff)."""
    return _visible(Message.objects.filter(chat=chat, number=number), include_private=include_private).first()


# How much of a chat one search page may read (docs/architecture.md, "Search"). A page stops at `limit` matches
# or after this many buckets of numbers past its cursor, whichever comes first: a rare word then costs a few short
# pages instead of one request reading the whole chat (what 64 buckets cost: bench/README.md).
SEARCH_MAX_BUCKETS_PER_PAGE = 64
# A query with no run of 3 letters or digits has no trigram to look up: those pages walk the (chat, number)
# index and filter each row instead (dearer per row than a trigram lookup), over fewer numbers.
SEARCH_WALK_NUMBERS_PER_PAGE = 8 * SEARCH_BUCKET_SIZE


@dataclass(frozen=True)
class MessageSearchPage:
    messages: list  # MESSAGE_ROW rows
    # The number the next page starts after, or None when the chat holds no more matches. A page may hold fewer
    # than `limit` messages (even none) and still have one: it read its share of the chat and stopped there.
    next_after: int | None


def message_search_page(*, chat: Chat, query: str, after: int, limit: int, include_private: bool = False) -> MessageSearchPage:
    """Up to `limit` messages of this chat numbered after `after` whose body contains `query` ignoring case
    (ILIKE, with `%`, `_` and `\\` taken literally), by number, reading a bounded window of the chat.

    Matches are looked up window by window from the cursor, a window being a run of buckets (SEARCH_BUCKET_SIZE
    consecutive numbers each): the first is about one bucket, the next ones are sized from the matches found so far
    (a word in 1% of messages fills a page of 50 in two queries), each at most four times what was read before,
    until the page is full, the chat ends, or SEARCH_MAX_BUCKETS_PER_PAGE buckets were read. A window is one scan
    of the search index (its buckets' keys and the query's trigrams), so its cost follows the window, not the
    size of the chat or of the tenant. Private notes only with `include_private` (staff)."""
    last = chat.messages.aggregate(last=Max("number"))["last"] or 0
    start = max(after, 0)
    wanted = limit + 1  # one more than the page, to know whether another match follows it
    found: list[Message] = []
    if start >= last:
        return MessageSearchPage(messages=[], next_after=None)
    if not _has_trigram(query):
        read_to = min(start + SEARCH_WALK_NUMBERS_PER_PAGE, last)
        found = list(
            _message_rows(
                _visible(
                    chat.messages.filter(number__gt=start, number__lte=read_to, body__trigram_icontains=query),
                    include_private=include_private,
                ),
                chat=chat,
            ).order_by("number")[:wanted]
        )
    else:
        first_bucket = (start + 1) // SEARCH_BUCKET_SIZE
        final_bucket = min(first_bucket + SEARCH_MAX_BUCKETS_PER_PAGE, last // SEARCH_BUCKET_SIZE + 1)  # excluded
        # The first window is about one bucket of numbers: the cursor's bucket, and the next one too when the
        # cursor is past the middle of its own (a deep cursor rarely falls on a bucket's start).
        window_start, span = first_bucket, 1 if (start + 1) % SEARCH_BUCKET_SIZE < SEARCH_BUCKET_SIZE // 2 else 2
        while True:
            window_end = min(window_start + span, final_bucket)
            found += _search_window(
                chat=chat,
                query=query,
                after=start,
                buckets=range(window_start, window_end),
                count=wanted - len(found),
                include_private=include_private,
            )
            read_to = min(window_end * SEARCH_BUCKET_SIZE - 1, last)
            if len(found) >= wanted or window_end >= final_bucket:
                break
            read_buckets, window_start = window_end - first_bucket, window_end
            # Enough buckets for the matches still wanted at the density seen so far, plus a quarter for luck;
            # never more than four times what was read (a word can be dense here and rare further on).
            if found:
                needed = (wanted - len(found)) * (read_to - start) / len(found) * 1.25 / SEARCH_BUCKET_SIZE
                span = max(1, min(math.ceil(needed), 4 * read_buckets))
            else:
                span = 4 * read_buckets
    if len(found) > limit:
        return MessageSearchPage(messages=found[:limit], next_after=found[limit - 1].number)
    return MessageSearchPage(messages=found, next_after=None if read_to >= last else read_to)


def _has_trigram(query: str) -> bool:
    # pg_trgm takes trigrams from runs of letters and digits only; a run of three yields at least one.
    run = 0
    for character in query:
        run = run + 1 if character.isalnum() else 0
        if run == 3:
            return True
    return False


def _search_window(*, chat: Chat, query: str, after: int, buckets: range, count: int, include_private: bool) -> list:
    # The index keys of these buckets of this chat, as one `&&` (array overlap) condition: GIN serves it in the
    # same scan as the trigrams. Not `bucket = ANY(...)` or IN: GIN runs those as one scan per bucket, and the
    # planner may then prefer the trigrams alone, reading every match in the tenant. Neither `chat_id = ...` nor a
    # plain condition on `number`: the bucket keys name the chat already, and either would let the planner pick
    # the (chat, number) unique index for the window and read all its rows; `number + 0` filters without being
    # an index condition.
    base = chat.id * SEARCH_BUCKET_CHAT_STRIDE
    in_buckets = RawSQL(
        f"{SEARCH_BUCKET_SQL} && %s::bigint[]", ([base + bucket for bucket in buckets],), output_field=BooleanField()
    )
    matches = Message.objects.alias(number_plain=F("number") + 0).filter(
        in_buckets, number_plain__gt=after, body__trigram_icontains=query
    )
    return list(_message_rows(_visible(matches, include_private=include_private), chat=chat).order_by("number")[:count])


def ticket_list(*, status: str | None = None, priority: str | None = None) -> QuerySet[Ticket]:
    tickets = Ticket.objects.select_related("chat__application")
    if status:
        tickets = tickets.filter(status=status)
    if priority:
        tickets = tickets.filter(priority=priority)
    return tickets


def ticket_get(*, ticket_id: int) -> Ticket | None:
    return Ticket.objects.select_related("chat__application").filter(id=ticket_id).first()
