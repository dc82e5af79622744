"""A fault-injecting HTTP proxy in front of the real DaCHS server (tests only).

It does not answer TAP itself: every request it lets through goes to the real server. It injects
the failures a client meets in the field: 5xx answers, an HTML page instead of a VOTable, and a
VOTable cut off in the middle.
"""

from __future__ import annotations

import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy:
    """``mode``: "pass", "html", "truncate", or "flaky" (the first ``failures`` requests get 503)."""

    def __init__(self, upstream: str = "http://127.0.0.1:8080", mode: str = "pass", failures: int = 0):
        self.upstream, self.mode, self.failures = upstream.rstrip("/"), mode, failures
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, method: str):
                proxy.requests += 1
                body = (
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    if method == "POST"
                    else None
                )
                if proxy.mode == "html":
                    return self._reply(
                        200, "text/html", b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>"
                    )
                if proxy.mode == "flaky" and proxy.failures > 0:
                    proxy.failures -= 1
                    return self._reply(503, "text/plain", b"service temporarily unavailable")
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method=method)
                for key in ("Content-Type",):
                    if self.headers.get(key):
                        req.add_header(key, self.headers[key])
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status, ctype, data = resp.status, resp.headers.get("Content-Type", ""), resp.read()
                except urllib.error.HTTPError as err:
                    status, ctype, data = err.code, err.headers.get("Content-Type", ""), err.read()
                if proxy.mode == "truncate" and (b"<TABLEDATA>" in data or b"<STREAM" in data):
                    data = data[: len(data) // 2]
                self._reply(status, ctype, data)

            def _reply(self, status, ctype, data):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
