"""Progress of a long transfer: bytes, rate and ETA, reported at a steady pace.

:class:`Progress` is fed byte counts by the writer and, at most once per ``interval``, hands a
:class:`Snapshot` to its sink (the console's progress bar and the status events, peagent.status);
the last one, from :meth:`Progress.finish`, is marked ``final``. The rate is a moving
average over the last few seconds so that a stall shows up as a falling rate, not an average
diluted by the good minutes before it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Snapshot:
    done: int
    total: int | None
    rate: float  # bytes/s over the recent window
    elapsed: float
    final: bool = False  # the last snapshot of this transfer (Progress.finish)

    @property
    def eta(self) -> float | None:
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def line(self, what: str) -> str:
        done = f"{self.done / MIB:.1f}"
        if self.total:
            head = f"{done}/{self.total / MIB:.1f} MiB ({100 * self.done / self.total:.0f}%)"
        else:
            head = f"{done} MiB"
        eta = self.eta
        tail = f" ETA {clock_text(eta)}" if eta is not None else ""
        return f"{what}: {head} {self.rate / MIB:.1f} MiB/s{tail}"


def clock_text(seconds: float) -> str:
    """Seconds as h:mm:ss (an ETA)."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int | None, sink: Callable[[Snapshot], None], *, interval: float = 2.0,
                 window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.sink = sink
        self.interval = interval
        self.window = window
        self.clock = clock
        self.done = 0
        self.start = clock()
        self._last_report = self.start
        self._samples: deque[tuple[float, int]] = deque([(self.start, 0)])

    def add(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if now - self._last_report >= self.interval:
            self._report(now)

    def finish(self) -> Snapshot:
        return self._report(self.clock(), final=True)

    def _report(self, now: float, final: bool = False) -> Snapshot:
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        rate = (self.done - d0) / (now - t0) if now > t0 else 0.0
        snap = Snapshot(done=self.done, total=self.total, rate=rate, elapsed=now - self.start, final=final)
        self._last_report = now
        self.sink(snap)
        return snap
