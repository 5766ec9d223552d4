"""A stand-in delivery provider for the outbound benchmark, run as processes of its own.

`python -m bench.receiver PORT KEYS_FILE`: answers every POST with 202 {"messageId": "m-<Idempotency-Key>"}
over HTTP/1.1 keep-alive, and writes each request's Idempotency-Key on a line of KEYS_FILE (flushed when
SIGTERM stops it). Several processes bind the same PORT (SO_REUSEPORT): the kernel spreads the sender's
connections over them, so the receiver is not the bottleneck of the sender it measures (in the bench's own
process it shared the GIL with the run it timed).
"""

import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ReusePortServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def main() -> None:
    port, keys_path = int(sys.argv[1]), sys.argv[2]
    keys = open(keys_path + ".tmp", "w", buffering=1 << 20)
    lock = threading.Lock()

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session uses it
        disable_nagle_algorithm = True  # else headers and body, written apart, wait on the client's delayed ACK

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            key = self.headers.get("Idempotency-Key", "")
            with lock:
                keys.write(key + "\n")
            body = json.dumps({"messageId": f"m-{key}"}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ReusePortServer(("127.0.0.1", port), Receiver)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        with lock:
            keys.close()
        # Renamed only once complete: the bench reads a file that exists as a finished count.
        os.replace(keys_path + ".tmp", keys_path)


if __name__ == "__main__":
    main()
