"""A stand-in delivery provider for the outbound benchmark, run as processes of its own.

`python -m bench.receiver PORT KEYS_FILE`: answers every request with 202 {"messageId": "m-<Idempotency-Key>"}
over HTTP/1.1 keep-alive, and writes each request's Idempotency-Key on a line of KEYS_FILE when SIGTERM
stops it (the bench counts duplicates and never-received messages from those files). Several processes
bind the same PORT (SO_REUSEPORT): the kernel spreads the sender's connections over them.

It stands in for a provider on another machine, so it has to cost the shared CPU as little as possible:
an asyncio Protocol that parses just enough HTTP/1.1 (request line, headers, Content-Length, body) and
answers in one write, instead of http.server's thread and buffered file objects per connection (about
four times the CPU per request on the bench machine). No chunked bodies: the sender always sends a
Content-Length.
"""

import asyncio
import json
import os
import signal
import socket
import sys
import time

_HEADERS_END = b"\r\n\r\n"
# The header each line records, and whether the arrival time (Unix seconds) follows it: the events scenario
# counts webhook-ids and measures create -> delivered with the same receiver.
_KEY_HEADER = os.environ.get("BENCH_RECEIVER_KEY_HEADER", "idempotency-key")
_WITH_TIMES = os.environ.get("BENCH_RECEIVER_TIMES") == "1"
_MAX_HEAD = 64 * 1024


class Receiver(asyncio.Protocol):
    def __init__(self, keys: list[str]):
        self.keys = keys
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # the answer is one write: never wait for the client's delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = []
        close = False
        # A read may hold part of a request, or several (pipelining): answer every complete one.
        while True:
            end = self.buffer.find(_HEADERS_END)
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    close = True
                break
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                length = -1
            if length < 0:
                answers.append(_answer(400, b'{"error": "bad Content-Length"}', close=True))
                close = True
                break
            if len(self.buffer) < end + 4 + length:
                break  # the body is still on its way
            del self.buffer[: end + 4 + length]
            key = headers.get(_KEY_HEADER, "")
            self.keys.append(f"{key} {time.time():.6f}" if _WITH_TIMES else key)
            wants_close = headers.get("connection", "").lower() == "close" or head[0].endswith("HTTP/1.0")
            answers.append(_answer(202, json.dumps({"messageId": f"m-{key}"}).encode(), close=wants_close))
            if wants_close:
                close = True
                break
        if answers:
            self.transport.write(b"".join(answers))
        if close:
            self.transport.close()


def _answer(status: int, body: bytes, *, close: bool) -> bytes:
    reason = {202: "Accepted", 400: "Bad Request"}[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
    ).encode() + body


async def serve(port: int, keys: list[str], ready_path: str) -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    server = await loop.create_server(lambda: Receiver(keys), "127.0.0.1", port, reuse_port=True, backlog=1024)
    open(ready_path, "w").close()  # the bench waits for this file: the port is bound and listening
    print("ready", flush=True)
    await stopped.wait()
    # Not `async with server` nor wait_closed(): since Python 3.12 they wait for every client connection to
    # close, and the sender's keep-alive pool may hold them open as long as it likes.
    server.close()


def main() -> None:
    port, keys_path = int(sys.argv[1]), sys.argv[2]
    keys: list[str] = []
    try:
        asyncio.run(serve(port, keys, keys_path + ".tmp"))
    finally:
        with open(keys_path + ".tmp", "w") as file:
            file.write("".join(f"{key}\n" for key in keys))
        # Renamed only once complete: the bench reads a file that exists as a finished count.
        os.replace(keys_path + ".tmp", keys_path)


if __name__ == "__main__":
    main()
