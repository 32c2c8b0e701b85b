"""A loopback server for what zbatch's monitoring talks to: a Pushgateway's HTTP API
(``PUT``/``POST``/``DELETE /metrics/job/<job>[/<label>/<value>...]``, ``GET /metrics``) and
a dead-man's-switch ping endpoint (``GET /ping/<uuid>[/start|/<exit code>]``, as
healthchecks.io serves it).

Every request is recorded in arrival order. ``status`` makes every answer that HTTP status
(to count a client's retries); ``hang`` holds every request unanswered until the server
stops (to count a client's timeouts).

    with MonitorServer() as mon:
        run(..., "--ping", mon.url + "/ping/abc", "--pushgateway", mon.url)
        assert mon.paths("GET") == ["/ping/abc/start", "/ping/abc"]
        text = mon.pushes()[-1].body   # the exposition text of the last push
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG_LIMIT = 30.0  # a held request is let go after this long, whatever happens


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    body: str
    headers: dict[str, str]


class MonitorServer:
    def __init__(self, *, status: int = 200, hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.groups: dict[str, str] = {}  # Pushgateway: grouping path -> last pushed text
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                seen = Seen(self.command, self.path, body, dict(self.headers.items()))
                with server._lock:
                    server.requests.append(seen)
                if server.hang:
                    server._stopping.wait(HANG_LIMIT)
                    return
                reply = b""
                if self.path.startswith("/metrics/job/") and server.status == 200:
                    group = self.path.removeprefix("/metrics/")
                    with server._lock:
                        if self.command == "DELETE":
                            server.groups.pop(group, None)
                        else:
                            server.groups[group] = body
                elif self.path == "/metrics" and self.command == "GET":
                    with server._lock:
                        reply = "\n".join(server.groups.values()).encode()
                self.send_response(server.status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_PUT = do_POST = do_DELETE = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> MonitorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self.requests)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.seen() if method is None or r.method == method]

    def pushes(self) -> list[Seen]:
        return [r for r in self.seen() if r.path.startswith("/metrics/job/")]

    def wait_for_requests(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
