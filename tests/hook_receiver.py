"""A real webhook receiver on 127.0.0.1 for activity and end-to-end tests: records, answers as told.

``/status/<code>`` answers that status (with a line of text), ``/slow/<seconds>`` answers 200
that late, a path given a script in ``Received.script`` answers its statuses in turn (the last
one repeats), anything else 200. Every POST's JSON body is kept, with its path, in arrival order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devenv.processes import free_port


@dataclass
class Received:
    """What the receiver got: (path, JSON body, Content-Type) per request."""

    requests: list[tuple[str, Any, str | None]] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[Any]:
        with self.lock:
            return [body for _, body, _ in self.requests]


@contextmanager
def hook_receiver() -> Iterator[tuple[str, Received]]:
    """Serve in a thread; yields the base URL and what it receives."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            with received.lock:
                received.requests.append((self.path, body, self.headers.get("Content-Type")))
                scripted = received.script.get(self.path)
                status = scripted[0] if scripted else 200
                if scripted and len(scripted) > 1:
                    scripted.pop(0)
            parts = self.path.strip("/").split("/")
            if parts[0] == "slow" and len(parts) > 1:
                time.sleep(float(parts[1]))
            elif parts[0] == "status" and len(parts) > 1:
                status = int(parts[1])
            text = b"ok" if status < 300 else b"migrations not finished"
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            except OSError:
                pass  # the caller gave up (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
