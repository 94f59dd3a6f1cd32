"""Is there room for the new OS: what a deletion frees (measure, on a tmp tree) and the refusal (check_room)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peagent.errors import NoSpaceError
from peagent.inplace import space
from peagent.inplace.space import MARGIN, Room, check_room, measure, need_for

MiB = 1 << 20
FREE = 123 * MiB


class FakeStatvfs:
    f_bavail = FREE // 4096
    f_frsize = 4096


@pytest.fixture(autouse=True)
def fixed_free_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """The free space measure() reads, fixed: the real one moves with whatever else writes to /tmp."""
    monkeypatch.setattr(space.os, "statvfs", lambda path: FakeStatvfs())


def write(root: Path, rel: str, size: int) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))  # random: no filesystem stores it sparse or compressed
    return path


def blocks(*paths: Path) -> int:
    return sum(os.lstat(p).st_blocks * 512 for p in paths)


def test_freed_counts_the_blocks_of_everything_deleted(tmp_path: Path) -> None:
    a = write(tmp_path, "usr/bin/a", 100_000)
    b = write(tmp_path, "usr/lib/b", 300_000)
    c = write(tmp_path, "boot/vmlinuz", 50_000)
    write(tmp_path, "home/ann/keep", 400_000)
    room = measure(tmp_path, ["usr", "boot", "not-there"], image_bytes=10 * MiB, headroom=8 * MiB)
    expected = blocks(a, b, c, tmp_path / "usr", tmp_path / "usr/bin", tmp_path / "usr/lib", tmp_path / "boot")
    assert room.freed == expected
    assert room.freed >= 450_000
    assert room == Room(free=FREE, freed=expected, need=need_for(10 * MiB, 8 * MiB), headroom=8 * MiB)


def test_a_file_with_two_links_both_deleted_counts_once(tmp_path: Path) -> None:
    a = write(tmp_path, "usr/lib/a", 1_000_000)
    os.link(a, tmp_path / "usr/bin-a")
    os.link(a, tmp_path / "etc-a")
    room = measure(tmp_path, ["usr", "etc-a"], image_bytes=0, headroom=0)
    assert room.freed == blocks(a, tmp_path / "usr", tmp_path / "usr/lib")


def test_a_file_with_a_link_in_a_kept_place_frees_nothing(tmp_path: Path) -> None:
    a = write(tmp_path, "usr/lib/a", 1_000_000)
    os.link(a, tmp_path / "home-a")
    room = measure(tmp_path, ["usr"], image_bytes=0, headroom=0)
    assert room.freed == blocks(tmp_path / "usr", tmp_path / "usr/lib")
    assert room.freed < 1_000_000


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    big = write(tmp_path, "outside/big", 4_000_000)
    root = tmp_path / "root"
    (root / "usr").mkdir(parents=True)
    os.symlink(big, root / "usr/big")
    os.symlink(tmp_path / "outside", root / "lib")
    room = measure(root, ["usr", "lib"], image_bytes=0, headroom=0)
    assert room.freed == blocks(root / "usr", root / "usr/big", root / "lib")
    assert room.freed < 100_000


def test_need_is_the_images_with_margin_plus_headroom() -> None:
    assert MARGIN == 0.05
    assert need_for(100 * MiB, 256 * MiB) == 105 * MiB + 256 * MiB
    assert need_for(0, 256 * MiB) == 256 * MiB


def test_fits_at_the_boundary() -> None:
    assert Room(free=60 * MiB, freed=40 * MiB, need=100 * MiB, headroom=0).fits
    assert not Room(free=60 * MiB, freed=40 * MiB, need=100 * MiB + 1, headroom=0).fits
    assert Room(free=0, freed=0, need=0, headroom=0).fits
    check_room(Room(free=60 * MiB, freed=40 * MiB, need=100 * MiB, headroom=0), "partition 2")


def test_check_room_refuses_with_the_numbers() -> None:
    room = Room(free=100 * MiB, freed=50 * MiB, need=200 * MiB, headroom=8 * MiB)
    with pytest.raises(NoSpaceError) as info:
        check_room(room, "partition 2 (/dev/vda2)")
    assert str(info.value) == (
        "partition 2 (/dev/vda2): the new OS does not fit, so nothing was deleted. room: 100 MiB free + 50 MiB "
        "freed by the deletion; the new OS needs 200 MiB (with 5% margin and 8 MiB headroom); short by 50 MiB. "
        "Free space on the partition (or keep less), or re-image the whole disk")


def test_the_shortfall_is_rounded_up_to_a_mib() -> None:
    with pytest.raises(NoSpaceError, match=r"short by 1 MiB\. "):
        check_room(Room(free=100 * MiB, freed=0, need=100 * MiB + 1, headroom=0), "p")
