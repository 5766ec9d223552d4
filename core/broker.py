"""The Redis broker transport, with one fix: a worker survives losing Redis while it holds unacked tasks.

When the broker connection breaks, Celery (5.7) first `collect()`s the connection, which detaches kombu's
transport from it (`transport.client = None`), and then closes it. If a channel did not finish closing
the first time (Redis was unreachable), the second close restores the channel's unacked messages, which
needs connection parameters read from `transport.client`: an AttributeError, which Celery treats as
unrecoverable, and the worker exits (seen with Redis SIGKILLed under load, core/tests/live/test_faults.py).
The same lookup breaks the late ack of a task that was running across the reconnection.

This channel computes its connection parameters while it is attached and reuses them afterwards. With
Redis still down the restore then fails with a connection error, which Celery ignores as it should; the
messages stay in Redis' unacked hash and come back after the visibility timeout: nothing is lost.
"""

from kombu.transport import redis


class Channel(redis.Channel):
    def __init__(self, *args, **kwargs):
        self._attached_connparams: dict[bool, dict] = {}
        super().__init__(*args, **kwargs)
        for asynchronous in (False, True):
            self._connparams(asynchronous=asynchronous)

    def _connparams(self, asynchronous=False):
        if self.connection.client is not None or asynchronous not in self._attached_connparams:
            self._attached_connparams[asynchronous] = super()._connparams(asynchronous=asynchronous)
        return dict(self._attached_connparams[asynchronous])


class Transport(redis.Transport):
    Channel = Channel
