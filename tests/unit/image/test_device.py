"""The target: hole policy, sparse files, direct I/O with its fallback, locking."""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from peagent.errors import DeviceError
from peagent.image import device as device_module
from peagent.image.device import Target, hole_method


@pytest.mark.parametrize(("known_zero", "is_file", "discard_zeroes", "expected"), [
    (True, False, None, "skip"), (True, True, None, "skip"), (False, True, None, "punch"),
    (False, False, True, "discard"), (False, False, False, "zeroout"), (False, False, None, "zeroout"),
])
def test_hole_method(known_zero, is_file, discard_zeroes, expected) -> None:
    assert hole_method(known_zero=known_zero, is_file=is_file, discard_zeroes=discard_zeroes) == expected


def aligned(data: bytes) -> memoryview:
    buf = mmap.mmap(-1, len(data) + 4096)
    buf[:len(data)] = data
    return memoryview(buf)[:len(data)]


def test_a_new_file_is_sparse_and_known_zero(tmp_path) -> None:
    path = tmp_path / "t.img"
    with Target(str(path), 3 << 20) as t:
        assert (t.zero_from, t.method, t.capacity) == (0, "skip", 3 << 20)
        t.write(8192, aligned(b"x" * 8192 + b"tail"))  # the unaligned tail goes through the page cache
        t.finish()
    assert path.stat().st_size == 3 << 20 and path.stat().st_blocks * 512 < 1 << 20
    assert path.read_bytes()[8192:16388] == b"x" * 8192 + b"tail"


def test_an_existing_file_is_not_known_zero_and_holes_are_punched(tmp_path) -> None:
    path = tmp_path / "t.img"
    path.write_bytes(b"\xff" * (1 << 20))
    with Target(str(path), 2 << 20) as t:
        assert (t.zero_from, t.method) == (1 << 20, "punch")
        assert t.zero(4096, 8192) == "punch"
        assert t.zero(1 << 20, 4096) == "skip"  # past the old end: zeros already
        t.finish()
    data = path.read_bytes()
    assert data[4096:12288] == bytes(8192) and data[:4096] == b"\xff" * 4096 and len(data) == 2 << 20


def test_a_file_of_holes_only_is_known_zero(tmp_path) -> None:
    path = tmp_path / "t.img"
    with path.open("wb") as f:
        f.truncate(1 << 20)
    with Target(str(path), 1 << 20) as t:
        assert t.zero_from == 0


def test_a_second_writer_is_refused(tmp_path) -> None:
    path = tmp_path / "t.img"
    with Target(str(path), 4096), pytest.raises(DeviceError, match="being written by another process"):
        Target(str(path), 4096)


def test_direct_io_falls_back_when_the_first_write_is_refused(tmp_path, monkeypatch) -> None:
    path = tmp_path / "t.img"
    real = os.pwrite
    calls = []

    def pwrite(fd, data, offset):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    with Target(str(path), 1 << 20) as t:
        if not t.direct:
            pytest.skip("this filesystem has no O_DIRECT at all")
        monkeypatch.setattr(device_module.os, "pwrite", pwrite)
        t.write(0, aligned(b"y" * 4096))
        assert not t.direct
        t.write(4096, aligned(b"z" * 4096))
        t.finish()
    assert path.read_bytes()[:8192] == b"y" * 4096 + b"z" * 4096


def test_not_a_file_nor_a_device(tmp_path) -> None:
    with pytest.raises(DeviceError, match="neither a block device nor a regular file"):
        Target(str(tmp_path), 4096)
