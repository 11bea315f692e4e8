"""A threading HTTP server on 127.0.0.1 with single-range GET support, for the
remote-wheel tests and benchmarks.  ``mode``: "range" (honest), "norange"
(ignores Range, answers 200 with the whole file), "wrong-range" (an off-by-one
Content-Range after the first request), "truncate" (half the body, then hangs
up), "overlong" (a Content-Length larger than the range), "stall" (never
answers until ``release`` is set).  ``sent`` counts body bytes sent, counted
before they are written so a client can never have more than it says.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET with single byte ranges (``a-b``, ``a-``, ``-n``) when the server's
    ``mode`` is "range"; other modes misbehave on purpose."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        srv = self.server
        path = srv.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        srv.requests.append(self.headers.get("Range"))
        span = self._span(self.headers.get("Range"), len(data))
        if srv.mode == "stall":
            srv.release.wait()
            return
        if span is None or srv.mode == "norange":
            self._send(200, data, {})
            return
        first, last = span
        body = data[first:last + 1]
        cr = f"bytes {first}-{last}/{len(data)}"
        if srv.mode == "wrong-range" and srv.requests[1:]:
            cr = f"bytes {first + 1}-{last + 1}/{len(data)}"      # off by one
            body = data[first + 1:last + 2].ljust(len(body), b"\0")
        elif srv.mode == "truncate" and srv.requests[1:]:
            self._send(206, body[:len(body) // 2], {"Content-Range": cr},
                       length=len(body))
            self.close_connection = True
            return
        elif srv.mode == "overlong" and srv.requests[1:]:
            self._send(206, body + b"x" * 100, {"Content-Range": cr})
            return
        self._send(206, body, {"Content-Range": cr})

    def _span(self, header, size):
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", header or "")
        if not m or size == 0:
            return None
        a, b = m.groups()
        if a == "":
            return max(0, size - int(b)), size - 1
        return int(a), min(int(b), size - 1) if b else size - 1

    def _send(self, status, body, headers, length=None):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("ETag", f'"{self.server.etag_of(self.path)}"')
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.server.sent += len(body)       # before the client can have it
        self.wfile.write(body)


class RangeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root, mode):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root, self.mode = Path(root), mode
        self.requests, self.sent = [], 0
        self.release = threading.Event()

    def handle_error(self, request, client_address):
        pass                                # a client that hung up on a liar: expected

    def etag_of(self, path):
        return hashlib.sha256((self.root / path.lstrip("/")).read_bytes()).hexdigest()[:16]

    def url(self, name):
        return f"http://127.0.0.1:{self.server_port}/{name}"


def start(root, mode: str = "range") -> RangeServer:
    """A server for the files under ``root``, serving in a daemon thread."""
    srv = RangeServer(root, mode)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def stop(srv: RangeServer) -> None:
    srv.release.set()
    srv.shutdown()
    srv.server_close()
