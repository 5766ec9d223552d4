"""A scripted timeline of chats, messages, assignments and resolutions, played under the frozen clock through
the real services, and the recount of the reports' figures straight from the rows it leaves."""

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from django_tenants.utils import schema_context

from agents import services as agent_services
from agents.models import Agent, Assignment
from conversations import services as conversation_services
from conversations.models import Application, Chat, Message

PASSWORD = "test-password-1234"


@dataclass
class Played:
    applications: list[Application]
    agents: list[Agent]


def play(*, tenant, clock, seed: int, chats: int, start: datetime, span: timedelta, email_prefix: str) -> Played:
    """Creates `chats` chats at seeded times in [start, start + span), each with a seeded life: customer
    messages, a first assignment (from the queue or by hand), sometimes a transfer, agent replies, and a
    resolve (sometimes while still waiting); some agent messages are private notes. Durations come from a
    small set, so that ties are common."""
    rng = random.Random(seed)
    durations = [0, 1, 59, 60, 60, 61, 300, 300, 900, 3599, 3600, 7200, 86400 + 17]
    with schema_context(tenant.schema_name):
        applications = [
            conversation_services.application_create(name=f"{email_prefix} app {i}") for i in range(2)
        ]
        agents = [
            agent_services.agent_create(
                email=f"{email_prefix}-agent{i}@example.test", password=PASSWORD, is_online=True, max_customers=1000
            )
            for i in range(3)
        ]
        events = []  # (at, order, action, chat index, argument)
        for index in range(chats):
            created = start + timedelta(seconds=rng.randrange(int(span.total_seconds())), microseconds=rng.randrange(10**6))
            application = rng.choice(applications)
            events.append((created, 0, "create", index, application))
            at = created
            if rng.random() < 0.7:
                events.append((at + timedelta(seconds=rng.choice(durations) // 2), 1, "customer", index, None))
            if rng.random() < 0.15:  # resolved while waiting: no agent at all
                events.append((at + timedelta(seconds=rng.choice(durations)), 5, "resolve", index, None))
                continue
            if rng.random() < 0.9:
                at = at + timedelta(seconds=rng.choice(durations), microseconds=rng.randrange(10**6))
                events.append((at, 2, rng.choice(["queue", "manual"]), index, rng.choice(agents)))
                if rng.random() < 0.25:  # a transfer: not a first assignment
                    at = at + timedelta(seconds=rng.choice(durations))
                    events.append((at, 3, "manual", index, rng.choice(agents)))
                if rng.random() < 0.8:
                    for _ in range(rng.choice([1, 1, 2, 3])):
                        at = at + timedelta(seconds=rng.choice(durations), microseconds=rng.randrange(10**6))
                        # A private note (issue 25) now and then, first in some chats: no answer to the
                        # customer, so neither a message of the reports nor a first response.
                        events.append((at, 4, "agent_message", index, rng.random() < 0.3))
                if rng.random() < 0.75:
                    events.append((at + timedelta(seconds=rng.choice(durations)), 5, "resolve", index, None))
        events.sort(key=lambda event: (event[0], event[1], event[3]))
        numbers: dict[int, tuple[Application, int]] = {}
        for at, _, action, index, argument in events:
            clock.at = at
            if action == "create":
                numbers[index] = (argument, conversation_services.chat_create(application=argument, customer_id=f"c{index}"))
                conversation_services.creations_persist(batch_size=100)
                continue
            application, number = numbers[index]
            chat = Chat.objects.get(application=application, number=number)
            if chat.status == Chat.Status.RESOLVED:
                continue
            if action == "customer":
                conversation_services.message_create(application=application, chat_number=number, body="hello")
            elif action == "agent_message":
                if chat.assigned_agent_id is None:
                    continue
                author = chat.assigned_agent
                conversation_services.message_create(
                    application=application, chat_number=number, body="hi", sender=Message.Sender.AGENT, author=author,
                    is_private=argument,
                )
            elif action == "queue":
                # The engine serves the oldest waiting chats first: this one, or older ones left waiting.
                agent_services.assignment_run()
            elif action == "manual":
                agent_services.chat_assign(chat=chat, agent=argument)
            elif action == "resolve":
                agent_services.chat_resolve(chat=chat)
            conversation_services.creations_persist(batch_size=100)
    return Played(applications=applications, agents=agents)


def nearest_rank(values: list[int], fraction: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(fraction * len(ordered)) - 1]


def _seconds(start: datetime, end: datetime) -> int:
    return max(0, (end - start) // timedelta(seconds=1))


def recount(*, tenant, since: date, until: date, tz: str, group_by: str) -> dict:
    """The summary computed from the rows alone (chats, messages, the assignment history), by local dates in
    `tz` from Python's zoneinfo: no rollup, no bucket, no SQL of the reports app."""
    zone = ZoneInfo(tz)

    def day_of(at: datetime) -> date | None:
        local = at.astimezone(zone).date()
        return local if since <= local <= until else None

    with schema_context(tenant.schema_name):
        chats = list(Chat.objects.values("id", "application_id", "created_at", "resolved_at", "assigned_agent_id"))
        # Private notes are no answer to the customer: not counted, never a first response.
        messages = list(
            Message.objects.filter(is_private=False).values("chat_id", "number", "sender", "author_id", "created_at")
        )
        stints = list(Assignment.objects.order_by("id").values("chat_id", "agent_id", "assigned_at"))
        tokens = dict(Application.objects.values_list("id", "token"))
    by_id = {chat["id"]: chat for chat in chats}
    first_agent_message = {}
    for message in sorted(messages, key=lambda m: (m["chat_id"], m["number"])):
        if message["sender"] == "agent":
            first_agent_message.setdefault(message["chat_id"], message)
    first_stint = {}
    for stint in stints:
        first_stint.setdefault(stint["chat_id"], stint)

    def key(day: date, application_id: int, agent_id: int | None):
        return {"day": day.isoformat(), "agent": agent_id, "application": tokens[application_id]}[group_by]

    counts = defaultdict(lambda: defaultdict(int))
    durations = defaultdict(lambda: defaultdict(list))
    for chat in chats:
        created_day = day_of(chat["created_at"])
        if created_day is not None:
            counts[key(created_day, chat["application_id"], None)]["chats_created"] += 1
            message = first_agent_message.get(chat["id"])
            if message is not None:
                group = key(created_day, chat["application_id"], message["author_id"])
                durations[group]["first_response_seconds"].append(_seconds(chat["created_at"], message["created_at"]))
            stint = first_stint.get(chat["id"])
            if stint is not None:
                group = key(created_day, chat["application_id"], stint["agent_id"])
                durations[group]["wait_seconds"].append(_seconds(chat["created_at"], stint["assigned_at"]))
            if chat["resolved_at"] is not None:
                group = key(created_day, chat["application_id"], chat["assigned_agent_id"])
                durations[group]["resolution_seconds"].append(_seconds(chat["created_at"], chat["resolved_at"]))
        if chat["resolved_at"] is not None and day_of(chat["resolved_at"]) is not None:
            group = key(day_of(chat["resolved_at"]), chat["application_id"], chat["assigned_agent_id"])
            counts[group]["chats_resolved"] += 1
    for message in messages:
        day = day_of(message["created_at"])
        if day is not None:
            agent = message["author_id"] if message["sender"] == "agent" else None
            counts[key(day, by_id[message["chat_id"]]["application_id"], agent)]["messages"] += 1

    def row(count: dict, duration: dict) -> dict:
        figures = {name: count.get(name, 0) for name in ("chats_created", "chats_resolved", "messages")}
        for name in ("first_response_seconds", "wait_seconds", "resolution_seconds"):
            values = duration.get(name, [])
            figures[name] = {"median": nearest_rank(values, 0.5), "p90": nearest_rank(values, 0.9)}
        figures["sla_breaches"] = 0
        return figures

    groups = set(counts) | set(durations)
    if group_by == "day":
        days = [(since + timedelta(days=offset)).isoformat() for offset in range((until - since).days + 1)]
        data = [{"key": day, **row(counts.get(day, {}), durations.get(day, {}))} for day in days]
    else:
        data = sorted(
            ({"key": group, **row(counts[group], durations[group])} for group in groups),
            key=lambda item: (item["key"] is not None, str(item["key"])),
        )
    total_counts, total_durations = defaultdict(int), defaultdict(list)
    for group in groups:
        for name, value in counts[group].items():
            total_counts[name] += value
        for name, values in durations[group].items():
            total_durations[name].extend(values)
    return {"data": data, "totals": row(total_counts, total_durations)}


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)
