from __future__ import annotations

from peagent.progress import MIB, Progress, Snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reports_at_the_interval_with_rate_and_eta() -> None:
    clock, seen = Clock(), []
    p = Progress(100 * MIB, seen.append, interval=2.0, window=10.0, clock=clock)
    for _ in range(4):
        clock.now += 1.0
        p.add(10 * MIB)
    assert [s.done for s in seen] == [20 * MIB, 40 * MIB]
    assert seen[-1].rate == 10 * MIB
    assert seen[-1].eta == 6.0
    assert seen[-1].line("write") == "write: 40.0/100.0 MiB (40%) 10.0 MiB/s ETA 0:00:06"


def test_rate_follows_a_stall_within_the_window() -> None:
    clock, seen = Clock(), []
    p = Progress(None, seen.append, interval=1.0, window=4.0, clock=clock)
    for _ in range(10):
        clock.now += 1.0
        p.add(10 * MIB)
    for _ in range(6):  # the link stalls
        clock.now += 1.0
        p.add(0)
    assert seen[-1].rate < 3 * MIB
    assert seen[-1].eta is None
    assert seen[-1].line("write").endswith("MiB/s")


def test_snapshot_without_rate_has_no_eta() -> None:
    assert Snapshot(done=0, total=10, rate=0.0, elapsed=0.0).eta is None


def test_only_the_finishing_snapshot_is_final() -> None:
    clock, seen = Clock(), []
    p = Progress(30 * MIB, seen.append, interval=1.0, clock=clock)
    for _ in range(3):
        clock.now += 1.0
        p.add(10 * MIB)
    last = p.finish()
    assert [s.final for s in seen] == [False, False, False, True]
    assert last is seen[-1] and last.done == 30 * MIB
