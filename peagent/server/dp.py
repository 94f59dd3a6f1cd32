"""``peagent serve DIR``: the embedded distribution point, for when there is no nginx at hand.

It serves a directory over HTTP/1.1 the way the agent needs a DP to: ``GET`` and ``HEAD`` with
single ``Range`` requests, strong ``ETag`` and ``If-Match`` (so a resumed transfer notices a
file that changed), ``Last-Modified``, and bodies sent with ``sendfile`` so the kernel moves the
bytes. Many machines can fetch at once (a thread per connection). Paths are taken literally:
no ``..``, no directory listings, nothing outside DIR except what DIR's own symlinks point to
(an administrator's choice). Status events POSTed to ``/status`` are appended to a JSON-lines
file when one is configured.

A typical DP directory::

    pe/vmlinuz  pe/initrd.zst        the PE, for iPXE
    boot.ipxe                        the iPXE script (netboot/ipxe/boot.ipxe)
    tasks/default.json               tasks, or tasks/<mac-with-dashes>.json per machine
    images/...                       images
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from peagent.errors import UsageError

log = logging.getLogger("peagent.serve")
MAX_EVENT = 64 << 10  # bytes: a status event is small; anything bigger is refused
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class DPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], root: Path, status_log: Path | None = None) -> None:
        super().__init__(address, _Handler)
        self.root = root.resolve()
        self.status_log = status_log
        self.status_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: DPServer
    protocol_version = "HTTP/1.1"
    server_version = "peagent-dp"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._serve_file(body=False)

    def do_GET(self) -> None:
        self._serve_file(body=True)

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/status" or self.server.status_log is None:
            self._error(HTTPStatus.NOT_FOUND, "no such endpoint")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return
        if length > MAX_EVENT:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"events are at most {MAX_EVENT} bytes")
            self.close_connection = True
            return
        try:
            event = json.loads(self.rfile.read(length))
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"an event is a JSON object: {exc}")
            return
        with self.server.status_lock, self.server.status_log.open("a") as out:
            out.write(json.dumps(event, sort_keys=True) + "\n")
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _resolve(self) -> Path | None:
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if "\0" in path or any(p in (".", "..") for p in parts):
            return None
        return self.server.root.joinpath(*parts)

    def _serve_file(self, body: bool) -> None:
        path = self._resolve()
        if path is None:
            self._error(HTTPStatus.BAD_REQUEST, "path refused", body)
            return
        try:
            f = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._error(HTTPStatus.NOT_FOUND, "not found", body)
            return
        except PermissionError:
            self._error(HTTPStatus.FORBIDDEN, "forbidden", body)
            return
        with f:
            st = os.fstat(f.fileno())
            if not os.path.isfile(f.name):
                self._error(HTTPStatus.NOT_FOUND, "not found", body)
                return
            size = st.st_size
            etag = f'"{st.st_mtime_ns:x}-{size:x}"'
            if_match = self.headers.get("If-Match")
            if if_match and if_match.strip() != "*" and etag not in [t.strip() for t in if_match.split(",")]:
                self._error(HTTPStatus.PRECONDITION_FAILED, "the file changed", body)
                return
            start, end = 0, size - 1
            status = HTTPStatus.OK
            wanted = self._range(size, etag)
            if wanted == "unsatisfiable":
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if wanted is not None:
                start, end = wanted
                status = HTTPStatus.PARTIAL_CONTENT
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            self.send_header("Content-Length", str(end - start + 1))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if body and end >= start:
                try:
                    self.wfile.flush()
                    self.connection.sendfile(f, start, end - start + 1)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

    def _range(self, size: int, etag: str) -> tuple[int, int] | str | None:
        """The single byte range asked for, None for the whole file, or 'unsatisfiable'."""
        header = self.headers.get("Range")
        if not header:
            return None
        if_range = self.headers.get("If-Range")
        if if_range and if_range.strip() != etag:
            return None
        m = _RANGE.fullmatch(header.strip())
        if not m or m.group(1) == m.group(2) == "":
            return None  # multiple or malformed ranges: the whole file is a valid answer
        first, last = m.groups()
        if first == "":
            count = int(last)
            if count == 0:
                return "unsatisfiable"
            return max(0, size - count), size - 1
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if start >= size or end < start:
            return "unsatisfiable"
        return start, end

    def _error(self, status: HTTPStatus, message: str, body: bool = True) -> None:
        data = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def serve(root: Path, bind: str, port: int, status_log: Path | None = None) -> DPServer:
    """A started-but-not-serving DPServer; call serve_forever() (or run it in a thread)."""
    if not root.is_dir():
        raise UsageError(f"cannot serve {root}: not a directory")
    return DPServer((bind, port), root, status_log)
