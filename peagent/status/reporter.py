"""The agent's reporter: turns each step of a deployment into a schema-1 event and hands it to the sinks.

Every part of a deploy reports through one :class:`Reporter`, with ``emit(phase, message)`` for
a step and ``progress(phase, snapshot)`` for a transfer. The reporter fills in what the callers
need not know (docs/status.md): the event's own ``id`` (random, kept in the journal so that a
replay posts the same id), ``seq`` (1, 2, 3, ... per deployment, continued by a rerun),
``source`` "pe", the time, the machine's identity, the DP, the level (``warning`` for a
"warning: ..." message, ``error`` for a failure), the cumulative ``retries`` counter (each
"retry" event counts one) and a failure's ``error`` ``{"code", "message"}``.

Sinks: the console (peagent.status.console) always; the journal (peagent.status.journal) and,
when a status URL is known, the sender (peagent.status.sender) once the deployment id is. The
events before it (the inventory, the task lookup) are held in memory, then journaled first,
numbered from 1. Before the PE powers off or reboots, :meth:`Reporter.flush` gives the sender a
last chance. No sink's failure ever fails the deployment: it is logged once and the deploy goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from peagent.progress import Snapshot
from peagent.state.model import Secret
from peagent.status.console import Console
from peagent.status.event import MAX_MESSAGE, MAX_STEP, MAX_WARNINGS, Event, EventError, validate_event
from peagent.status.journal import Journal, JournalError
from peagent.status.sender import Sender

log = logging.getLogger("peagent")
SOURCE = "pe"
PROGRESS_EVENT_INTERVAL = 10.0  # seconds between a transfer's status events (the console gets every snapshot)
FLUSH_SECONDS = 30.0  # how long the last flush may try before the PE powers off or reboots
WARNING_PREFIX = "warning: "
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Reporter:
    """Reports a deployment's events to the console, the journal and the status URL (see the module)."""

    def __init__(self, url: str | None = None, session: requests.Session | None = None, *,
                 token: Secret | None = None, journal_dir: Path | None = None, console: Console | None = None,
                 clock: Callable[[], float] = time.time, new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
                 progress_interval: float = PROGRESS_EVENT_INTERVAL) -> None:
        self.url = url
        self.token = token
        self.session = session
        self.journal_dir = journal_dir
        self.console = console or Console()
        self.clock = clock
        self.new_id = new_id
        self.progress_interval = progress_interval
        self.machine: dict[str, Any] = {}
        self.dp: str | None = None
        self.retries = 0
        self.journal: Journal | None = None
        self.sender: Sender | None = None
        self._deployment_id: str | None = None
        self._held: list[dict[str, Any]] = []  # events before the deployment id is known
        self._last_progress: dict[str, float] = {}
        self._journal_failed = False
        # Steps may report from worker threads (a frame fetcher's retries): one event at a time gets its seq.
        self._lock = threading.RLock()

    # --- configuration -------------------------------------------------------------------------

    @property
    def deployment_id(self) -> str | None:
        return self._deployment_id

    @deployment_id.setter
    def deployment_id(self, value: str | None) -> None:
        """Knowing the deployment opens its journal; the held events go in first, numbered from there."""
        with self._lock:
            self._set_deployment(value)

    def _set_deployment(self, value: str | None) -> None:
        if value == self._deployment_id:
            return
        if self.sender is not None:
            self.sender.stop()
            self.sender = None
        self._deployment_id = value
        self.journal = None if value is None else self._open_journal(value)
        held, self._held = self._held, []
        for event in held:
            self._record(event)
        self._start_sender()

    def configure(self, url: str | None, token: Secret | None) -> None:
        """Where events go from now on (the task's status section, else the PE's peagent.status=)."""
        with self._lock:
            if (url, token) == (self.url, self.token):
                return
            if self.sender is not None:
                self.sender.stop()
                self.sender = None
            self.url, self.token = url, token
            self._start_sender()

    # --- reporting ---------------------------------------------------------------------------------

    def emit(self, phase: str, message: str, *, echo: bool = True, step: str | None = None, level: str | None = None,
             warning: str | None = None, error_code: str | None = None, data: dict[str, Any] | None = None,
             done: int | None = None, total: int | None = None, rate: float | None = None,
             eta: float | None = None) -> dict[str, Any] | None:
        """Report a step; ``echo=False`` when the caller prints the message itself (errors).

        A message "warning: ..." (or ``warning=``) is a warning; ``error_code`` (a peagent.errors
        code) makes the event a failure. Returns the event as journaled (None when it is held back
        for a bug in its fields, which is logged).
        """
        with self._lock:
            return self._emit(phase, message, echo=echo, step=step, level=level, warning=warning,
                              error_code=error_code, data=data, done=done, total=total, rate=rate, eta=eta)

    def _emit(self, phase: str, message: str, *, echo: bool, step: str | None, level: str | None,
              warning: str | None, error_code: str | None, data: dict[str, Any] | None, done: int | None,
              total: int | None, rate: float | None, eta: float | None) -> dict[str, Any] | None:
        if phase == "retry":
            self.retries += 1
        warnings: list[str] = []
        if warning is not None:
            warnings.append(warning)
        elif message.startswith(WARNING_PREFIX):
            warnings.append(message[len(WARNING_PREFIX):])
        error = None if error_code is None else {"code": error_code, "message": _cut(message, MAX_MESSAGE)}
        level = level or ("error" if error is not None or phase == "failed" else "warning" if warnings else "info")
        if echo:
            self.console.line(f"{phase}: {message}", level=_LEVELS.get(level, logging.INFO))
        event = Event(id=self.new_id(), deployment_id=self._deployment_id or "", seq=0, source=SOURCE,
                      time=self.clock(), phase=phase, message=_cut(message, MAX_MESSAGE),
                      step=None if step is None else _cut(step, MAX_STEP), level=level, machine=dict(self.machine),
                      done=done, total=total, rate=rate, eta=eta, retries=self.retries,
                      warnings=tuple(_cut(w, MAX_MESSAGE) for w in warnings[:MAX_WARNINGS]), error=error,
                      dp=self.dp, data=data).to_json()
        if self._deployment_id is None:
            self._held.append(event)
            return event
        return self._record(event)

    def progress(self, phase: str, snap: Snapshot) -> None:
        """A transfer's progress: every snapshot on the console, an event every ``progress_interval`` and the last."""
        self.console.progress(phase, snap)
        now = self.clock()
        last = self._last_progress.get(phase)
        if not snap.final and last is not None and now - last < self.progress_interval:
            return
        self._last_progress[phase] = now
        if snap.final:
            self._last_progress.pop(phase, None)
        self.emit(phase, snap.line(phase), echo=False, done=snap.done, total=snap.total, rate=snap.rate, eta=snap.eta)

    def events(self) -> list[dict[str, Any]]:
        """Every event of this deployment so far, oldest first (the held ones while its id is unknown)."""
        return self.journal.events() if self.journal is not None else list(self._held)

    def flush(self, seconds: float = FLUSH_SECONDS) -> bool:
        """Before power off or reboot: try for up to ``seconds`` to post what is left; True when all was."""
        if self.sender is None:
            if self._held:
                log.warning("status: %d event(s) from before the task was known were not posted (no deployment id)",
                            len(self._held))
            return not self._held or self.url is None
        return self.sender.flush(self.sender.clock() + seconds)

    # --- inside -----------------------------------------------------------------------------------

    def _record(self, event: dict[str, Any]) -> dict[str, Any] | None:
        assert self.journal is not None and self._deployment_id is not None
        event = {**event, "deployment_id": self._deployment_id, "seq": self.journal.next_seq}
        checked = _checked(event)
        if checked is None:
            return None
        try:
            self.journal.append(checked)
        except JournalError as exc:
            if not self._journal_failed:
                log.warning("status: %s", exc)
            self._journal_failed = True
        if self.sender is not None:
            self.sender.notify()
        return checked

    def _open_journal(self, deployment_id: str) -> Journal:
        try:
            if self.journal_dir is not None:
                self.journal_dir.mkdir(parents=True, exist_ok=True)
            return Journal(self.journal_dir, deployment_id)
        except (OSError, JournalError) as exc:
            log.warning("status: cannot use the event journal in %s (%s); events are kept in memory only",
                        self.journal_dir, exc)
            return Journal(None, deployment_id)

    def _start_sender(self) -> None:
        if self.sender is not None or self.journal is None or not self.url:
            return
        self.sender = Sender(self.url, self.token, self.journal, session=self.session)
        self.sender.start()
        self.sender.notify()  # the held events, and a rerun's unsent ones, are waiting


def _checked(event: dict[str, Any]) -> dict[str, Any] | None:
    """The event as the server will check it; a too large ``data`` is dropped, any other fault is a bug."""
    try:
        # As plain JSON values: what is journaled, posted and kept in memory is then the same thing.
        plain = json.loads(json.dumps(event))
    except (TypeError, ValueError) as exc:
        log.error("status: an event with a non-JSON value was not journaled (a bug, please report it): %s", exc)
        return None
    try:
        return validate_event(plain)
    except EventError as exc:
        if exc.field == "event" and event.get("data") is not None:
            return _checked({**event, "data": None, "message": _cut(event["message"] + " (data omitted: too large)",
                                                                   MAX_MESSAGE)})
        log.error("status: an event the status server would refuse was not journaled (a bug, please report it): %s",
                  exc)
        return None


def _cut(text: str, limit: int) -> str:
    """A text field within its limit, as valid Unicode: a file name's undecodable bytes (lone surrogates,
    Python's surrogateescape) become "?", which every JSON reader and database takes."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[:limit - 3] + "..."
