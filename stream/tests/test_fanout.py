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
