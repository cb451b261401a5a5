"""A real HTTP server on 127.0.0.1 for fetch tests, with faults on demand.

``routes[path]`` is the body served at ``path`` (with Range support), or a fault:
``Fault("500")``, ``"404"``, ``"short"`` (fewer bytes than Content-Length, then close),
``"reset"`` (half the body, then a TCP reset), ``"loop"`` (redirects to itself),
``"stall"`` (a few bytes, then silence), ``"hang"`` (no answer at all),
``"trickle"`` (a few bytes a second),
``"trickle-fast"`` (the whole body, slowly, in about two seconds),
``"cut-once"`` (the first answer stops halfway; later ones serve ranges).
``default`` is served at every other path (404 while it is None).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Fault:
    kind: str
    body: bytes = b""


class Server:
    """Records every request as (path, Range header or None)."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes | Fault] = {}
        self.default: bytes | Fault | None = None
        self.requests: list[tuple[str, str | None]] = []
        self.stopping = threading.Event()
        self.cut: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Range")))
                route = outer.routes.get(self.path, outer.default)
                if route is None:
                    self.send_error(404)
                elif isinstance(route, bytes):
                    self.serve(route)
                else:
                    getattr(self, "fault_" + route.kind.replace("-", "_"))(route.body)

            def serve(self, body: bytes) -> None:
                start = 0
                asked = self.headers.get("Range", "")
                if asked.startswith("bytes=") and asked.endswith("-"):
                    start = int(asked[6:-1])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def head(self, length: int) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def fault_500(self, body: bytes) -> None:
                self.send_error(500)

            def fault_404(self, body: bytes) -> None:
                self.send_error(404)

            def fault_short(self, body: bytes) -> None:
                self.head(len(body))
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True

            def fault_reset(self, body: bytes) -> None:
                self.head(len(body))
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True

            def fault_loop(self, body: bytes) -> None:
                self.send_response(302)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def fault_stall(self, body: bytes) -> None:
                self.head(len(body))
                self.wfile.write(body[:10])
                self.wfile.flush()
                outer.stopping.wait(60)
                self.close_connection = True

            def fault_hang(self, body: bytes) -> None:
                outer.stopping.wait(60)
                self.close_connection = True

            def fault_trickle(self, body: bytes) -> None:
                self.dribble(body, 1)

            def fault_trickle_fast(self, body: bytes) -> None:
                self.dribble(body, 32)  # a small body in about two seconds

            def dribble(self, body: bytes, step: int) -> None:
                """``step`` bytes every 0.2 s, until the body is sent or the server stops."""
                self.head(len(body))
                for i in range(0, len(body), step):
                    if outer.stopping.wait(0.2):
                        break
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                self.close_connection = True

            def fault_cut_once(self, body: bytes) -> None:
                if self.path in outer.cut:
                    self.serve(body)
                    return
                outer.cut.add(self.path)
                self.fault_short(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


@contextmanager
def serving() -> Iterator[Server]:
    server = Server()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.httpd.shutdown()
        server.httpd.server_close()
