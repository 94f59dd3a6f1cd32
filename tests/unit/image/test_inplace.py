"""The in-place check: which frames are read, when discovery stops, sampling a base, scanning."""

from __future__ import annotations

import hashlib

from peagent.image import inplace
from peagent.image.format import BLOCK
from peagent.image.inplace import CheckPlan, check, choose, holds_image, scan
from tests.support.imagekit import make_tables

FRAME = 4 * BLOCK


def image(n: int, seed: int = 0) -> bytes:
    return b"".join(hashlib.sha256(bytes([seed, i % 256, i // 256])).digest() * (FRAME // 32) for i in range(n))


class Disk:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def read(self, offset: int, count: int) -> bytes:
        self.reads += count
        return self.data[offset:offset + count]


def test_choose_expected_first_then_discovery() -> None:
    new = make_tables(image(6) + bytes(FRAME) + image(1, 9), FRAME)
    view = bytearray(new.blocks.hashes)
    view[8:16] = bytes(8)  # frame 0's second block is believed to differ
    plan = choose(new, done={5}, target_zero=False, view=bytes(view))
    assert plan.expected == [1, 2, 3, 4, 7] and plan.discover == [0] and plan.misses == inplace.DISCOVERY_MISSES
    assert choose(new, done=set(), target_zero=True) == CheckPlan([], [], 0)
    assert choose(new, done=set(), target_zero=False, mode="none").discover == []
    assert choose(new, done=set(), target_zero=False, mode="full").misses > 1 << 60


def test_discovery_stops_after_a_run_of_misses(monkeypatch) -> None:
    monkeypatch.setattr(inplace, "DISCOVERY_MISSES", 8 * FRAME)
    monkeypatch.setattr(inplace, "BATCH", 2 * FRAME)
    new = make_tables(image(100), FRAME)
    disk = Disk(new.data[:10 * FRAME] + bytes(90 * FRAME))  # an interrupted write: 10 frames made it
    found, read = check(disk.read, new, choose(new, done=set(), target_zero=False))
    assert found == set(range(10))
    assert read == 18 * FRAME  # stopped after 8 frames of misses
    assert disk.reads <= 18 * FRAME + 3 * 2 * FRAME  # and the batches read ahead meanwhile


def test_a_whole_image_in_place_is_found_whole() -> None:
    new = make_tables(image(40), FRAME)
    found, read = check(Disk(new.data).read, new, choose(new, done=set(), target_zero=False))
    assert found == set(range(40)) and read == 40 * FRAME


def test_holds_image_samples_a_few_frames() -> None:
    base = make_tables(image(64, 1), FRAME)
    disk = Disk(base.data)
    assert holds_image(disk.read, base, len(base.data)) and disk.reads == 16 * FRAME
    assert not holds_image(Disk(image(64, 2)).read, base, len(base.data))
    assert not holds_image(disk.read, base, len(base.data) - 1)  # does not even fit


def test_scan_hashes_every_block_and_finds_frames_in_place() -> None:
    new = make_tables(image(8), FRAME)
    on_disk = bytearray(new.data)
    on_disk[3 * FRAME] ^= 1
    view, found = scan(Disk(bytes(on_disk)).read, new, len(on_disk))
    assert found == set(range(8)) - {3}
    assert view.hashes[:12 * 8] == new.blocks.hashes[:12 * 8] and view.hashes[12 * 8:13 * 8] != new.blocks[12]


def test_scan_over_many_batches_keeps_every_batch_in_order(monkeypatch) -> None:
    # A disk of many read batches, more than the threads keep in flight: each block's hash lands at its
    # own place (a batch dropped or shifted would make every later local copy wrong).
    monkeypatch.setattr(inplace, "BATCH", 2 * FRAME)
    new = make_tables(image(40), FRAME)
    view, found = scan(Disk(new.data).read, new, len(new.data), threads=2)
    assert found == set(range(40))
    assert view.hashes == new.blocks.hashes
