"""The DPs as the fetcher sees them: how fast each serves, which to ask next, and shared limits.

Each DP (an origin: scheme, host and port) keeps a throughput average, measured per connection as
it serves, a count of active connections and of failures in a row. :func:`choose` sends the next
request to the DP that looks fastest for one more connection (its rate divided by its connections
plus one), so a fast DP takes most of the work and a slower one takes a share when the fast one
saturates; a DP that is cooling down after a failure is taken only when no other is left, and a
DP never measured is tried early (it may be the fastest). A blob on a DP (:class:`DPUrl`) is
dropped for good when it answers that the blob is not there, changed (ETag), or has another size.

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

from peagent.fetch import new_session

PIECE = 64 << 10  # bytes per socket read (the fetcher's): a read that times out half-done loses at most this


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
    if "://" not in url:
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
