"""Fetching from distribution points (DPs): small documents, and large streams that survive bad links.

A DP is any HTTP server that honours ``Range`` (nginx, or ``peagent serve``). A file on the DPs
is named by a reference: an absolute URL, or a path resolved against each DP in turn
(:func:`candidate_urls`), so that the first DP is preferred and the others take over when it
fails. A small file (a task, a manifest) is read whole and bounded: :func:`fetch_bytes` from the
DPs, :func:`read_local` from a local path (an image on the USB stick the PE booted from).

:class:`RangeReader` is a read-only file object over those URLs. When a connection drops,
stalls (no byte within the read timeout) or ends early, it reconnects (after a backoff with
jitter) and asks for the rest with ``Range: bytes=<position>-``, on the same DP or the next
one; ``If-Match`` with the ETag that DP gave in its first answer makes a file that changed
meanwhile an error instead of a silent splice. An ETag means something only to the server that
made it (nginx's is the file's mtime and size, so each DP's copy of an image has its own): a DP
first asked in the middle of a transfer gets no If-Match, the file's total size must match, and
the image's digest, checked above this module, catches the rest. Readers above it (a
decompressor, a hash) never notice; they see one stream. Client errors (4xx) are not retried:
the file is not there, or not for us.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import urljoin

import requests
import tenacity
import urllib3

from peagent import __version__
from peagent.errors import FetchError, ImageError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds to establish a connection
READ_TIMEOUT = 15.0  # seconds without a byte before a link counts as stalled
ATTEMPTS = 8  # consecutive failures without progress before giving up
USER_AGENT = f"peagent/{__version__}"
PIECE = 128 << 10  # bytes per socket read

# What a flaky link looks like; anything else is a bug or a 4xx. Reading a streamed body goes
# through urllib3 directly, whose errors requests does not wrap there.
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
             urllib3.exceptions.HTTPError, OSError)


class NotFoundError(FetchError):
    """Every DP answered that the file does not exist (404/410)."""

    code = "fetch.not_found"


class _ShortRead(Exception):
    """The server closed the body before the length it announced."""


class _Permanent(Exception):
    """An answer that retrying will not change (4xx other than 408/429)."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url}: HTTP {status}")
        self.status = status


def is_url(ref: str) -> bool:
    """Whether a reference is an absolute URL (else it is a path: on the DPs, or a local file)."""
    return "://" in ref


def candidate_urls(ref: str, dps: Sequence[str]) -> list[str]:
    """The URLs a reference may be fetched from, preferred first."""
    if is_url(ref):
        return [ref]
    return [urljoin(dp if dp.endswith("/") else dp + "/", ref.lstrip("/")) for dp in dps]


def content_range(text: str) -> tuple[int, int, int | None]:
    """(first byte, last byte, total or None for ``*``) of a Content-Range header; ValueError when malformed."""
    span, total = text.removeprefix("bytes ").split("/")
    first, last = (int(x) for x in span.split("-"))
    return first, last, None if total == "*" else int(total)


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Images must arrive byte for byte; no transparent gzip of already compressed data.
    session.headers["Accept-Encoding"] = "identity"
    return session


class RangeReader:
    """A read-only stream of one file on one or more DPs, resumed by Range after failures."""

    def __init__(
        self,
        urls: Sequence[str],
        session: requests.Session | None = None,
        *,
        attempts: int = ATTEMPTS,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        if not urls:
            raise FetchError("nothing to fetch from: no URLs (are any DPs configured?)")
        self.urls = list(urls)
        self.session = session or new_session()
        self.attempts = attempts
        self.timeout = timeout
        self.on_retry = on_retry
        self.size: int | None = None  # total length, once a server told it
        self.position = 0
        self.retries = 0
        self.url = self.urls[0]
        self._etags: dict[str, str] = {}  # per URL: the strong ETag of that DP's first answer
        self._response: requests.Response | None = None
        self._url_index = 0
        self._refused: dict[str, int] = {}
        self._last_error = ""
        # Consecutive failures count against `attempts`; any byte of progress starts afresh,
        # because a retry policy object restarts with every read() call.
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential_jitter(initial=0.5, max=10.0),
            retry=tenacity.retry_if_exception_type((*TRANSIENT, _ShortRead)),
            before_sleep=lambda state: log.warning("fetch: %s; retrying", self._last_error),
            sleep=sleep,
            reraise=True,
        )

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all the rest when negative); b"" only at the true end."""
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        try:
            return self._retrying(self._read_once, size)
        except (*TRANSIENT, _ShortRead):
            raise FetchError(f"giving up after {self.attempts} attempts without progress; "
                             f"last: {self._last_error}") from None

    def _read_once(self, size: int) -> bytes:
        try:
            if self.size is not None and self.position >= self.size:
                return b""
            if self._response is None:
                self._open_any()
            assert self._response is not None
            # Small pieces: urllib3 reads until it has all it was asked for, and a piece that
            # times out half-read is lost, so the piece bounds what a stall costs.
            data = self._response.raw.read(min(size, PIECE))
            if not data and self.size is not None and self.position < self.size:
                raise _ShortRead(f"connection closed at byte {self.position} of {self.size}")
            self.position += len(data)
            return data
        except (*TRANSIENT, _ShortRead) as exc:
            self.close()
            self.retries += 1
            self._last_error = f"{self.url} at byte {self.position}: {brief(exc)}"
            if self.on_retry:
                self.on_retry(self._last_error)
            self._next_url()  # fail over; with one DP this is the same URL again
            raise

    def _open_any(self) -> None:
        """Open at the current position, moving past DPs that answer that the file is not there."""
        while True:
            try:
                self._open()
                return
            except _Permanent as exc:
                self._refused[self.url] = exc.status
                if len(self._refused) == len(self.urls):
                    answers = ", ".join(f"{u}: HTTP {s}" for u, s in self._refused.items())
                    if all(s in (404, 410) for s in self._refused.values()):
                        raise NotFoundError(f"not found on any DP ({answers})") from None
                    raise FetchError(f"refused by every DP ({answers})") from None
                self._next_url()

    def _next_url(self) -> None:
        for _ in range(len(self.urls)):
            self._url_index = (self._url_index + 1) % len(self.urls)
            self.url = self.urls[self._url_index]
            if self.url not in self._refused:
                return

    def _open(self) -> None:
        headers = {}
        if self.position:
            headers["Range"] = f"bytes={self.position}-"
            if self.url in self._etags:
                headers["If-Match"] = self._etags[self.url]
        response = self.session.get(self.url, headers=headers, stream=True, timeout=self.timeout)
        status = response.status_code
        if status == 412:
            response.close()
            raise FetchError(f"{self.url} changed during the transfer (its ETag no longer matches); "
                             "restart the deployment")
        if 400 <= status < 500 and status not in (408, 429):
            response.close()
            raise _Permanent(self.url, status)
        if status >= 400:
            response.close()
            raise requests.ConnectionError(f"HTTP {status}")
        self._check_length(response)
        if status == 200 and self.position:
            # The server ignored Range: skip what we already have.
            try:
                self._skip(response, self.position)
            except BaseException:
                response.close()
                raise
        self._response = response
        etag = response.headers.get("ETag")
        if etag and not etag.startswith("W/"):
            self._etags.setdefault(self.url, etag)

    def _check_length(self, response: requests.Response) -> None:
        total: int | None = None
        if response.status_code == 206:
            header = response.headers.get("Content-Range", "")
            try:
                start, _, total = content_range(header)
            except ValueError:
                response.close()
                raise requests.ConnectionError(f"malformed Content-Range {header!r}") from None
            if start != self.position:
                response.close()
                raise requests.ConnectionError(
                    f"asked for byte {self.position}, Content-Range starts at {start}")
        elif "Content-Length" in response.headers:
            total = int(response.headers["Content-Length"])
        if total is not None:
            if self.size is not None and total != self.size:
                response.close()
                raise FetchError(f"{self.url} is {total} bytes, but the transfer began with "
                                 f"{self.size}: the DPs do not hold the same file")
            self.size = total

    @staticmethod
    def _skip(response: requests.Response, count: int) -> None:
        while count:
            data = response.raw.read(min(count, 1 << 20))
            if not data:
                raise _ShortRead("connection closed while skipping to the resume point")
            count -= len(data)


def fetch_bytes(urls: Sequence[str], limit: int, session: requests.Session | None = None,
                **kwargs: object) -> bytes:
    """A small file (a task, a manifest) whole, refusing anything over ``limit`` bytes."""
    with RangeReader(urls, session, **kwargs) as reader:  # type: ignore[arg-type]
        data = reader.read(limit + 1)
        chunks = [data]
        total = len(data)
        while data and total <= limit:
            data = reader.read(limit + 1 - total)
            chunks.append(data)
            total += len(data)
        if total > limit:
            raise FetchError(f"{reader.url} is larger than the {limit} bytes allowed for it")
        return b"".join(chunks)


def read_local(path: str, limit: int, what: str) -> bytes:
    """A small local file whole (an image on the USB stick the PE booted from), as :func:`fetch_bytes`
    fetches one: NotFoundError when it is not there, ImageError when it is over ``limit`` bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ImageError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise ImageError(f"{what} {path} is larger than the {limit} bytes allowed for it")
    return data


def brief(exc: BaseException) -> str:
    """An error as one line of a log or a status event: its message, cut short."""
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."
