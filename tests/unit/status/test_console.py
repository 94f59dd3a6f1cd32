"""The console sink: the bar's text for known snapshots, redrawn on a TTY, periodic plain lines otherwise."""

from __future__ import annotations

import io
import logging

import pytest

from peagent.progress import MIB, Snapshot
from peagent.status.console import Console, bar_text


@pytest.mark.parametrize(("snap", "text"), [
    (Snapshot(done=512 * MIB, total=1024 * MIB, rate=10 * MIB, elapsed=51.2),
     "write: 512.0/1024.0 MiB [##########----------]  50%  10.0 MiB/s  ETA 0:00:51"),
    (Snapshot(done=0, total=100 * MIB, rate=0.0, elapsed=0.0),
     "write: 0.0/100.0 MiB [--------------------]   0%  0.0 MiB/s"),
    (Snapshot(done=100 * MIB, total=100 * MIB, rate=25 * MIB, elapsed=4.0, final=True),
     "write: 100.0/100.0 MiB [####################] 100%  25.0 MiB/s  ETA 0:00:00"),
    (Snapshot(done=3 * 1024 * MIB, total=4 * 1024 * MIB, rate=MIB / 4, elapsed=9.0),
     "write: 3072.0/4096.0 MiB [###############-----]  75%  0.2 MiB/s  ETA 1:08:16"),
    (Snapshot(done=int(12.34 * MIB), total=None, rate=2 * MIB, elapsed=6.0),
     "write: 12.3 MiB  2.0 MiB/s"),
])
def test_bar_text(snap: Snapshot, text: str) -> None:
    assert bar_text("write", snap) == text


def test_more_than_the_total_is_a_full_bar() -> None:
    assert "[####################] 100%" in bar_text("erase", Snapshot(done=150, total=100, rate=1.0, elapsed=1.0))


def snaps() -> list[Snapshot]:
    return [Snapshot(done=i * MIB, total=4 * MIB, rate=MIB, elapsed=float(i), final=i == 4) for i in range(1, 5)]


def test_a_tty_gets_one_line_redrawn_then_closed(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    console = Console(out, tty=True)
    for snap in snaps()[:2]:
        console.progress("write", snap)
    assert out.getvalue() == ("\rpeagent: " + bar_text("write", snaps()[0]) + "\x1b[K"
                              + "\rpeagent: " + bar_text("write", snaps()[1]) + "\x1b[K")
    with caplog.at_level(logging.INFO, logger="peagent"):
        console.line("verify: ok")
    assert out.getvalue().endswith("\x1b[K\n")  # the next line starts on its own
    assert caplog.messages == ["verify: ok"]
    console.progress("write", snaps()[3])
    assert out.getvalue().endswith(bar_text("write", snaps()[3]) + "\x1b[K\n")  # the last one ends its line


def test_elsewhere_plain_lines_at_the_interval_and_the_last(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    now = [0.0]
    console = Console(out, tty=False, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="peagent"):
        for i, snap in enumerate(snaps()):
            now[0] = i * 3.0  # 0, 3, 6, 9 s: only the first is due; the last is the last
            console.progress("write", snap)
    assert out.getvalue() == ""  # nothing redrawn
    assert caplog.messages == [bar_text("write", snaps()[0]), bar_text("write", snaps()[3])]


def test_a_stream_without_a_terminal_is_not_a_tty() -> None:
    assert Console(io.StringIO()).tty is False
