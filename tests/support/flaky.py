"""An HTTP server whose misbehaviour is scripted: each request takes the next fault of a list.

Faults: ``None`` (serve properly), ``("drop", n)`` (send n body bytes, then close), ``("stall", n,
seconds)`` (send n bytes, then go silent), ``("status", code)``, ``("ignore-range",)`` (answer 200
with the whole file to a Range request), ``("etag", value)`` (present another ETag, as if the
file changed). Requests are recorded, headers included, for assertions.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class FlakyServer:
    def __init__(self, files: dict[str, bytes], faults: list | None = None) -> None:
        self.files = files
        self.faults = list(faults or [])
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append({"path": self.path, **{k: v for k, v in self.headers.items()}})
                fault = server.faults.pop(0) if server.faults else None
                data = server.files.get(self.path)
                if data is None:
                    return self._plain(404)
                if fault and fault[0] == "status":
                    return self._plain(fault[1])
                etag = fault[1] if fault and fault[0] == "etag" else '"v1"'
                if_match = self.headers.get("If-Match")
                if if_match and if_match != etag:
                    return self._plain(412)
                start = 0
                rng = self.headers.get("Range")
                if rng and not (fault and fault[0] == "ignore-range"):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.end_headers()
                if fault and fault[0] in ("drop", "stall"):
                    self.wfile.write(body[:fault[1]])
                    self.wfile.flush()
                    if fault[0] == "stall":
                        time.sleep(fault[2])
                    self.close_connection = True
                    return None
                self.wfile.write(body)
                return None

            def _plain(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FlakyServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
