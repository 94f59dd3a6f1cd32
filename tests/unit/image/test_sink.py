from __future__ import annotations

import os

import pytest

from peagent.errors import DeviceError
from peagent.image.sink import InPlace, Sink

MIB = 1 << 20


def run(tracker: InPlace, matches: list[bool], block: int = 4 * MIB) -> list[bool]:
    """Which blocks were compared, given whether each block would match."""
    compared = []
    for same in matches:
        c = tracker.should_compare()
        compared.append(c)
        if c:
            tracker.record(same, block)
    return compared


def test_in_place_compares_everything_while_it_matches() -> None:
    assert run(InPlace(), [True] * 100) == [True] * 100


def test_in_place_samples_after_a_long_mismatch_and_resumes_when_data_matches_again() -> None:
    tracker = InPlace(give_up=16 * MIB, sample_every=4)
    # 4 blocks differ (give up), then samples; data matches again from block 20 on (writeback lost a stretch).
    compared = run(tracker, [False] * 20 + [True] * 10)
    assert compared[:4] == [True] * 4
    assert compared[4:20].count(True) == 4  # one in four
    first_match = compared.index(True, 20)
    assert first_match < 24 and all(compared[first_match:])


def test_in_place_disabled_never_compares() -> None:
    assert run(InPlace(enabled=False), [True] * 5) == [False] * 5


def test_a_short_file_is_zeros_past_its_end(tmp_path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"x" * MIB)
    sink = Sink(str(path))
    try:
        assert sink.is_file and sink.target.zero_from == MIB
        sink.write(0, b"x" * MIB)  # already there: compared, not written
        sink.write(MIB, bytes(MIB))  # past the end: zeros need no write
        sink.write(2 * MIB, b"y" * MIB)
        sink.hole(3 * MIB, MIB)
        sink.finish(4 * MIB)
    finally:
        sink.close()
    assert sink.counts.in_place == MIB and sink.counts.zero_skipped == MIB and sink.counts.written == MIB
    assert sink.counts.holes == {"skip": MIB}
    assert path.read_bytes() == b"x" * MIB + bytes(MIB) + b"y" * MIB + bytes(MIB)
    assert os.stat(path).st_blocks * 512 < 3 * MIB  # the zeros are holes


def test_holes_over_old_data_are_zeroed(tmp_path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"o" * 3 * MIB)
    sink = Sink(str(path), resume=False)
    try:
        sink.write(0, b"d" * MIB)
        sink.hole(MIB, MIB // 2)
        sink.hole(MIB + MIB // 2, 2 * MIB)  # batched with the one before; its end is past the old data
        sink.finish(3 * MIB + MIB // 2)
    finally:
        sink.close()
    assert path.read_bytes() == b"d" * MIB + bytes(2 * MIB + MIB // 2)
    assert sink.counts.holes == {"punch": 2 * MIB, "skip": MIB // 2}
    assert sink.counts.written == MIB and sink.counts.in_place == 0


def test_holes_can_be_kept(tmp_path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"o" * 2 * MIB)
    sink = Sink(str(path), holes="keep")
    try:
        sink.hole(0, MIB)
        sink.finish(2 * MIB)
    finally:
        sink.close()
    assert path.read_bytes() == b"o" * 2 * MIB and sink.counts.holes == {"kept": MIB}


def test_a_missing_directory_is_a_device_error(tmp_path) -> None:
    with pytest.raises(DeviceError, match=r"cannot open .*/no/t for writing: No such file or directory"):
        Sink(str(tmp_path / "no" / "t"))
