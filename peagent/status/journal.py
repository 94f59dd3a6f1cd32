"""The agent's event journal: every event of a deployment, in order, and how many were delivered.

Store and forward needs a store that outlives a dead link and a rerun of the agent. For a
deployment ``<id>`` the journal is two files in the journal directory (the PE's /run/peagent):

* ``events-<id>.jsonl``: one event (its JSON object, docs/status.md) per line, appended in
  ``seq`` order and flushed at once, so what was emitted is there even if the agent dies;
* ``events-<id>.sent``: the number of leading events the status server acknowledged. The
  sender replays from there: in order, from the first unacknowledged event, each with the ``id``
  it was journaled with, so the server can tell a replay from a new event.

A rerun of the same deployment (the agent started again in the same PE) opens the same files
and continues the numbering after the last event. A line cut short by a crash mid-write is
dropped when the journal is opened. Without a directory (the agent run outside the PE, or a
test) the journal lives in memory with the same behaviour, minus the rerun.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("peagent")


class JournalError(OSError):
    """The journal's files cannot be read or written: names the file and what went wrong."""


class Journal:
    """The events of one deployment, appended in order, and the count of those delivered."""

    def __init__(self, directory: Path | None, deployment_id: str) -> None:
        self.directory = directory
        self.deployment_id = deployment_id
        self._lock = threading.Lock()  # the sender reads while the deploy appends
        self._events: list[dict[str, Any]] = []
        self._sent = 0
        if directory is not None:
            self._events = _read_events(self.events_path)
            self._sent = min(_read_count(self.sent_path), len(self._events))

    @property
    def events_path(self) -> Path:
        assert self.directory is not None
        return self.directory / f"events-{self.deployment_id}.jsonl"

    @property
    def sent_path(self) -> Path:
        assert self.directory is not None
        return self.directory / f"events-{self.deployment_id}.sent"

    @property
    def next_seq(self) -> int:
        """The seq of the next event: 1 for a new deployment, one more than the last for a rerun."""
        with self._lock:
            return (self._events[-1]["seq"] + 1) if self._events else 1

    def append(self, event: dict[str, Any]) -> None:
        """Add one event (a JSON object) at the end, on disk before this returns (JournalError if it cannot be)."""
        line = json.dumps(event, separators=(",", ":")) + "\n"  # ASCII: a file name's odd bytes cannot break it
        with self._lock:
            # In memory first: a full or broken disk loses the rerun's continuity, not the event.
            self._events.append(event)
            if self.directory is not None:
                try:
                    with self.events_path.open("a", encoding="utf-8") as out:
                        out.write(line)
                except OSError as exc:
                    raise JournalError(f"cannot append to the event journal {self.events_path}: "
                                       f"{exc.strerror} (the event is kept in memory)") from None

    def events(self) -> list[dict[str, Any]]:
        """Every event so far, oldest first (copies of the list, not of the events)."""
        with self._lock:
            return list(self._events)

    def sent(self) -> int:
        with self._lock:
            return self._sent

    def unsent(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The events not yet acknowledged, oldest first (at most ``limit``)."""
        with self._lock:
            end = len(self._events) if limit is None else min(len(self._events), self._sent + limit)
            return self._events[self._sent:end]

    def mark_sent(self, count: int) -> None:
        """Record that the first ``count`` events were acknowledged (never moves back)."""
        with self._lock:
            count = min(count, len(self._events))
            if count <= self._sent:
                return
            self._sent = count
            if self.directory is not None:
                _write_count(self.sent_path, count)


def _read_events(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise JournalError(f"cannot read the event journal {path}: {exc.strerror}") from None
    end = data.rfind(b"\n") + 1
    if end < len(data):
        # A line cut short by a crash: it was never complete, so it was never sent either.
        log.warning("status: %s ended in a partial line (%d bytes); dropped", path, len(data) - end)
        with path.open("r+b") as f:
            f.truncate(end)
    events = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        try:
            event = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JournalError(f"{path} line {number}: not an event ({exc}); delete the file to start the "
                               "journal afresh") from None
        if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
            raise JournalError(f"{path} line {number}: expected an event object with an integer seq; delete the "
                               "file to start the journal afresh")
        events.append(event)
    return events


def _read_count(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise JournalError(f"cannot read {path}: {exc.strerror}") from None
    # A garbled count replays everything: the server drops the duplicates by id, nothing is lost.
    return int(text) if text.isdigit() else 0


def _write_count(path: Path, count: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(f"{count}\n")
        os.replace(tmp, path)  # never a half-written count
    except OSError as exc:
        raise JournalError(f"cannot write {path}: {exc.strerror}") from None
