"""Who receives which event: the live rule (stream.access) and the replay's SQL (stream.selectors) agree."""

import pytest
from django_tenants.utils import schema_context

from core.models import User
from events.models import Event
from stream.access import stream_event_visible
from stream.selectors import stream_replay_page
from stream.services import StreamViewer

ADMIN, AGENT = User.Role.ADMIN, User.Role.AGENT
ME, OTHER = 101, 202


@pytest.mark.parametrize(
    ("role", "type", "chat", "assigned", "private", "visible"),
    [
        # an admin receives everything of the tenant
        (ADMIN, "message.created", 1, OTHER, True, True),
        (ADMIN, "outbound.sent", None, None, False, True),
        # an agent: everything of its own chats, private notes included
        (AGENT, "message.created", 1, ME, False, True),
        (AGENT, "message.created", 1, ME, True, True),
        (AGENT, "chat.resolved", 1, ME, False, True),
        (AGENT, "ticket.updated", 1, ME, False, True),
        # the queue's events of any chat
        (AGENT, "chat.created", 1, None, False, True),
        (AGENT, "chat.assigned", 1, OTHER, False, True),
        (AGENT, "chat.transferred", 1, OTHER, False, True),
        # nothing else of other agents' or waiting chats, never their private notes
        (AGENT, "message.created", 1, OTHER, False, False),
        (AGENT, "message.created", 1, OTHER, True, False),
        (AGENT, "message.created", 1, None, True, False),
        (AGENT, "chat.resolved", 1, OTHER, False, False),
        (AGENT, "ticket.created", 1, OTHER, False, False),
        # events of no chat are the admins'
        (AGENT, "outbound.failed", None, None, False, False),
        # a platform admin has no tenant stream
        (User.Role.PLATFORM_ADMIN, "chat.created", 1, None, False, False),
    ],
)
def test_the_filter_rule(role, type, chat, assigned, private, visible):
    assert stream_event_visible(role=role, user_id=ME, type=type, chat_id=chat, assigned_agent_id=assigned,
                                is_private=private) is visible  # fmt: skip


def test_the_replay_query_applies_the_same_rule_as_the_live_filter(tenant_a, django_assert_max_num_queries):
    # given every kind of event on chats of the agent, of another agent, waiting, and of no chat
    from agents.services import agent_create
    from conversations.models import Chat
    from conversations.services import application_create
    from core.tests.support import PASSWORD

    with schema_context(tenant_a.schema_name):
        application = application_create(name="Replay")
        me = agent_create(email="me@a.test", password=PASSWORD, max_customers=5, is_online=False)
        other = agent_create(email="other@a.test", password=PASSWORD, max_customers=5, is_online=False)
        chats = {
            owner: Chat.objects.create(application=application, number=index + 1, customer_id=f"c{index}",
                                       assigned_agent=agent.user if agent else None,
                                       status="assigned" if agent else "waiting")  # fmt: skip
            for index, (owner, agent) in enumerate([("me", me), ("other", other), ("nobody", None)])
        }
        cases = []
        for owner, chat in chats.items():
            for type in ("chat.created", "chat.assigned", "chat.transferred", "message.created", "chat.resolved", "ticket.updated"):
                for private in (False, True):
                    cases.append(Event.objects.create(type=type, data={}, chat_id=chat.id, is_private=private))
        cases.append(Event.objects.create(type="outbound.sent", data={}))
        assigned = {chat.id: chat.assigned_agent_id for chat in chats.values()}

        for viewer in (StreamViewer(user_id=me.pk, role=AGENT), StreamViewer(user_id=other.pk, role=AGENT),
                       StreamViewer(user_id=me.pk, role=ADMIN)):  # fmt: skip
            # when the replay reads everything after the first event's predecessor
            with django_assert_max_num_queries(1):
                replayed = stream_replay_page(viewer=viewer, after_id=cases[0].id - 1, limit=1000)

            # then exactly the events the live filter lets through, in id order
            expected = [
                event.id for event in cases
                if stream_event_visible(role=viewer.role, user_id=viewer.user_id, type=event.type, chat_id=event.chat_id,
                                        assigned_agent_id=assigned.get(event.chat_id), is_private=event.is_private)
            ]  # fmt: skip
            assert [event.id for event in replayed] == expected
            assert len(expected) < len(cases) or viewer.role == ADMIN
