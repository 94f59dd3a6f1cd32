"""Forwarding the journal's events to the status server: in order, once each, never in the deploy's way.

The sender is the "forward" half of store and forward. Events are appended to the journal
(peagent.status.journal) as they happen; a background thread posts the ones not yet
acknowledged, oldest first, in batches ``{"events": [...]}`` to the status URL with
``Authorization: Bearer <token>``. An answer 2xx acknowledges the whole batch and the journal's
``.sent`` count moves past it; anything else leaves it where it was, so the next attempt replays
from the first unacknowledged event. Each event keeps the ``id`` it was journaled with, so a
batch that arrived but whose answer was lost is recognised by the server as a duplicate.

While the link is down (connection refused or timed out, 5xx, 408, 429) the sender backs off,
doubling the pause up to a minute: with short timeouts and the posting on its own thread, a
dead status server never slows the deployment. Any other answer (401 a wrong token, 400 an
event the server refuses, 404 a wrong URL, a redirect) will not change by asking again: it is
logged once, naming the URL and the answer (never the token), and nothing more is posted.

Before the PE reboots or powers off, :meth:`Sender.flush` keeps trying until everything is
delivered or its deadline passes, so a server that comes back in time still gets everything.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import requests

from peagent.fetch import brief, new_session
from peagent.state.model import REDACTED, Secret
from peagent.status.journal import Journal

log = logging.getLogger("peagent")

POST_TIMEOUT = (2.0, 5.0)  # connect, read: a status server that does not answer at once is treated as down
BATCH_EVENTS = 100
BATCH_BYTES = 1 << 20  # well under the server's 4 MiB per request
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
FLUSH_PAUSE_MAX = 2.0  # while flushing, try at least this often: the deadline is near


class Outcome(Enum):
    DELIVERED = "delivered"
    DOWN = "down"  # worth trying again later
    REFUSED = "refused"  # asking again will not change the answer


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    detail: str  # for the log: "HTTP 503", "connection refused", ...


def classify(status: int) -> Outcome:
    """What an HTTP status means for a batch: delivered, try again later, or give up."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status >= 500 or status in (408, 429):
        return Outcome.DOWN
    return Outcome.REFUSED


def backoff_delay(failures: int, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> float:
    """The pause after ``failures`` consecutive failed attempts: first, 2 x first, 4 x first, ... up to cap."""
    if failures <= 0:
        return 0.0
    return min(cap, first * 2 ** min(failures - 1, 30))


def take_batch(events: Sequence[dict[str, Any]], max_events: int = BATCH_EVENTS,
               max_bytes: int = BATCH_BYTES) -> list[dict[str, Any]]:
    """The leading events that fit in one request (always at least one, when there is one)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for event in events[:max_events]:
        size += len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")) + 1
        if batch and size > max_bytes:
            break
        batch.append(event)
    return batch


# What the operating system says, inside requests' and urllib3's wrappers: the part worth a log line.
_CAUSES = ("Connection refused", "Connection reset", "No route to host", "Network is unreachable",
           "Name or service not known", "Temporary failure in name resolution", "certificate verify failed")


def failure_text(exc: BaseException) -> str:
    """A failed request in a few words: "connection refused", "timed out", ... (else its message, cut short)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, requests.Timeout):
        return "timed out waiting for the answer"
    text = str(exc)
    cause = next((c for c in _CAUSES if c in text), None)
    return cause[0].lower() + cause[1:] if cause else brief(exc)


class Sender:
    """Posts a journal's unacknowledged events to one status URL; see the module's docstring."""

    def __init__(self, url: str, token: Secret | None, journal: Journal, *,
                 session: requests.Session | None = None, timeout: tuple[float, float] = POST_TIMEOUT,
                 backoff_first: float = BACKOFF_FIRST, backoff_max: float = BACKOFF_MAX,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url
        self.journal = journal
        self.session = session or new_session()
        self.timeout = timeout
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.clock = clock
        self.sleep = sleep
        self.refused: str | None = None  # why the server refused for good (logged once)
        self._token = token
        self._failures = 0
        self._next_try = 0.0
        self._lock = threading.Lock()  # one attempt at a time: the thread's, or the flush's
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    # --- one pass ---------------------------------------------------------------------------

    def send_pending(self, *, force: bool = False) -> bool:
        """Post what is unacknowledged, batch after batch; True when nothing is left.

        Stops at the first failure and backs off: until the pause is over, a call returns False at
        once (``force`` ignores the pause). After a refusal it always returns False.
        """
        with self._lock:
            if self.refused is not None:
                return False
            if not force and self.clock() < self._next_try:
                return False
            while True:
                batch = take_batch(self.journal.unsent(BATCH_EVENTS))
                if not batch:
                    return True
                answer = self._post(batch)
                if answer.outcome is Outcome.DELIVERED:
                    if self._failures:
                        log.info("status: %s answers again; posting the events that waited", self.url)
                    self._failures = 0
                    self.journal.mark_sent(self.journal.sent() + len(batch))
                    continue
                if answer.outcome is Outcome.REFUSED:
                    self.refused = answer.detail
                    log.error("status: %s refused the events (%s); no more are posted, they stay in %s. Check the "
                              "status URL and token (the task's status section)", self.url, answer.detail,
                              self._where())
                    return False
                self._failures += 1
                self._next_try = self.clock() + backoff_delay(self._failures, self.backoff_first, self.backoff_max)
                if self._failures == 1:
                    log.warning("status: cannot post to %s (%s); the events wait in %s and are sent when it answers",
                                self.url, answer.detail, self._where())
                return False

    def _post(self, batch: list[dict[str, Any]]) -> Answer:
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        body = json.dumps({"events": batch}, separators=(",", ":")).encode()  # ASCII: escapes every odd character
        try:
            # No redirects: requests would turn a redirected POST into a GET and "deliver" nothing.
            response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.RequestException as exc:
            return Answer(Outcome.DOWN, self._scrub(failure_text(exc)))
        with response:
            outcome = classify(response.status_code)
            detail = f"HTTP {response.status_code}"
            if outcome is not Outcome.DELIVERED:
                text = " ".join(response.text[:300].split())
                if 300 <= response.status_code < 400:
                    text = f"redirected to {response.headers.get('Location', '?')}; give the final URL"
                detail += f": {self._scrub(text)}" if text else ""
            return Answer(outcome, detail)

    def _scrub(self, text: str) -> str:
        """Never let the token into a log line, even if a server or a proxy echoes it."""
        return text.replace(self._token.reveal(), REDACTED) if self._token is not None else text

    def _where(self) -> str:
        return str(self.journal.events_path) if self.journal.directory is not None else "memory"

    # --- in the background --------------------------------------------------------------------

    def start(self) -> None:
        """Post from a background thread from now on; :meth:`notify` after each new event."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="peagent-status", daemon=True)
            self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            wait = max(0.0, self._next_try - self.clock()) if self._failures else None
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop:
                return
            try:
                self.send_pending()
            except Exception:  # a status sink must never take the deployment down; say why, go on
                log.exception("status: posting to %s failed unexpectedly", self.url)
                self._failures += 1
                self._next_try = self.clock() + backoff_delay(self._failures, self.backoff_first, self.backoff_max)

    def stop(self) -> None:
        """Stop the background thread (what is unsent stays in the journal)."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._stop = False

    # --- at the end ---------------------------------------------------------------------------

    def flush(self, deadline: float) -> bool:
        """Try until everything is delivered or ``deadline`` (on ``clock``) passes; True when all is.

        The background thread is stopped first: the last attempts are this call's, in order.
        """
        self.stop()
        while True:
            if self.send_pending(force=True):
                return True
            left = deadline - self.clock()
            if self.refused is not None or left <= 0:
                unsent = len(self.journal.unsent())
                if self.refused is None:
                    log.warning("status: %d event(s) could not be posted to %s before the deadline; they stay in %s",
                                unsent, self.url, self._where())
                return False
            pause = min(backoff_delay(self._failures, self.backoff_first, self.backoff_max), FLUSH_PAUSE_MAX, left)
            self.sleep(pause)
