"""Status events of a deployment, on the console and, when a URL is given, to an HTTP endpoint.

Each phase of a deploy (task, inventory, plan, write, verify, done or failed) is one event: a
small JSON object with the deployment id, the machine's identity, the phase, a message and,
for transfers, bytes done and total, rate and ETA. The console line is always printed; the
HTTP POST is best effort with a short timeout, so a status server that is down never slows or
fails a deployment (it is logged once).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from peagent.fetch import new_session
from peagent.progress import Snapshot

log = logging.getLogger("peagent")
POST_TIMEOUT = (2.0, 2.0)


@dataclass
class Event:
    phase: str
    message: str
    deployment_id: str | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    done: int | None = None
    total: int | None = None
    rate: float | None = None
    eta: float | None = None
    error_code: str | None = None
    data: dict[str, Any] | None = None  # a step's structured result (the captured state, public part)


class Reporter:
    def __init__(self, url: str | None = None, session: requests.Session | None = None) -> None:
        self.url = url
        self.session = session or (new_session() if url else None)
        self.deployment_id: str | None = None
        self.machine: dict[str, Any] = {}
        self._post_failed = False

    def emit(self, phase: str, message: str, *, echo: bool = True, **fields: Any) -> None:
        """Report a phase; ``echo=False`` when the caller prints the message itself (errors)."""
        if echo:
            log.info("%s: %s", phase, message)
        self._post(Event(phase, message, self.deployment_id, self.machine, **fields))

    def progress(self, phase: str, snap: Snapshot) -> None:
        log.info("%s", snap.line(phase))
        self._post(Event(phase, "progress", self.deployment_id, self.machine, done=snap.done,
                         total=snap.total, rate=snap.rate, eta=snap.eta))

    def _post(self, event: Event) -> None:
        if not self.url or self.session is None:
            return
        try:
            self.session.post(self.url, json=asdict(event), timeout=POST_TIMEOUT).raise_for_status()
            self._post_failed = False
        except requests.RequestException as exc:
            if not self._post_failed:
                log.warning("status: cannot post to %s (%s); continuing without", self.url, exc)
            self._post_failed = True
