"""The DPs as the fetcher sees them: how fast each serves, which to ask next, and shared limits.

Each DP (an origin: scheme, host and port) keeps a throughput average, measured per connection as
it serves, a count of active connections and of failures in a row. :func:`choose` sends the next
request to the DP that looks fastest for one more connection (its rate divided by its connections
plus one), so a fast DP takes most of the work and a slower one takes a share when the fast one
saturates; a DP that is cooling down after a failure is taken only when no other is left, and a
DP never measured is tried early (it may be the fastest). A blob on a DP (:class:`DPUrl`) is
dropped for good when it answers that the blob is not there, changed (ETag), or has another size.

:func:`check_answer` reads what a DP's answer to a range request says: how many of its bytes to
take, or :class:`Retry` (a 5xx, a short or misplaced ``Content-Range``, a DP that ignored
``Range``), dropping the URL for good when the answer proves it useless (the blob is not there,
has changed, has another size).

:class:`RateLimit` is a token bucket all connections share (``--limit-rate``), and
:func:`session_with_ca` makes a requests session that verifies TLS with a given CA bundle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from peagent.fetch import content_range, is_url, new_session

PIECE = 128 << 10  # bytes per socket read (the fetcher's): a read that times out half-done loses this much


@dataclass
class OriginStats:
    """One DP (scheme, host and port) as the fetcher has seen it."""

    origin: str
    received: int = 0
    requests: int = 0
    failures: int = 0
    rate: float | None = None  # bytes/s per connection, averaged
    active: int = 0
    strikes: int = 0  # failures in a row
    cool_until: float = 0.0


@dataclass
class DPUrl:
    """One blob on one DP: its URL, the ETag it first answered with, and whether it is still used."""

    url: str
    origin: OriginStats
    etag: str | None = None
    bad: str | None = None  # why this URL is no longer used
    range_strikes: int = 0


class RateLimit:
    """A token bucket shared by all workers: ``take(n)`` waits until n more bytes fit the rate."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.burst = max(PIECE, rate / 4)
        self.clock, self.sleep = clock, sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n  # reserve now, wait outside the lock: waiters queue up fairly
            debt = -self._tokens
        if debt > 0:
            self.sleep(debt / self.rate)


class Retry(Exception):
    """This attempt at a range failed; the range goes on from its first missing byte (elsewhere if it can)."""


def check_answer(url: DPUrl, response: requests.Response, pos: int, end: int, size: int) -> int:
    """How many bytes of the answer to a request for bytes [pos, end) of a blob of ``size`` bytes to take;
    raises Retry otherwise, after setting ``url.bad`` when the URL is not to be asked again."""
    status = response.status_code
    if status == 412:
        url.bad = "the blob changed on this DP (its ETag no longer matches)"
        raise Retry(url.bad)
    if 400 <= status < 500 and status not in (408, 429):
        url.bad = f"HTTP {status}"
        raise Retry(url.bad)
    if status >= 400:
        raise Retry(f"HTTP {status}")
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        if url.etag is None:
            url.etag = etag
        elif etag != url.etag:
            url.bad = f"the blob changed on this DP (ETag {url.etag} became {etag})"
            raise Retry(url.bad)
    want = end - pos
    if status == 206:
        text = response.headers.get("Content-Range", "")
        try:
            first, last, total = content_range(text)
        except ValueError:
            raise Retry(f"malformed Content-Range {text!r}") from None
        if total is not None and total != size:
            url.bad = f"the blob is {total} bytes here, but the manifest says {size}"
            raise Retry(url.bad)
        if first != pos or last < first:
            raise Retry(f"asked for bytes from {pos}, got Content-Range {text!r}")
        return min(want, last - first + 1)  # a short answer: the rest is asked for again
    if status == 200:
        length = response.headers.get("Content-Length")
        if length is not None and int(length) != size:
            url.bad = f"the blob is {length} bytes here, but the manifest says {size}"
            raise Retry(url.bad)
        if pos == 0:
            return want  # the whole blob from its start: take what we need, drop the rest
        url.range_strikes += 1
        if url.range_strikes >= 3:
            url.bad = "this DP ignores Range requests"
        raise Retry("the DP ignored the Range header (HTTP 200)")
    raise Retry(f"unexpected HTTP {status}")


def session_with_ca(ca: str | None) -> requests.Session:
    """A session (peagent.fetch.new_session) that verifies TLS with the CA bundle ``ca`` when given.

    Setting ``session.verify`` is not enough: requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE
    override it (psf/requests#3829), so the merged settings are fixed up here."""
    session = new_session()
    if ca:
        session.verify = ca
        merge = session.merge_environment_settings

        def merged(*args: object, **kwargs: object) -> dict:
            settings = merge(*args, **kwargs)  # type: ignore[arg-type]
            settings["verify"] = ca
            return settings
        session.merge_environment_settings = merged  # type: ignore[method-assign]
    return session


def origin_of(url: str) -> str:
    if not is_url(url):
        return "file"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def choose(usable: Sequence[DPUrl], now: float) -> DPUrl:
    """The URL whose DP looks fastest for one more connection, preferring DPs not cooling down."""
    best_rate = max((u.origin.rate or 0.0 for u in usable), default=0.0)

    def score(u: DPUrl) -> tuple[bool, float, int]:
        o = u.origin
        rate = o.rate if o.rate is not None else max(best_rate, 1.0) * 2  # try the unmeasured early
        return o.cool_until > now, -rate / (1 + o.active), o.active
    return min(usable, key=score)
