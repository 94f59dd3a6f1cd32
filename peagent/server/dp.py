"""``peagent serve DIR``: the embedded distribution point, for when there is no nginx at hand.

It serves a directory over HTTP/1.1 the way the agent needs a DP to: ``GET`` and ``HEAD`` with
single ``Range`` requests, strong ``ETag`` and ``If-Match`` (so a resumed transfer notices a
file that changed), ``Last-Modified``, and bodies sent with ``sendfile`` so the kernel moves the
bytes. Many machines can fetch at once (a thread per connection). Paths are taken literally:
no ``..``, no directory listings, nothing outside DIR except what DIR's own symlinks point to
(an administrator's choice).

Beside the files it runs the status and assignment API (``/api/v1``, ``/status``, ``/boot.ipxe``
with a query, the dashboard at ``/``): peagent.server.api decides those requests, with the
deployments and their events kept in a SQLite status store (peagent.server.store). This module
only tells the two kinds of request apart, reads an API request's body (within the API's limit)
and writes its response.

Uploads (``peagent image build -o http://dp/images/name/version/``) are ``PUT``s, accepted only
when the server was started with an upload token, and only with ``Authorization: Bearer
<token>``. A body comes with a Content-Length or chunked (a stream whose size is not known before
its end, as a build produces it), up to a size limit when one is set. It is written under a
temporary name beside its target and renamed once complete and flushed, so a reader never sees
half a file, and an interrupted upload leaves nothing behind; ``If-None-Match: *`` refuses to
replace an existing file. Paths are taken as literally as for GET, and never through a symlink
that leads out of DIR.

A typical DP directory::

    pe/vmlinuz  pe/initrd.zst        the PE, for iPXE
    boot.ipxe                        the iPXE script (netboot/ipxe/boot.ipxe)
    tasks/default.json               tasks, or tasks/<mac-with-dashes>.json per machine
    images/...                       images
    peagent-serve.json               the assignment rules (optional; peagent.server.assign)

The status database, and the admin token, live outside it: everything in DIR is served.
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import logging
import os
import re
import shutil
import sys
import tempfile
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from peagent.errors import UsageError
from peagent.server.api import Api, Request, Response, error_response
from peagent.server.assign import AssignmentError
from peagent.server.ipxe import ScriptError
from peagent.server.ondisk import ConfigSource
from peagent.server.store import StatusStore, StoreError
from peagent.state.model import Secret
from peagent.status.event import MAX_EVENT_BYTES

log = logging.getLogger("peagent.serve")
MAX_EVENT = MAX_EVENT_BYTES  # one event's limit, the schema's (a batch may be larger: api.MAX_EVENTS_BODY)
CONFIG_NAME = "peagent-serve.json"  # the assignments, in DIR unless --config names another file
UPLOAD_TIMEOUT = 300  # seconds without a byte of an upload's body before it is dropped
_PIECE = 1 << 20
# Text a person (or a browser) may open; everything else is bytes, whatever its name says.
_CONTENT_TYPES = {".ipxe": "text/plain; charset=utf-8", ".json": "application/json",
                  ".txt": "text/plain; charset=utf-8"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class DPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when a lab's machines boot at once (and nginx opens
    # one per proxied request); dropped SYNs cost the client seconds of TCP retransmission.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], root: Path, status_log: Path | None = None,
                 upload_token: str | None = None, max_upload: int | None = None, *, db: Path | None = None,
                 config: Path | None = None, admin_token: Secret | None = None,
                 public_url: str | None = None) -> None:
        """Without ``db``, status lives in a temporary database removed by server_close() (tests, demos).

        Without ``config``, ``DIR/peagent-serve.json`` is the configuration when it exists.
        """
        self.root = root.resolve()
        self.upload_token = upload_token
        self.max_upload = max_upload
        self._scratch = None if db is not None else Path(tempfile.mkdtemp(prefix="peagent-serve-"))
        try:
            self.store = StatusStore(db if self._scratch is None else self._scratch / "status.sqlite")
        except BaseException:
            self._close_store()
            raise
        try:
            if config is None and (self.root / CONFIG_NAME).is_file():
                config = self.root / CONFIG_NAME
            super().__init__(address, _Handler)
            self.api = Api(self.root, self.store, config=ConfigSource(config), admin_token=admin_token,
                           public_url=public_url, server_url=self.url.rstrip("/"), status_log=status_log)
        except BaseException:
            self._close_store()
            raise

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self._close_store()

    def _close_store(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # A client that goes away (a machine rebooted, an upload aborted) is routine, not a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("%s went away: %s", client_address[0], sys.exc_info()[1])
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    server: DPServer
    protocol_version = "HTTP/1.1"
    server_version = "peagent-dp"
    # Headers and body leave in two writes: with Nagle's algorithm, the second waits for the client's
    # delayed ACK (40 ms) on a kept-alive connection, which a dashboard or a status sender reuses.
    disable_nagle_algorithm = True

    def parse_request(self) -> bool:
        """As BaseHTTPRequestHandler's, but a method nothing here handles gets a 405, not a 501 page."""
        if not super().parse_request():
            return False
        if hasattr(self, f"do_{self.command}"):
            return True
        self.close_connection = True  # the body, if any, is not read
        if Api.handles("GET", self.path) or Api.handles("POST", self.path):
            self._send(self.server.api.handle(Request(self.command, self.path, {}, b"")))
        else:
            self._not_allowed()
        return False

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        if not self._api():
            self._serve_file(body=False)

    def do_GET(self) -> None:
        if not self._api():
            self._serve_file(body=True)

    def do_POST(self) -> None:
        if not self._api():
            self._not_allowed()

    def do_DELETE(self) -> None:
        if not self._api():
            self._not_allowed()

    def do_PATCH(self) -> None:
        if not self._api():
            self._not_allowed()

    def _not_allowed(self) -> None:
        self.close_connection = True  # the body, if any, is not read
        allowed = "GET, HEAD, PUT" if self.server.upload_token is not None else "GET, HEAD"
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed on files: {allowed}",
                    headers={"Allow": allowed})

    def _api(self) -> bool:
        """Answer the request if it is the API's; False when it is about files."""
        if not Api.handles(self.command, self.path):
            return False
        body = self._api_body(Api.body_limit(self.command, self.path))
        if isinstance(body, Response):
            self.close_connection = True  # the body was not read: the connection cannot carry another request
            self._send(body)
            return True
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            response = self.server.api.handle(Request(self.command, self.path, headers, body))
        except Exception:
            # A bug, not the client's fault: say so, keep the details in the log, keep serving.
            log.exception("%s %s failed", self.command, urlsplit(self.path).path[:200])
            response = error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server's log)")
        self._send(response)
        return True

    def _api_body(self, limit: int) -> bytes | Response:
        """The request's body, or the error response when it cannot or must not be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return error_response(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length", "body")
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b""
        if not declared.strip().isdigit():
            return error_response(HTTPStatus.BAD_REQUEST, f"Content-Length: expected bytes, found {declared[:40]!r}",
                                  "Content-Length")
        length = int(declared)
        if length > limit:
            return error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                  f"the body is {length} bytes: at most {limit} here", "body")
        self.connection.settimeout(UPLOAD_TIMEOUT)
        try:
            body = self.rfile.read(length)
        finally:
            self.connection.settimeout(None)
        if len(body) != length:
            return error_response(HTTPStatus.BAD_REQUEST, "the body ended early", "body")
        return body

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self._end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def do_OPTIONS(self) -> None:
        """What the DP allows; an uploader asks first, so that a wrong token fails before any upload."""
        token = self.server.upload_token
        if token is not None and "Authorization" in self.headers and not self._authorized(token):
            self._refuse_token()
            return
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Allow", "GET, HEAD, PUT" if token is not None else "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _authorized(self, token: str) -> bool:
        return hmac.compare_digest(self.headers.get("Authorization", "").encode(), f"Bearer {token}".encode())

    def _refuse_token(self) -> None:
        self.close_connection = True
        self._error(HTTPStatus.UNAUTHORIZED, "an upload needs Authorization: Bearer <the DP's upload token>",
                    headers={"WWW-Authenticate": 'Bearer realm="peagent"'})

    def do_PUT(self) -> None:
        token = self.server.upload_token
        if token is None:
            self.close_connection = True
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "uploads are not enabled on this DP (no upload token)",
                        headers={"Allow": "GET, HEAD"})
            return
        if not self._authorized(token):
            self._refuse_token()
            return
        target = self._upload_target()
        if isinstance(target, tuple):
            self.close_connection = True
            self._error(*target)
            return
        if self.headers.get("If-None-Match", "").strip() == "*" and target.exists():
            self.close_connection = True
            self._error(HTTPStatus.PRECONDITION_FAILED, "the file exists (If-None-Match: *)")
            return
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = None
        if not chunked:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length or a chunked body is required")
                return
        limit = self.server.max_upload
        if limit is not None and length is not None and length > limit:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"uploads are at most {limit} bytes here")
            return
        existed = target.exists()
        failure = self._store(target, length, limit)
        if failure is not None:
            self.close_connection = True
            self._error(*failure)
            return
        log.info("stored %s", target)
        self.send_response(HTTPStatus.NO_CONTENT if existed else HTTPStatus.CREATED)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _store(self, target: Path, length: int | None, limit: int | None) -> tuple[HTTPStatus, str] | None:
        """Receive the body into a temporary file and rename it to ``target``; (status, why) when that fails."""
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.upload-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                self.connection.settimeout(UPLOAD_TIMEOUT)
                try:
                    self._receive(out, length, limit)
                finally:
                    self.connection.settimeout(None)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, 0o644)  # readable by whoever serves it, as a file copied in would be
            os.replace(temp, target)
            _fsync_dir(target.parent)
            return None
        except _BodyError as exc:
            return exc.status, exc.message
        except OSError as exc:
            log.warning("upload of %s failed: %s", target, exc)
            return HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot store the file: {exc.strerror or exc}"
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)  # only there when the upload failed

    def _upload_target(self) -> Path | tuple[HTTPStatus, str]:
        """Where an upload goes (parent directories made), or why not; never out of DIR through a symlink."""
        path = self._resolve()
        if path is None or path == self.server.root or urlsplit(self.path).path.endswith("/"):
            return HTTPStatus.BAD_REQUEST, "path refused: a PUT names a file under the DP's directory"
        existing = path.parent
        while not existing.exists() and not existing.is_symlink():
            existing = existing.parent
        if not existing.resolve().is_relative_to(self.server.root):
            return HTTPStatus.BAD_REQUEST, "path refused: it leads out of the DP's directory"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return HTTPStatus.CONFLICT, f"cannot make the directory: {exc.strerror}"
        if path.is_symlink() or path.is_dir():
            return HTTPStatus.CONFLICT, "a symlink or a directory is there: not replaced by an upload"
        return path

    def _receive(self, out: BinaryIO, length: int | None, limit: int | None) -> int:
        """Copy the request's body into ``out``; _BodyError when it is short, malformed or too large."""
        total = 0

        def copy(count: int) -> None:
            nonlocal total
            total += count
            if limit is not None and total > limit:
                raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"uploads are at most {limit} bytes here")
            while count:
                data = self.rfile.read(min(count, _PIECE))
                if not data:
                    raise _BodyError(HTTPStatus.BAD_REQUEST, "the body ended early")
                out.write(data)
                count -= len(data)

        try:
            if length is not None:
                copy(length)
                return total
            while True:
                line = self.rfile.readline(1024)
                try:
                    count = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _BodyError(HTTPStatus.BAD_REQUEST, "malformed chunked body") from None
                if count == 0:
                    while self.rfile.readline(1024).strip():  # trailers, up to the empty line
                        pass
                    return total
                copy(count)
                if self.rfile.readline(1024).strip():
                    raise _BodyError(HTTPStatus.BAD_REQUEST, "malformed chunked body")
        except TimeoutError:
            raise _BodyError(HTTPStatus.REQUEST_TIMEOUT, "the body stalled") from None

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
            self.send_header("Content-Type", _CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
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

    def _end_headers(self) -> None:
        if self.close_connection:
            # Say so: a client that keeps the connection for its next request would find it closed under it.
            self.send_header("Connection", "close")
        self.end_headers()

    def _error(self, status: HTTPStatus, message: str, body: bool = True,
               headers: dict[str, str] | None = None) -> None:
        data = (message + "\n").encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self._end_headers()
        if body:
            self.wfile.write(data)


class _BodyError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def serve(root: Path, bind: str, port: int, status_log: Path | None = None, *, upload_token: str | None = None,
          max_upload: int | None = None, db: Path | None = None, config: Path | None = None,
          admin_token: Secret | None = None, public_url: str | None = None) -> DPServer:
    """A started-but-not-serving DPServer; call serve_forever() (or run it in a thread).

    With ``upload_token``, PUTs carrying it as a bearer token store files (at most ``max_upload``
    bytes each, when given). ``db`` is the status database (else a temporary one), ``config`` the
    assignments (else ``DIR/peagent-serve.json`` if there is one), ``admin_token`` lets an
    administrator approve, postpone and cancel, ``public_url`` is the URL machines reach the
    server at (else the Host they asked), and ``status_log`` gets a JSON-lines copy of the events.
    """
    if not root.is_dir():
        raise UsageError(f"cannot serve {root}: not a directory")
    for name, token in (("upload", upload_token), ("admin", admin_token.reveal() if admin_token else None)):
        if token is not None and len(token) < 16:
            raise UsageError(f"the {name} token is too short to keep anyone out: use 16 characters or more "
                             "(e.g. from `openssl rand -hex 16`)")
    try:
        return DPServer((bind, port), root, status_log, upload_token, max_upload, db=db, config=config,
                        admin_token=admin_token, public_url=public_url)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    except AssignmentError as exc:
        raise UsageError(f"the assignments are wrong: {exc}") from None
    except ScriptError as exc:
        raise UsageError(f"--public-url: {exc}") from None
