"""What ``peagent serve`` reads from its disk while it runs, and rereads when it changes.

Two inputs are edited by administrators while machines boot, so the server never caches them
for good: the **assignment configuration** (``peagent-serve.json``: a rule changed takes effect
at the next request, and a broken edit keeps the previous rules) and the **static task files**
under ``DIR/tasks/`` whose ``status.token`` lets a deployment the server did not hand out (a task
served as a file, here or by nginx) post its events. Both are read by stat stamp, so an unchanged
file is never parsed twice, and a token lookup that misses rescans at most once a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from peagent.server.assign import AssignmentError, Assignments, load_assignments

log = logging.getLogger("peagent.serve")
MAX_TASK_FILE = 1 << 20
STATIC_RESCAN = 1.0  # seconds: at most this often the task files are looked through again for a token


class ConfigSource:
    """The assignment configuration, read again whenever its file changes (no restart to change a rule).

    A change that does not validate is logged and the previous configuration kept: a typo made
    while machines are booting must not take assignments down. Without a file: the defaults.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._current = Assignments()
        if path is not None:
            self._current = load_assignments(path)  # at start, an error is the caller's to report
            self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def current(self) -> Assignments:
        if self.path is None:
            return self._current
        with self._lock:
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._current = load_assignments(self.path)
                    log.info("assignments reloaded from %s", self.path)
                except AssignmentError as exc:
                    log.error("assignments in %s not reloaded, the previous ones stay: %s", self.path, exc)
            return self._current


class StaticTokens:
    """The tokens of static task files: ``DIR/tasks/**.json`` with an ``id`` and a ``status.token``.

    Such a task (served as a file, by this server or by nginx) names its deployment id and token
    itself. The files are indexed by id, each reread only when it changes, and the index is
    refreshed when a lookup misses, at most once per :data:`STATIC_RESCAN` seconds, so a flood of
    wrong tokens cannot make the server reread the directory over and over.
    """

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.tasks = root / "tasks"
        self._clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, tuple[tuple[int, int], str | None, bytes | None]] = {}
        self._index: dict[str, list[bytes]] = {}
        self._scanned: float | None = None

    def matches(self, deployment_id: str, token: str) -> bool:
        given = hashlib.sha256(token.encode()).digest()
        with self._lock:
            if self._found(deployment_id, given):
                return True
            now = self._clock()
            if self._scanned is not None and now - self._scanned < STATIC_RESCAN:
                return False
            self._scanned = now
            self._scan()
            return self._found(deployment_id, given)

    def _found(self, deployment_id: str, given: bytes) -> bool:
        matched = False
        for stored in self._index.get(deployment_id, []):
            matched |= hmac.compare_digest(stored, given)
        return matched

    def _scan(self) -> None:
        seen: dict[str, tuple[tuple[int, int], str | None, bytes | None]] = {}
        for folder, _dirs, names in os.walk(self.tasks):
            for name in names:
                if not name.endswith(".json"):
                    continue
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                stamp = (st.st_mtime_ns, st.st_size)
                known = self._files.get(path)
                seen[path] = known if known is not None and known[0] == stamp else (stamp, *_task_token(path, st))
        self._files = seen
        index: dict[str, list[bytes]] = {}
        for _stamp, task_id, digest in seen.values():
            if task_id is not None and digest is not None:
                index.setdefault(task_id, []).append(digest)
        self._index = index


def _task_token(path: str, st: os.stat_result) -> tuple[str | None, bytes | None]:
    """A task file's id and the hash of its status token; (None, None) when it has not both."""
    if st.st_size > MAX_TASK_FILE:
        return None, None
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None, None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return None, None
    status = doc.get("status")
    token = status.get("token") if isinstance(status, dict) else None
    if not isinstance(token, str) or not token:
        return None, None
    return doc["id"], hashlib.sha256(token.encode()).digest()
