"""The real-time stream (stream app): tickets, keep-alives, per-connection limits, replay."""

from sociomile.settings.env import env_int

# --- Real-time stream (stream app, PRODUCT.md "Real-time stream") ------------------------------------------
# A ticket opens one stream within this many seconds of its creation, once (PRODUCT.md: 60 s).
STREAM_TICKET_SECONDS = env_int("STREAM_TICKET_SECONDS", 60)
# A comment line this often keeps proxies and load balancers from closing an idle stream (PRODUCT.md: 15 s).
STREAM_HEARTBEAT_SECONDS = env_int("STREAM_HEARTBEAT_SECONDS", 15)
# Events waiting to be written to one connection. A client that falls this far behind is disconnected (its
# EventSource reconnects with Last-Event-ID and replays), so a slow reader never holds others back nor grows
# the process's memory without bound.
STREAM_CONNECTION_QUEUE = env_int("STREAM_CONNECTION_QUEUE", 1000)
# How far back Last-Event-ID replays (PRODUCT.md: 24 h), and how many events one replay query reads.
STREAM_REPLAY_SECONDS = env_int("STREAM_REPLAY_SECONDS", 24 * 3600)
STREAM_REPLAY_BATCH = env_int("STREAM_REPLAY_BATCH", 500)
# A tenant with an open stream is marked in Redis for this long, re-marked every third of it by each ASGI process
# that holds one of its streams; a commit publishes its notices only while the mark stands (no stream listening:
# no query after the commit, issue 18).
STREAM_LISTENING_SECONDS = env_int("STREAM_LISTENING_SECONDS", 60)
