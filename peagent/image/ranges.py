"""Fetching byte ranges of image blobs: parallel, resumed, from the best DP, handed out as they arrive.

A write asks for ranges (peagent.image.extents merges the frames it needs into them);
:class:`RangeFetcher` fetches them over a few connections at once (one ``requests.Session`` per
worker thread) and hands them out in order, each as soon as it starts (:class:`Fetched`: a
consumer takes a range's first frames while the rest is on the way), with a bounded number in
flight, so memory stays flat whatever the image's size. Ranges are sized from the recent
throughput (:meth:`RangeFetcher.span_hint`): about half a second per connection, from 256 KiB to
4 MiB, so a slow link never holds much half-fetched data (which a crash would lose).

Each range survives a bad link on its own. A dropped connection, a stall (no byte within the read
timeout), a 5xx, a short answer or a wrong ``Content-Range`` costs only the bytes in flight: the
range continues from its first missing byte, on the same DP or another. Retries wait with
exponential backoff and jitter (tenacity), and give up after ``attempts`` failures in a row
without a byte of progress. ``If-Match`` with each DP's ETag makes a blob that changed on a DP an
error for that DP, never a splice of two versions; so does a blob of the wrong size (each answer
is judged by :func:`peagent.image.dps.check_answer`).

With several DPs, each request goes to the DP that looks fastest (peagent.image.dps); a failing
DP cools down before it is tried again, and a DP much slower than the best is left mid-range. An
optional token bucket caps the bandwidth of all workers together. A blob may also be a local
file (an image on a USB stick).
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import urlsplit

import requests
import tenacity

from peagent.errors import FetchError
from peagent.fetch import ATTEMPTS, CONNECT_TIMEOUT, READ_TIMEOUT, TRANSIENT, brief, is_url
from peagent.image.dps import (
    PIECE,
    DPUrl,
    OriginStats,
    RateLimit,
    Retry,
    check_answer,
    choose,
    origin_of,
    session_with_ca,
)
from peagent.image.extents import MAX_SPAN, Range

log = logging.getLogger(__name__)

MIN_SPAN = 256 << 10  # ... and at least, unless the extents are smaller
FIRST_SPAN = 1 << 20  # before any throughput is known
RANGE_SECONDS = 0.5  # a range should take about this long on one connection
RATE_WINDOW = 3.0  # seconds of history behind the throughput estimate
CONNECTIONS = 4
SLOW_AFTER = 2.0  # seconds into a request before its rate is judged
SLOW_FACTOR = 4.0  # a DP this many times slower than the best is left
_RATE_WEIGHT = 0.3  # of a new measurement in a DP's throughput average


@dataclass(frozen=True)
class FetchOptions:
    connections: int = CONNECTIONS
    window: int = 0  # ranges in flight; 0: twice the connections
    max_span: int = MAX_SPAN
    max_gap: int = 0
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)
    attempts: int = ATTEMPTS  # failures in a row without progress before giving up on a range
    limit_rate: float | None = None  # bytes/s for all connections together
    ca: str | None = None  # a CA bundle for https DPs
    sleep: Callable[[float], None] = time.sleep


class Fetched:
    """A range being fetched: its bytes arrive in order, from one DP or several (after a failover);
    :meth:`wait` blocks until the first ``end`` bytes are there, so a consumer can take a range's
    first frames while its last ones are still on the way."""

    def __init__(self, rng: Range) -> None:
        self.range = rng
        self.data: mmap.mmap | bytearray = bytearray()  # allocated when the fetch starts
        self.got = 0
        self.segments: list[tuple[int, str]] = []  # (offset in the range, origin) where each origin's bytes begin
        self.error: BaseException | None = None
        self.streak = 0  # failures in a row without progress
        self.last = ""  # the last failure
        self.attempt_from = 0  # `got` when the current attempt began
        self._cond = threading.Condition()

    def wait(self, end: int) -> None:
        """Until bytes [0, end) are there; raises the fetch's error if it failed before."""
        with self._cond:
            while self.got < end and self.error is None:
                self._cond.wait()
            if self.got < end:
                raise self.error  # type: ignore[misc]

    def _advance(self, n: int) -> None:
        with self._cond:
            self.got += n
            self._cond.notify_all()

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            self.error = error
            self._cond.notify_all()

    def origins(self, offset: int, length: int) -> set[str]:
        """The origins that delivered bytes [offset, offset + length) of the range."""
        found = set()
        segments = list(self.segments)
        for i, (start, origin) in enumerate(segments):
            end = segments[i + 1][0] if i + 1 < len(segments) else self.range.length
            if start < offset + length and offset < end:
                found.add(origin)
        return found


class _Permanent(Exception):
    pass


class RangeFetcher:
    """Fetches ranges of blobs; ``blobs[i]`` lists the URLs (or paths) of blob i, one per DP."""

    def __init__(self, blobs: Sequence[Sequence[str]], sizes: Sequence[int], options: FetchOptions | None = None,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.options = options or FetchOptions()
        self.sizes = list(sizes)
        self.on_retry = on_retry
        self.origins: dict[str, OriginStats] = {}
        self.urls = [[DPUrl(u, self.origins.setdefault(origin_of(u), OriginStats(origin_of(u)))) for u in urls]
                     for urls in blobs]
        for i, urls in enumerate(self.urls):
            if not urls:
                raise FetchError(f"blob {i}: nothing to fetch it from (are any DPs configured?)")
        self.limit = RateLimit(self.options.limit_rate) if self.options.limit_rate else None
        self.retries = 0
        self._total = 0
        self._samples: deque[tuple[float, int]] = deque()  # (time, bytes received in all), for span_hint
        self._closed = False
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(self.options.connections, thread_name_prefix="peagent-fetch")

    def origins_of(self, blob: int) -> set[str]:
        return {u.origin.origin for u in self.urls[blob]}

    @property
    def received(self) -> int:
        return sum(o.received for o in self.origins.values())

    def close(self) -> None:
        self._closed = True  # running fetches stop at their next piece
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RangeFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(self, ranges: Iterable[Range]) -> Iterator[Fetched]:
        """Start fetching ranges, a window of them at a time, and hand them out in the order given,
        each as soon as it is started (see :meth:`Fetched.wait`)."""
        window = self.options.window or 2 * self.options.connections
        pending: deque[tuple[Fetched, Future[None]]] = deque()
        it = iter(ranges)

        def submit() -> bool:
            for rng in it:
                handle = Fetched(rng)
                pending.append((handle, self._pool.submit(self._fill, handle, ())))
                return True
            return False
        try:
            while len(pending) < window and submit():
                pass
            while pending:
                handle, _ = pending.popleft()
                submit()
                yield handle
        finally:
            for handle, future in pending:
                future.cancel()
                handle._fail(FetchError("the transfer was stopped"))

    def fetch(self, rng: Range, exclude: Collection[str] = ()) -> Fetched:
        """One range, whole, from any URL of its blob whose origin is not in ``exclude``."""
        handle = Fetched(rng)
        self._fill(handle, exclude)
        return handle

    def span_hint(self) -> int:
        """A range size that takes about RANGE_SECONDS on one connection at the recent throughput, so
        that on a slow link a range is not held half-fetched for long (and a crash loses little)."""
        rate = self._recent_rate() or self.options.limit_rate
        if rate is None:
            return min(FIRST_SPAN, self.options.max_span)
        return int(max(MIN_SPAN, min(self.options.max_span, rate * RANGE_SECONDS / self.options.connections)))

    def _recent_rate(self) -> float | None:
        with self._lock:
            samples = list(self._samples)
        if len(samples) < 2 or samples[-1][0] - samples[0][0] < 0.5:
            return None
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        return (b1 - b0) / (t1 - t0)

    def _fill(self, handle: Fetched, exclude: Collection[str]) -> None:
        rng = handle.range
        # mmap, not the heap: a few MiB at a time come and go, and must go back to the kernel when freed
        # (the heap would keep them, and the PE has no RAM to spare).
        handle.data = mmap.mmap(-1, rng.length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
        retrying = tenacity.Retrying(
            stop=lambda state: handle.streak >= self.options.attempts,
            wait=lambda state: self._backoff(rng.blob, exclude, handle),
            retry=tenacity.retry_if_exception_type(Retry),
            sleep=self.options.sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    self._attempt(handle, exclude)
        except Retry:
            error = FetchError(f"giving up on bytes {rng.start}-{rng.end - 1} of {self._name(rng.blob)} after "
                               f"{self.options.attempts} attempts without progress; last: {handle.last}")
            handle._fail(error)
            raise error from None
        except _Permanent as exc:
            handle._fail(FetchError(str(exc)))
            raise FetchError(str(exc)) from None
        except BaseException as exc:
            handle._fail(exc)
            raise

    def _name(self, blob: int) -> str:
        return os.path.basename(urlsplit(self.urls[blob][0].url).path) or self.urls[blob][0].url

    def _backoff(self, blob: int, exclude: Collection[str], progress: Fetched) -> float:
        """No wait when another DP can take over at once; else exponential with jitter."""
        now = time.monotonic()
        if any(u.origin.cool_until <= now for u in self._usable(blob, exclude)):
            return 0.0
        wait = tenacity.wait_exponential_jitter(initial=0.5, max=10.0)
        return wait(SimpleNamespace(attempt_number=max(1, progress.streak)))  # type: ignore[arg-type]

    def _usable(self, blob: int, exclude: Collection[str]) -> list[DPUrl]:
        return [u for u in self.urls[blob] if u.bad is None and u.origin.origin not in exclude]

    def _pick(self, blob: int, exclude: Collection[str]) -> DPUrl:
        """The URL whose DP looks fastest for one more connection; one not cooling down if any."""
        usable = self._usable(blob, exclude)
        if not usable:
            reasons = "; ".join(f"{u.url}: {u.bad or 'excluded'}" for u in self.urls[blob])
            raise _Permanent(f"no DP can serve {self._name(blob)} any more ({reasons})")
        with self._lock:
            chosen = choose(usable, time.monotonic())
            chosen.origin.active += 1
            return chosen

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = session_with_ca(self.options.ca)
        return session

    def _attempt(self, progress: Fetched, exclude: Collection[str]) -> None:
        rng, buf = progress.range, progress.data
        if self._closed:
            raise _Permanent("the fetcher was closed")
        url = self._pick(rng.blob, exclude)
        origin = url.origin
        before = progress.attempt_from = progress.got
        started = time.monotonic()
        try:
            if is_url(url.url):
                self._http(url, rng, buf, progress, started)
            else:
                self._file(url, rng, buf, progress)
            with self._lock:
                origin.strikes = 0
        except (*TRANSIENT, Retry) as exc:
            failed = progress.got == before
            progress.streak = progress.streak + 1 if failed else 1
            progress.last = f"{url.url} at byte {rng.start + progress.got}: {brief(exc)}"
            with self._lock:
                self.retries += 1
                origin.failures += 1
                origin.strikes += 1
                origin.cool_until = time.monotonic() + min(10.0, 0.25 * 2 ** min(origin.strikes, 6))
            log.warning("fetch: %s; retrying", progress.last)
            if self.on_retry:
                self.on_retry(progress.last)
            raise Retry(progress.last) from None
        finally:
            elapsed = time.monotonic() - started
            moved = progress.got - before
            with self._lock:
                origin.active -= 1
                origin.requests += 1
                if moved >= PIECE or elapsed >= 0.5:
                    measured = moved / max(elapsed, 1e-6)
                    origin.rate = measured if origin.rate is None else \
                        (1 - _RATE_WEIGHT) * origin.rate + _RATE_WEIGHT * measured

    def _file(self, url: DPUrl, rng: Range, buf: bytearray, progress: Fetched) -> None:
        try:
            with open(url.url, "rb") as f:
                view = memoryview(buf)
                while progress.got < rng.length:
                    f.seek(rng.start + progress.got)
                    n = f.readinto(view[progress.got:])
                    if not n:
                        url.bad = f"shorter than the {self.sizes[rng.blob]} bytes the manifest says"
                        raise Retry(url.bad)
                    self._received(url, progress, n)
        except OSError as exc:
            url.bad = exc.strerror or str(exc)
            raise Retry(url.bad) from None

    def _received(self, url: DPUrl, progress: Fetched, n: int) -> None:
        if not progress.segments or progress.segments[-1][1] != url.origin.origin:
            progress.segments.append((progress.got, url.origin.origin))
        progress.streak = 0
        progress._advance(n)
        now = time.monotonic()
        with self._lock:
            url.origin.received += n
            self._total += n
            if not self._samples or now - self._samples[-1][0] >= 0.1:
                self._samples.append((now, self._total))
                while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
                    self._samples.popleft()

    def _http(self, url: DPUrl, rng: Range, buf: bytearray, progress: Fetched, started: float) -> None:
        pos = rng.start + progress.got
        headers = {"Range": f"bytes={pos}-{rng.end - 1}"}
        if url.etag:
            headers["If-Match"] = url.etag
        response = self._session().get(url.url, headers=headers, stream=True, timeout=self.options.timeout)
        with response:
            count = check_answer(url, response, pos, rng.end, self.sizes[rng.blob])
            self._read_body(url, rng, buf, progress, response, count, started)

    def _read_body(self, url: DPUrl, rng: Range, buf: bytearray, progress: Fetched,
                   response: requests.Response, count: int, started: float) -> None:
        end = progress.got + count
        raw = response.raw
        while progress.got < end:
            if self._closed:
                raise _Permanent("the fetcher was closed")
            n = min(PIECE, end - progress.got)
            if self.limit:
                self.limit.take(n)
            chunk = raw.read(n)
            if not chunk:
                raise Retry(f"the answer ended {end - progress.got} bytes early")
            buf[progress.got:progress.got + len(chunk)] = chunk
            self._received(url, progress, len(chunk))
            self._leave_if_slow(url, rng, progress, started, end)
        if progress.got < rng.length:
            raise Retry(f"a short answer: {progress.got} of {rng.length} bytes")

    def _leave_if_slow(self, url: DPUrl, rng: Range, progress: Fetched, started: float, end: int) -> None:
        elapsed = time.monotonic() - started
        if elapsed < SLOW_AFTER or progress.got >= end:
            return
        with self._lock:
            others = [u.origin.rate or 0.0 for u in self._usable(rng.blob, ()) if u.origin is not url.origin]
        rate = (progress.got - progress.attempt_from) / elapsed  # this request alone
        if others and max(others) > SLOW_FACTOR * rate:
            url.origin.rate = rate
            raise Retry(f"{rate / 1e6:.2f} MB/s, much slower than another DP ({max(others) / 1e6:.1f} MB/s)")
