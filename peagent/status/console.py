"""The console sink: a line per event, and for transfers a progress bar with rate and ETA.

Someone watching a machine deploy looks at its console (a screen, or a serial line captured to
a file). Events are log lines (``peagent: phase: message``). A transfer (erase, write, fetch,
apply) reports a :class:`~peagent.progress.Snapshot` every couple of seconds; how it is shown
depends on where the console goes:

* a terminal gets one line redrawn in place (carriage return, no newline) with a bar::

      write: 512.0/1024.0 MiB [##########----------]  50%  10.0 MiB/s  ETA 0:00:51

  and the next log line starts on a line of its own;
* anything else (a pipe, a file, a serial log read later) gets plain lines, one every
  ``interval`` seconds and the last one, so a log of a long transfer stays readable.

:func:`bar_text` is the pure rendering; :class:`Console` decides when and how to write it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from peagent.progress import MIB, Snapshot, clock_text

log = logging.getLogger("peagent")
BAR_WIDTH = 20
PLAIN_INTERVAL = 10.0  # seconds between plain progress lines


def bar_text(phase: str, snap: Snapshot, width: int = BAR_WIDTH) -> str:
    """One line: the phase and amounts first (what a log is searched for), then a bar and percent (when the
    total is known), the rate and the ETA."""
    rate = f"{snap.rate / MIB:.1f} MiB/s"
    if not snap.total:
        return f"{phase}: {snap.done / MIB:.1f} MiB  {rate}"
    fraction = min(1.0, max(0.0, snap.done / snap.total))
    filled = int(fraction * width)
    eta = snap.eta
    tail = f"  ETA {clock_text(eta)}" if eta is not None else ""
    return (f"{phase}: {snap.done / MIB:.1f}/{snap.total / MIB:.1f} MiB [{'#' * filled}{'-' * (width - filled)}] "
            f"{100 * fraction:3.0f}%  {rate}{tail}")


class Console:
    """Writes event lines through the log and progress to ``stream``: redrawn on a TTY, periodic otherwise."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, interval: float = PLAIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.interval = interval
        self.clock = clock
        self._bar_open = False  # a redrawn line is on the screen without its newline
        self._last_plain: dict[str, float] = {}

    def line(self, text: str, *, level: int = logging.INFO) -> None:
        """An event's line (through the log, so its format and level apply)."""
        self._close_bar()
        log.log(level, "%s", text)

    def progress(self, phase: str, snap: Snapshot) -> None:
        text = bar_text(phase, snap)
        if self.tty:
            # \r and clear-to-end-of-line: a shorter line must not leave the tail of a longer one behind
            self.stream.write(f"\rpeagent: {text}\x1b[K")
            self.stream.flush()
            self._bar_open = True
            if snap.final:
                self._close_bar()
            return
        now = self.clock()
        last = self._last_plain.get(phase)
        if snap.final or last is None or now - last >= self.interval:
            self._last_plain[phase] = now
            log.info("%s", text)
        if snap.final:
            self._last_plain.pop(phase, None)

    def _close_bar(self) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_open = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False
