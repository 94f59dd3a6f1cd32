"""A fault-injecting HTTP proxy for tests: a real server behind it, a scripted bad network in front.

The agent's fetching code (``peagent.fetch``, and the stream and frame writers above it) must turn
every kind of bad link into either the right bytes or a precise error. This proxy sits between it
and a real DP (nginx from :mod:`tests.support.nginx`, or ``peagent serve``) and forwards each
request (``GET``/``HEAD``/``POST``, with ``Range``, ``If-Match``, ``If-Range`` and the rest) to the
server, misbehaving on a deterministic schedule of :class:`Fault` events::

    schedule = FaultSchedule([
        Fault("drop", offset=300_000),                   # reset the connection before file byte 300000
        Fault("status", request=1, status=503, retry_after="1"),
        Fault("stall", offset=1 << 20, seconds=None),    # go silent (socket open) until the client gives up
        Fault("flip", offset=5_000_000, times=None),     # corrupt this byte in every response carrying it
    ])
    with FaultProxy(nginx.url, schedule) as proxy:
        reader = RangeReader([proxy.url + "images/blob.img"], ...)
        ...
        print(proxy.report())          # the schedule, what fired where, every request and its bytes
        proxy.body_bytes()             # body bytes handed to clients: minus the file size = extra fetched

The kinds (:data:`KINDS`):

================  ====================================================================================
``drop``          reset the connection (RST) before the byte at ``offset``: what a crashed link does
``truncate``      close cleanly (FIN) before ``offset``, though Content-Length announced more
``stall``         stop sending before ``offset`` for ``seconds`` (None: until the client hangs up or the
                  proxy stops), keeping the socket open; then carry on (if the client is still there)
``status``        answer ``status`` (500/502/503, ...) with ``Retry-After: retry_after`` when given;
                  the server is not asked
``flip``          XOR the byte at ``offset`` with ``mask``: corrupt data, same length
``bad-range``     a 206 whose Content-Range is moved by ``shift`` bytes (the body is right, the label not)
``ignore-range``  forward without Range/If-Range: the server answers 200 with the whole file
``swap``          serve the file at path ``to`` instead (a blob replaced on the DP); its own ETag, so
                  If-Match fails, or with ``same_etag`` the original's ETag and no If-Match upstream
                  (a broken cache); usually ``times=None``, "from request N on"
``slow``          send this response at ``rate`` bytes per second
================  ====================================================================================

When a fault strikes:

* ``request``: the first request number (0-based, counted in arrival order over all connections) it
  may strike; None: any. A fault that cannot strike a request (its offset lies outside that
  response) stays armed for the next.
* ``times``: how often it strikes; None: every time it can (a permanent fault).
* ``path``: only requests for this path (None: any); ``method`` likewise (default: GET only).
* ``offset`` with ``origin``: ``"file"`` counts bytes of the file, so the fault strikes whichever
  response carries that byte (a resumed request from an earlier byte, one of many small ranges, a
  part of a multipart/byteranges answer); ``"body"`` counts bytes of the response body;
  ``"headers"`` (drop, truncate, stall) strikes before any byte of the answer.

:meth:`FaultSchedule.random` draws a schedule from a seed (the same seed, the same schedule), so a
failing test prints its seed and schedule and can be replayed. Every strike is recorded
(:attr:`FaultProxy.fired`, with the request, connection and offsets), and so is every request
(:attr:`FaultProxy.exchanges`: method, path, Range, status, announced length, body bytes sent).
Body bytes "sent" are those handed to the client's kernel; a reset discards what the proxy's own
socket had not yet transmitted, and that is subtracted.

Counting. Each :class:`Exchange` has ``sent``, the body bytes handed to the client, and
``first_byte``, the file offset its body starts at; :meth:`FaultProxy.body_bytes` sums them, and
minus what the client needed that is the extra it fetched. A reset waits (up to 2 s) until the
client's kernel has acknowledged everything sent, so a client that is reading gets exactly the
bytes before ``offset`` and then the reset (a receiver reads what it holds before it sees one).
The proxy's send buffer is kept small (``sndbuf``, 128 KiB) so that an answer a client abandons
unread costs a bounded amount in flight (measured: up to ~320 KiB on loopback) rather than
megabytes. Call :meth:`FaultProxy.wait_idle` before comparing counts: a client may have read the
last byte before the proxy's thread counted it.

The proxy serves each client connection in a thread of its own (keep-alive honoured, one upstream
connection per client connection), so parallel clients are fine; the schedule is shared and
claimed under a lock, so a ``times=1`` fault strikes once whichever connection meets it first.
Faults can be added while it runs (:meth:`FaultProxy.add`). Optionally the proxy lives in a
network namespace (``ns=``): it then listens there and reaches the server from there.

For a frame engine (many small ``Range: bytes=a-b`` requests over a few connections, several DPs):
a ``"file"`` offset inside a frame strikes the one request that carries that frame, whichever
connection sends it, and a resumed or retried request carries it again only if ``times`` allows;
multipart/byteranges answers are parsed so that file offsets land in the right part. One proxy per
DP gives per-DP behaviour::

    bad = FaultSchedule([Fault("flip", offset=frame_offset + 7, times=None)])   # DP A corrupts a frame
    flaky = FaultSchedule.random(seed, blob_size, 6, path="/images/x.blob")     # DP B is merely flaky
    with FaultProxy(nginx.url, bad) as a, FaultProxy(nginx.url, flaky) as b:
        ...  # the engine must fetch the frame again from B, and account for every byte
        fired_on_a = [f for f in a.fired if f.fault.kind == "flip"]
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import io
import random
import re
import select
import socket
import socketserver
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tests.support.netns import Netns

KINDS = ("drop", "truncate", "stall", "status", "flip", "bad-range", "ignore-range", "swap", "slow")
# Faults a correct client gets through with the right bytes; the others make some outcomes impossible.
RECOVERABLE = ("drop", "truncate", "stall", "status", "bad-range", "ignore-range", "slow")
ORIGINS = ("file", "body", "headers")

_CHUNK = 64 << 10  # bytes per read from the server and per send to the client
_SIOCOUTQ = 0x5411  # Linux (TIOCOUTQ): bytes in a socket's send queue not yet acknowledged by the peer
_DRAIN = 2.0  # seconds a reset waits for the client's kernel to take what was sent
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "proxy-connection"}
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour; see the module docstring for what each field means."""

    kind: str
    request: int | None = None
    offset: int | None = None
    origin: str = "file"
    times: int | None = 1
    path: str | None = None
    method: str = "GET"
    seconds: float | None = None  # stall
    status: int = 503  # status
    retry_after: str | None = None  # status
    mask: int = 0x01  # flip
    shift: int = 1  # bad-range
    to: str | None = None  # swap
    same_etag: bool = False  # swap
    rate: int = 1 << 20  # slow, bytes per second

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.origin not in ORIGINS:
            raise ValueError(f"unknown origin {self.origin!r}; expected one of {', '.join(ORIGINS)}")
        positional = self.kind in ("drop", "truncate", "stall", "flip")
        if positional and self.origin != "headers" and (self.offset is None or self.offset < 0):
            raise ValueError(f"{self.kind} needs an offset >= 0 (or origin='headers')")
        if self.kind == "flip" and (self.origin == "headers" or not 0 < self.mask < 256):
            raise ValueError("flip needs an offset in the body or file and a mask of 1..255")
        if self.kind == "swap" and not self.to:
            raise ValueError("swap needs the path of the other file (to=)")
        if self.kind == "slow" and self.rate <= 0:
            raise ValueError("slow needs a rate > 0 (bytes per second)")

    def describe(self) -> str:
        """The fault as a constructor call with only the fields that differ from the defaults."""
        args = [repr(self.kind)]
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value != f.default:
                args.append(f"{f.name}={value!r}")
        return f"Fault({', '.join(args)})"

    @property
    def positional(self) -> bool:
        """Whether it strikes at a byte of the answer rather than at the request or its headers."""
        return self.kind in ("drop", "truncate", "stall", "flip") and self.origin != "headers"


@dataclass
class FaultSchedule:
    """The faults of one run, and the seed they were drawn from (if any)."""

    faults: list[Fault] = field(default_factory=list)
    seed: int | None = None

    def __iter__(self) -> Iterator[Fault]:
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)

    def __add__(self, other: Iterable[Fault]) -> FaultSchedule:
        return FaultSchedule([*self.faults, *other], self.seed)

    @property
    def recoverable(self) -> bool:
        """Whether a correct client must end with the right bytes despite every fault here."""
        return all(f.kind in RECOVERABLE for f in self.faults)

    def __str__(self) -> str:
        head = f"FaultSchedule (seed {self.seed})" if self.seed is not None else "FaultSchedule"
        return "\n".join([f"{head}, {len(self.faults)} faults:",
                          *(f"  [{i}] {f.describe()}" for i, f in enumerate(self.faults))])

    @classmethod
    def random(
        cls,
        seed: int,
        file_size: int,
        n_faults: int,
        kinds: Sequence[str] = RECOVERABLE,
        *,
        path: str | None = None,
        other: str | None = None,
        stall_seconds: Sequence[float | None] = (0.2, None),
        statuses: Sequence[int] = (500, 502, 503),
        retry_after: Sequence[str | None] = (None, "0", "1", "120"),
    ) -> FaultSchedule:
        """``n_faults`` faults of ``kinds`` drawn from ``seed``: deterministic, so replayable.

        Positional faults strike at uniformly drawn file offsets (a few before the answer's
        headers instead); the others from a request number below ``2 * n_faults + 2``. ``slow``
        rates are drawn so that one slow response of the whole file takes at most about a second.
        ``swap`` needs ``other``, the path of the file to serve instead; it is permanent.
        """
        rng = random.Random(seed)
        horizon = 2 * n_faults + 2
        faults = []
        for _ in range(n_faults):
            kind = rng.choice(list(kinds))
            common: dict = {"path": path}
            if kind in ("drop", "truncate", "stall", "flip"):
                if kind != "flip" and rng.random() < 0.15:
                    common.update(origin="headers")
                else:
                    common.update(offset=rng.randrange(file_size))
                if kind == "stall":
                    common.update(seconds=rng.choice(list(stall_seconds)))
                if kind == "flip":
                    common.update(mask=1 << rng.randrange(8))
            else:
                common.update(request=rng.randrange(horizon))
                if kind == "status":
                    common.update(status=rng.choice(list(statuses)), retry_after=rng.choice(list(retry_after)))
                elif kind == "bad-range":
                    common.update(shift=rng.choice([-65536, -4096, -1, 1, 512, 100_000]))
                elif kind == "slow":
                    common.update(rate=max(64 << 10, file_size * rng.choice([1, 2, 4])))
                elif kind == "swap":
                    if other is None:
                        raise ValueError("a random schedule with swap needs other= (the file to swap in)")
                    common.update(to=other, same_etag=rng.random() < 0.5, times=None)
            faults.append(Fault(kind, **common))
        return cls(faults, seed)


@dataclass(frozen=True)
class Fired:
    """A fault that struck: which, on which request and connection, and where."""

    index: int  # in the schedule (faults added later continue the numbering)
    fault: Fault
    request: int
    connection: int
    path: str
    body_offset: int | None = None
    file_offset: int | None = None

    def describe(self) -> str:
        where = ""
        if self.body_offset is not None:
            where = f" at body byte {self.body_offset}"
            if self.file_offset is not None:
                where += f" (file byte {self.file_offset})"
        return f"[{self.index}] {self.fault.kind} on request {self.request} (connection {self.connection}, " \
               f"{self.path}){where}"


@dataclass
class Exchange:
    """One request through the proxy, and what became of it."""

    number: int
    connection: int
    method: str
    path: str
    headers: dict[str, str]  # the request's Range, If-Match, If-Range, If-None-Match when present
    upstream_path: str | None = None  # what the server was asked for (None: it was not asked)
    status: int | None = None
    length: int | None = None  # the Content-Length announced to the client
    first_byte: int | None = None  # the file offset of the body's first byte (single range or 200)
    sent: int = 0  # body bytes handed to the client (less what a reset discarded)
    faults: list[str] = field(default_factory=list)
    outcome: str = "pending"  # complete, reset, truncated, stalled, client-gone, upstream-error, ...

    @property
    def interrupted(self) -> bool:
        return self.outcome not in ("complete", "pending")

    def describe(self) -> str:
        hdrs = " ".join(f"{k}={v}" for k, v in self.headers.items())
        up = "" if self.upstream_path in (None, self.path) else f" -> {self.upstream_path}"
        faults = f" faults={','.join(self.faults)}" if self.faults else ""
        return (f"#{self.number} c{self.connection} {self.method} {self.path}{up} {hdrs} -> {self.status} "
                f"len={self.length} first={self.first_byte} sent={self.sent} {self.outcome}{faults}")


@dataclass
class _Strike:
    """A fault claimed for one response, and where in its body it strikes."""

    index: int
    fault: Fault
    body_offset: int | None
    file_offset: int | None
    done: bool = False


class _Gone(Exception):
    """The client hung up (or the proxy is stopping): nothing more to send on this connection."""


class FaultProxy:
    """The proxy; a context manager that starts it and gives itself (``.url`` is the base URL)."""

    def __init__(self, upstream: str, schedule: FaultSchedule | Sequence[Fault] = (), *,
                 ns: Netns | None = None, host: str = "127.0.0.1", port: int = 0,
                 sndbuf: int | None = 128 << 10) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_prefix = parts.path.rstrip("/")
        self.schedule = schedule if isinstance(schedule, FaultSchedule) else FaultSchedule(list(schedule))
        self.ns = ns
        self.sndbuf = sndbuf
        self._faults: list[Fault] = list(self.schedule.faults)
        self._remaining: list[int | None] = [f.times for f in self._faults]
        self._lock = threading.Lock()
        self._next_request = 0
        self._next_connection = 0
        self._exchanges: list[Exchange] = []
        self._fired: list[Fired] = []
        self._stopping = threading.Event()
        self._live: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._errors: list[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve_connection(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 64  # parallel clients connect in bursts

            def handle_error(self, request: object, client_address: object) -> None:
                proxy._errors.append(traceback.format_exc())

        def make_server() -> Server:
            return Server((host, port), Handler)

        self._server = ns.call(make_server) if ns else make_server()
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/"
        self._thread: threading.Thread | None = None

    # --- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, end stalls, hang up on every client, and wait (briefly) for the threads."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()
        with self._lock:
            live = list(self._live.values())
        for sock, _ in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in live:
            thread.join(5)

    # --- what happened ----------------------------------------------------------------------

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    @property
    def fired(self) -> list[Fired]:
        with self._lock:
            return list(self._fired)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of the proxy's own bugs (a test should assert there are none)."""
        return list(self._errors)

    def body_bytes(self, path: str | None = None, method: str = "GET") -> int:
        """Body bytes sent to clients (for ``path``, or all), to compare with what was needed."""
        return sum(e.sent for e in self.exchanges if e.method == method and (path is None or e.path == path))

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every request has been answered (or broken off) to its end.

        A client may have read the last byte before the proxy's thread has counted it: call this
        before comparing counts.
        """
        deadline = time.monotonic() + timeout
        while any(e.outcome == "pending" for e in self.exchanges):
            if time.monotonic() > deadline:
                raise TimeoutError(f"requests still pending after {timeout} s:\n{self.report()}")
            time.sleep(0.01)

    def add(self, *faults: Fault) -> None:
        """Arm more faults while the proxy runs (numbered after the schedule's)."""
        with self._lock:
            self._faults.extend(faults)
            self._remaining.extend(f.times for f in faults)

    def report(self) -> str:
        """Schedule, strikes and requests: what to print when a test fails."""
        with self._lock:
            extra = self._faults[len(self.schedule.faults):]
            lines = [str(self.schedule)]
            lines += [f"  [{len(self.schedule.faults) + i}] {f.describe()} (added)" for i, f in enumerate(extra)]
            lines.append(f"fired ({len(self._fired)}):")
            lines += [f"  {f.describe()}" for f in self._fired]
            lines.append(f"requests ({len(self._exchanges)}):")
            lines += [f"  {e.describe()}" for e in self._exchanges]
            if self._errors:
                lines.append("proxy errors:")
                lines += self._errors
        return "\n".join(lines)

    # --- serving ----------------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket) -> None:
        with self._lock:
            conn_id = self._next_connection
            self._next_connection += 1
            self._live[conn_id] = (sock, threading.current_thread())
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.sndbuf:
            # Loopback would otherwise let megabytes sit in the kernel, sent but never read.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        rfile = sock.makefile("rb")
        upstream = _Upstream(self.upstream_host, self.upstream_port, self.ns)
        try:
            while not self._stopping.is_set():
                request = _read_request(rfile)
                if request is None:
                    return
                if not self._serve_request(sock, conn_id, upstream, *request):
                    return
        except (_Gone, OSError):
            return
        finally:
            upstream.close()
            rfile.close()
            with self._lock:
                self._live.pop(conn_id, None)

    def _serve_request(self, sock: socket.socket, conn_id: int, upstream: _Upstream, method: str, target: str,
                       version: str, headers: http.client.HTTPMessage, body: bytes) -> bool:
        """Answer one request (faults included); whether the connection stays open for another."""
        path = target.split("?", 1)[0]
        shown = {k: headers[k] for k in ("Range", "If-Match", "If-Range", "If-None-Match") if k in headers}
        with self._lock:
            number = self._next_request
            self._next_request += 1
            exch = Exchange(number, conn_id, method, path, shown)
            self._exchanges.append(exch)
        try:
            return self._answer(sock, exch, upstream, method, target, version, headers, body)
        except BaseException:
            if exch.outcome == "pending":
                exch.outcome = "client-gone"
            raise

    def _answer(self, sock: socket.socket, exch: Exchange, upstream: _Upstream, method: str, target: str,
                version: str, headers: http.client.HTTPMessage, body: bytes) -> bool:
        number, path = exch.number, exch.path
        with self._lock:
            before = self._claim(number, method, path, ("headers",))
        keep_alive = version == "HTTP/1.1" and headers.get("Connection", "").lower() != "close"

        # Before the answer: a stall, then a reset or a close instead of any answer.
        try:
            for strike in before:
                self._fire(strike, exch)
                if strike.fault.kind == "stall":
                    exch.outcome = "stalled"
                    self._stall(sock, strike.fault.seconds)
                    exch.outcome = "pending"
                else:
                    self._hang_up(sock, exch, reset=strike.fault.kind == "drop")
                    return False
        finally:
            self._release(before)
        with self._lock:
            pre = self._claim(number, method, path, ("status", "ignore-range", "swap"))
        status_fault = next((s for s in pre if s.fault.kind == "status"), None)
        if status_fault is not None:
            self._release(s for s in pre if s is not status_fault)
            self._fire(status_fault, exch)
            self._answer_status(sock, exch, status_fault.fault)
            return keep_alive

        fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
        upstream_path = path
        fake_etag: str | None = None
        for strike in pre:
            self._fire(strike, exch)
            if strike.fault.kind == "ignore-range":
                _drop_headers(fwd, "Range", "If-Range")
            elif strike.fault.kind == "swap":
                upstream_path = strike.fault.to or path
                if strike.fault.same_etag:
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        fake_etag = upstream.etag_of(self.upstream_prefix + path)
                    _drop_headers(fwd, "If-Match", "If-None-Match", "If-Range")
        if upstream_path != path:
            target = upstream_path + target[len(path):]
        exch.upstream_path = upstream_path
        try:
            response = upstream.request(method, self.upstream_prefix + target, fwd, body)
        except (OSError, http.client.HTTPException) as exc:
            exch.outcome = "upstream-error"
            self._answer_status(sock, exch, Fault("status", status=502), note=f"upstream: {exc}")
            return keep_alive
        try:
            return self._relay(sock, exch, upstream, response, method, path, fake_etag) and keep_alive
        finally:
            if not response.isclosed():
                upstream.close()  # an answer not read to its end spoils the connection

    def _relay(self, sock: socket.socket, exch: Exchange, upstream: _Upstream, response: http.client.HTTPResponse,
               method: str, path: str, fake_etag: str | None) -> bool:
        """Pass the server's answer on, with the positional faults that fall inside it."""
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        length_text = response.getheader("Content-Length")
        source: Callable[[int], bytes] = response.read
        if method == "HEAD" or response.status in (204, 304):
            length = 0
        elif length_text is None:
            # A chunked (or close-delimited) answer: buffered, so that the client gets a length.
            data = response.read()
            source = io.BytesIO(data).read
            length = len(data)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(length)))
        else:
            length = int(length_text)
        segments, content_range = self._segments(response, length)
        if response.status == 206 and response.getheader("Content-Type", "").startswith("multipart/"):
            # Many ranges in one answer: buffered and parsed, so that file offsets map into its parts.
            data = response.read()
            source = io.BytesIO(data).read
            segments = _multipart_segments(data, response.getheader("Content-Type", ""))
        exch.status = response.status
        exch.length = int(length_text) if length_text is not None else length
        exch.first_byte = segments[0][2] if len(segments) == 1 else None

        strikes: list[_Strike] = []
        if response.status in (200, 206) and method != "HEAD":  # data, not an error page
            with self._lock:
                strikes = self._claim_positional(exch.number, method, path, length, segments, response.status,
                                                 content_range is not None)
        if fake_etag is not None:
            headers = [(k, fake_etag if k.lower() == "etag" else v) for k, v in headers]
        bad_range = next((s for s in strikes if s.fault.kind == "bad-range"), None)
        if bad_range is not None and content_range is not None:
            start, end, total = content_range
            shift = bad_range.fault.shift if start + bad_range.fault.shift >= 0 else abs(bad_range.fault.shift)
            headers = [(k, f"bytes {start + shift}-{end + shift}/{total}" if k.lower() == "content-range" else v)
                       for k, v in headers]
        head = [f"HTTP/1.1 {response.status} {response.reason}"] + [f"{k}: {v}" for k, v in headers]
        for strike in strikes:
            if strike.fault.kind in ("bad-range", "slow"):
                self._fire(strike, exch)
        _send_all(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if method == "HEAD":
            exch.outcome = "complete"
            return True
        rate = min((s.fault.rate for s in strikes if s.fault.kind == "slow"), default=0)
        try:
            outcome = self._send_body(sock, exch, source, length, [s for s in strikes if s.fault.positional], rate)
        finally:
            self._release(s for s in strikes if not s.done)
        exch.outcome = outcome
        return outcome == "complete"

    def _segments(self, response: http.client.HTTPResponse,
                  length: int) -> tuple[list[tuple[int, int, int]], tuple[int, int, str] | None]:
        """(body start, length, file start) of the file's bytes in a body; and a single 206's range."""
        if response.status == 200:
            return [(0, length, 0)], None
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.getheader("Content-Range", "").strip())
        if response.status == 206 and m:
            start, end = int(m.group(1)), int(m.group(2))
            return [(0, length, start)], (start, end, m.group(3))
        return [], None

    # --- faults -----------------------------------------------------------------------------

    def _matches(self, index: int, number: int, method: str, path: str) -> bool:
        f = self._faults[index]
        return (self._remaining[index] != 0 and (f.request is None or number >= f.request)
                and (f.path is None or f.path == path) and f.method == method)

    def _claim(self, number: int, method: str, path: str, what: tuple[str, ...]) -> list[_Strike]:
        """Claim (under the lock) the request-level faults armed for this request, one of each kind.

        ``("headers",)`` asks for the faults that strike before the answer: a stall first.
        """
        out: list[_Strike] = []
        for i, f in enumerate(self._faults):
            if what == ("headers",):
                hit = f.origin == "headers" and f.kind in ("stall", "drop", "truncate")
            else:
                hit = f.kind in what
            if hit and self._matches(i, number, method, path) and not any(s.fault.kind == f.kind for s in out):
                out.append(self._take(i))
        out.sort(key=lambda s: s.fault.kind != "stall")
        return out

    def _claim_positional(self, number: int, method: str, path: str, length: int,
                          segments: list[tuple[int, int, int]], status: int, single: bool) -> list[_Strike]:
        """Claim the faults that strike inside this answer, up to the first that ends it."""
        found: list[_Strike] = []
        for i, f in enumerate(self._faults):
            if not self._matches(i, number, method, path):
                continue
            if f.kind in ("slow", "bad-range"):
                # One of each per answer; a wrong Content-Range needs a single-range 206 to lie in.
                fits = length > 0 if f.kind == "slow" else status == 206 and single
                if fits and not any(s.fault.kind == f.kind for s in found):
                    found.append(_Strike(i, f, None, None))
            elif f.positional:
                at = _locate(f, length, segments)
                if at is not None:
                    found.append(_Strike(i, f, *at))
        order = {"flip": 0, "stall": 1, "truncate": 2, "drop": 2}
        found.sort(key=lambda s: (s.body_offset if s.body_offset is not None else -1, order.get(s.fault.kind, 0)))
        claimed = []
        for strike in found:
            claimed.append(self._take(strike.index, strike))
            ends = strike.fault.kind in ("drop", "truncate") or (strike.fault.kind == "stall"
                                                                 and strike.fault.seconds is None)
            if ends:
                break
        return claimed

    def _take(self, index: int, strike: _Strike | None = None) -> _Strike:
        remaining = self._remaining[index]
        if remaining is not None:
            self._remaining[index] = remaining - 1
        return strike or _Strike(index, self._faults[index], None, None)

    def _release(self, strikes: Iterable[_Strike]) -> None:
        """Re-arm faults claimed for an answer that ended before they could strike."""
        with self._lock:
            for s in strikes:
                if not s.done and self._remaining[s.index] is not None:
                    self._remaining[s.index] += 1  # type: ignore[operator]

    def _fire(self, strike: _Strike, exch: Exchange) -> None:
        strike.done = True
        with self._lock:
            self._fired.append(Fired(strike.index, strike.fault, exch.number, exch.connection, exch.path,
                                     strike.body_offset, strike.file_offset))
            exch.faults.append(f"{strike.fault.kind}[{strike.index}]")

    # --- sending ----------------------------------------------------------------------------

    def _send_body(self, sock: socket.socket, exch: Exchange, source: Callable[[int], bytes], length: int,
                   strikes: list[_Strike], rate: int) -> str:
        flips = {s.body_offset: s for s in strikes if s.fault.kind == "flip"}
        cuts = [s for s in strikes if s.fault.kind != "flip"]
        started = time.monotonic()
        pos = 0
        try:
            while True:
                while cuts and cuts[0].body_offset == pos:
                    cut = cuts.pop(0)
                    self._fire(cut, exch)
                    if cut.fault.kind == "stall":
                        exch.outcome = "stalled"
                        self._stall(sock, cut.fault.seconds)
                        exch.outcome = "pending"  # the client waited it out: carry on
                        continue
                    self._hang_up(sock, exch, reset=cut.fault.kind == "drop")
                    return exch.outcome
                if pos >= length:
                    return "complete"
                limit = cuts[0].body_offset if cuts else length
                data = source(min(_CHUNK, limit - pos))  # type: ignore[operator]
                if not data:
                    self._hang_up(sock, exch, reset=False)
                    return "upstream-short"
                hits = [o for o in flips if pos <= o < pos + len(data)]  # type: ignore[operator]
                if hits:
                    buf = bytearray(data)
                    for o in hits:
                        buf[o - pos] ^= flips[o].fault.mask  # type: ignore[operator]
                        self._fire(flips.pop(o), exch)
                    data = bytes(buf)
                self._send_counted(sock, exch, data, started, rate)
                pos += len(data)
        except (_Gone, OSError):
            return "stalled" if exch.outcome == "stalled" else "client-gone"

    def _send_counted(self, sock: socket.socket, exch: Exchange, data: bytes, started: float, rate: int) -> None:
        view = memoryview(data)
        step = max(1, rate // 50) if rate else len(view)
        while view:
            if self._stopping.is_set():
                raise _Gone
            n = sock.send(view[:step])
            exch.sent += n
            view = view[n:]
            if rate:
                ahead = (exch.sent / rate) - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def _stall(self, sock: socket.socket, seconds: float | None) -> None:
        """Send nothing for ``seconds`` (None: forever), returning early only to raise _Gone."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            if self._stopping.is_set() or _hung_up(sock, 0.05):
                raise _Gone
        if _hung_up(sock, 0):
            raise _Gone

    def _hang_up(self, sock: socket.socket, exch: Exchange, reset: bool) -> None:
        """Reset (RST) or close cleanly (FIN) after the bytes sent so far.

        A reset discards what the proxy's socket still holds. So that "drop at byte X" means the
        client got exactly X bytes (a receiver reads what it holds before it sees the reset), the
        reset waits until the client's kernel has acknowledged everything, for a while: a client
        that does not read by then loses the rest, which is subtracted from the bytes sent.
        """
        if reset:
            deadline = time.monotonic() + _DRAIN
            unacked = _unacked(sock)
            while unacked and time.monotonic() < deadline and not self._stopping.is_set():
                time.sleep(0.002)
                unacked = _unacked(sock)
            exch.sent = max(0, exch.sent - unacked)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            exch.outcome = "reset"
        else:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            exch.outcome = "truncated"
        # Marked closed now; the descriptor goes (and with SO_LINGER 0 the RST with it) when the
        # serving loop closes its reader, before socketserver's shutdown(SHUT_WR) could send a FIN.
        sock.close()

    def _answer_status(self, sock: socket.socket, exch: Exchange, fault: Fault, note: str = "") -> None:
        body = f"{fault.status} (fault injected by the test proxy){': ' + note if note else ''}\n".encode()
        lines = [f"HTTP/1.1 {fault.status} {_REASONS.get(fault.status, 'Error')}",
                 "Content-Type: text/plain", f"Content-Length: {len(body)}"]
        if fault.retry_after is not None:
            lines.append(f"Retry-After: {fault.retry_after}")
        exch.status = fault.status
        exch.length = len(body)
        _send_all(sock, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        if exch.outcome == "pending":
            exch.outcome = "complete"


class _Connection(http.client.HTTPConnection):
    """An HTTP connection whose socket is made in a network namespace when one is given."""

    def __init__(self, host: str, port: int, ns: Netns | None) -> None:
        super().__init__(host, port, timeout=30)
        self.ns = ns

    def connect(self) -> None:
        def make() -> socket.socket:
            return socket.create_connection((self.host, self.port), self.timeout)

        self.sock = self.ns.call(make) if self.ns else make()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Upstream:
    """The proxy's keep-alive connection to the server, on behalf of one client connection."""

    def __init__(self, host: str, port: int, ns: Netns | None) -> None:
        self.host, self.port, self.ns = host, port, ns
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        return _Connection(self.host, self.port, self.ns)

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> http.client.HTTPResponse:
        # A kept-alive connection the server has since closed fails at once: try a fresh one.
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request(method, target, body=body or None,
                                  headers={**headers, "Host": f"{self.host}:{self.port}"})
                return self.conn.getresponse()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def etag_of(self, path: str) -> str | None:
        response = self.request("HEAD", path, {}, b"")
        response.read()
        return response.getheader("ETag")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _read_request(rfile: io.BufferedReader) -> tuple[str, str, str, http.client.HTTPMessage, bytes] | None:
    """The next request on a connection (method, target, version, headers, body); None at its end."""
    line = rfile.readline(65537)
    while line in (b"\r\n", b"\n"):  # stray empty lines between requests are allowed
        line = rfile.readline(65537)
    if not line:
        return None
    try:
        method, target, version = line.decode("latin-1").split()
    except ValueError:
        return None
    headers = http.client.parse_headers(rfile)
    length = int(headers.get("Content-Length", "0") or 0)
    body = rfile.read(length) if length else b""
    return method, target, version, headers, body


def _locate(f: Fault, length: int, segments: list[tuple[int, int, int]]) -> tuple[int, int | None] | None:
    """(body offset, file offset) where a positional fault strikes in this body, or None."""
    assert f.offset is not None
    if f.origin == "body":
        if f.offset >= length:
            return None
        for body_start, n, file_start in segments:
            if body_start <= f.offset < body_start + n:
                return f.offset, file_start + f.offset - body_start
        return f.offset, None
    for body_start, n, file_start in segments:
        if file_start <= f.offset < file_start + n:
            return body_start + f.offset - file_start, f.offset
    return None


def _multipart_segments(data: bytes, content_type: str) -> list[tuple[int, int, int]]:
    """Where each part's bytes sit in a multipart/byteranges body, and which file bytes they are."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return []
    delimiter = b"--" + m.group(1).encode()
    segments = []
    pos = data.find(delimiter)
    while pos >= 0:
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            break
        head = data[pos:head_end].decode("latin-1")
        r = re.search(r"(?im)^content-range:\s*bytes (\d+)-(\d+)/", head)
        if not r:
            break
        start, end = int(r.group(1)), int(r.group(2))
        segments.append((head_end + 4, end - start + 1, start))
        pos = data.find(delimiter, head_end + 4 + end - start + 1)
    return segments


def _drop_headers(headers: dict[str, str], *names: str) -> None:
    lower = {n.lower() for n in names}
    for k in [k for k in headers if k.lower() in lower]:
        del headers[k]


def _send_all(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        raise _Gone from None


def _unacked(sock: socket.socket) -> int:
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def _hung_up(sock: socket.socket, timeout: float) -> bool:
    """Whether the client closed its end (or the socket broke) within ``timeout`` seconds."""
    try:
        readable, _, errored = select.select([sock], [], [sock], timeout)
        if errored:
            return True
        if readable:
            return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
    return False
