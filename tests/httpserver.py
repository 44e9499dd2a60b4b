"""A real HTTP server on an ephemeral port of 127.0.0.1, for the download tests.

A route is the bytes to answer with (200, the whole of them; the Range header ignored, as some
servers do), or a handler: `status`, `dies_after`, `slow`, `ranged` (honours ``Range: bytes=N-``
with a 206), `in_turn` (one handler per request, the last one for the rest). The server records
each request's path (`hits`) and Range header (`ranges`, None when there was none). And the
download tests' helpers: `sha`, `contents` (of a folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Route = bytes | Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        self.server.ranges.append(self.headers.get("Range"))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
        else:
            answer(self, route)

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


def answer(h: BaseHTTPRequestHandler, route: Route) -> None:
    if callable(route):
        route(h)
    else:
        h.send_response(200)
        h.send_header("Content-Length", str(len(route)))
        h.end_headers()
        h.wfile.write(route)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        self.ranges: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def serve() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def status(code: int) -> Route:
    return lambda h: h.send_error(code)


def dies_after(data: bytes, sent: int) -> Route:
    """Promise all of ``data`` in Content-Length, send ``sent`` bytes, then hang up."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:sent])
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True

    return handle


def slow(data: bytes, delay: float) -> Route:
    def handle(h: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        try:
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            pass  # the client gave up

    return handle


def ranged(data: bytes) -> Route:
    """A server that honours ``Range: bytes=N-``: 206 and the bytes from N (416 past the end)."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        asked = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if asked is None:
            h.send_response(200)
            h.send_header("Accept-Ranges", "bytes")
            body = data
        elif int(asked.group(1)) >= len(data):
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(data)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        else:
            start = int(asked.group(1))
            body = data[start:]
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return handle


def in_turn(*routes: Route) -> Route:
    """The first request gets the first route, the next the second, ...; the last one all the rest."""
    left = list(routes)

    def handle(h: BaseHTTPRequestHandler) -> None:
        answer(h, left.pop(0) if len(left) > 1 else left[0])

    return handle


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def contents(directory: Path) -> list[str]:
    """Names in a directory (temporary files included); [] when it does not exist."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
