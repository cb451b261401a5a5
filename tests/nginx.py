"""A real nginx on 127.0.0.1 with WebDAV PUT, as a shared build cache (``ac/`` and ``cas/``
under its root) for tests; ``/private/`` is the server block docs/ci.md shows (writes ask for
a user and password), ``/broken/`` answers 500."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONFIG = """\
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {prefix}/access.log;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location /broken/ {{ return 500; }}
    location /private/ {{
      root {root};
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 64m;
      limit_except GET HEAD {{
        auth_basic khib;
        auth_basic_user_file {prefix}/users;
      }}
    }}
    location / {{
      root {root};
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 64m;
    }}
  }}
}}
"""


USER, PASSWORD = "ci", "s3cret"  # of /private/ (HTTP basic authentication)


@dataclass(frozen=True)
class Nginx:
    url: str
    root: Path  # what the server stores
    log: Path  # the access log

    def requests(self) -> list[tuple[str, str, int]]:
        """Each request so far, in order: (method, path, status)."""
        found = []
        for line in self.log.read_text().splitlines():
            request = re.search(r'"(\w+) (\S+) [^"]*" (\d+)', line)
            assert request, line
            found.append((request[1], request[2], int(request[3])))
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def nginx(prefix: Path) -> Iterator[Nginx]:
    """Run nginx in the foreground with its files under ``prefix``; stop it afterwards."""
    root = prefix / "root"
    root.mkdir(parents=True)
    port = free_port()
    # As root, nginx would hand requests to an unprivileged worker that cannot write here.
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    (prefix / "nginx.conf").write_text(CONFIG.format(user=user, prefix=prefix, port=port,
                                                     root=root))
    server = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                               "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)
        yield Nginx(f"http://127.0.0.1:{port}", root, prefix / "access.log")
    finally:
        server.terminate()
        server.wait(timeout=10)
