"""A connection's queue: bounded (a slow reader is closed, never blocks others), and the replay's switch."""

import asyncio

from stream.fanout import StreamConnection
from stream.services import StreamViewer


def test_a_connection_that_falls_behind_is_closed_not_grown(settings):
    settings.STREAM_CONNECTION_QUEUE = 3

    async def run():
        connection = StreamConnection(schema_name="alpha", viewer=StreamViewer(user_id=1, role="admin"))
        for event_id in (1, 2, 3):
            connection.push(event_id, b"frame")
        assert (len(connection.pending), connection.is_overflowed) == (3, False)
        # the fourth frame would exceed the bound: the queue is dropped and the stream told to end
        connection.push(4, b"frame")
        assert (len(connection.pending), connection.is_overflowed, connection.wake.is_set()) == (0, True, True)
        connection.push(5, b"frame")
        assert len(connection.pending) == 0

    asyncio.run(run())


def test_live_notices_of_replayed_events_are_dropped_queued_or_late():
    async def run():
        connection = StreamConnection(schema_name="alpha", viewer=StreamViewer(user_id=1, role="admin"))
        connection.push(10, b"ten")  # queued during the replay, which also sent 10
        connection.push(12, b"twelve")  # committed after the replay read the outbox
        connection.replay_done({9, 10, 11})
        connection.push(11, b"eleven")  # its notice came after the replay had sent it
        connection.push(13, b"thirteen")
        assert [event_id for event_id, _frame in connection.pending] == [12, 13]

    asyncio.run(run())


def test_the_fan_out_index_picks_exactly_the_connections_the_rule_lets_through():
    import itertools

    from stream.access import stream_event_visible
    from stream.fanout import TenantConnections

    async def run():
        tenant = TenantConnections()
        viewers = [StreamViewer(1, "admin"), StreamViewer(2, "agent"), StreamViewer(2, "agent"), StreamViewer(3, "agent"),
                   StreamViewer(4, "agent")]  # fmt: skip
        connections = [StreamConnection(schema_name="alpha", viewer=viewer) for viewer in viewers]
        for connection in connections:
            tenant.add(connection)
        tenant.discard(connections[-1])  # a closed stream receives nothing
        types = ["chat.created", "chat.assigned", "chat.transferred", "chat.resolved", "message.created", "outbound.sent"]
        for type, chat_id, assigned, private in itertools.product(types, [None, 9], [None, 1, 2, 3, 4], [False, True]):
            notice = [1, type, chat_id, assigned, private, "evt_x", "{}"]
            expected = {
                id(connection) for connection in connections[:-1]
                if stream_event_visible(role=connection.viewer.role, user_id=connection.viewer.user_id, type=type,
                                        chat_id=chat_id, assigned_agent_id=assigned, is_private=private)
            }  # fmt: skip
            receivers = tenant.receivers(notice)
            assert len(receivers) == len(expected) and {id(c) for c in receivers} == expected, notice

    asyncio.run(run())
