from __future__ import annotations

import io
import os

import pytest
import zstandard

from peagent.errors import DeviceError, FetchError, ImageError, VerifyError
from peagent.image.stream import BLOCK, write_image
from tests.support.images import sha256

DATA = os.urandom(BLOCK) + bytes(BLOCK) + b"tail" * 1000


def zstd_frames(data: bytes, parts: int = 3) -> bytes:
    """Several independent frames back to back, as parallel compressors write them."""
    c = zstandard.ZstdCompressor(level=1)
    step = len(data) // parts + 1
    return b"".join(c.compress(data[i:i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize(("compression", "blob"), [("none", DATA), ("zstd", zstd_frames(DATA))])
def test_writes_and_verifies(tmp_path, compression, blob) -> None:
    target = tmp_path / "t.img"
    target.write_bytes(b"old data that is longer than nothing" * 300_000)
    seen = []
    result = write_image(io.BytesIO(blob), str(target), compression=compression, sha256=sha256(DATA),
                         size=len(DATA), progress=seen.append)
    assert target.read_bytes() == DATA
    assert result.size == len(DATA) and result.sha256 == sha256(DATA)
    assert sum(seen) == len(DATA)


def test_a_corrupt_stream_is_never_success(tmp_path) -> None:
    bad = bytearray(DATA)
    bad[5] ^= 1
    with pytest.raises(VerifyError) as info:
        write_image(io.BytesIO(bytes(bad)), str(tmp_path / "t"), compression="none", sha256=sha256(DATA),
                    size=len(DATA))
    assert str(info.value) == f"sha256 of the {len(DATA)} bytes written is {sha256(bytes(bad))}; expected {sha256(DATA)}"


def test_a_truncated_stream_is_never_success(tmp_path) -> None:
    blob = zstd_frames(DATA, 1)
    with pytest.raises(VerifyError, match=rf"the image stream ended after \d+ bytes; expected {len(DATA)}$"):
        write_image(io.BytesIO(blob[: len(blob) // 2]), str(tmp_path / "t"), compression="zstd",
                    sha256=sha256(DATA), size=len(DATA))


def test_a_stream_longer_than_announced_stops(tmp_path) -> None:
    with pytest.raises(VerifyError, match="longer than the expected 100 bytes"):
        write_image(io.BytesIO(DATA), str(tmp_path / "t"), compression="none", sha256=sha256(DATA), size=100)


def test_unknown_compression(tmp_path) -> None:
    with pytest.raises(ImageError, match="unknown compression 'lz4'"):
        write_image(io.BytesIO(DATA), str(tmp_path / "t"), compression="lz4", sha256=sha256(DATA), size=None)


def test_a_fetch_error_in_the_reader_thread_reaches_the_caller(tmp_path) -> None:
    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 3:
                raise FetchError("the DP went away")
            return b"x" * min(size, 1 << 20)

    with pytest.raises(FetchError, match="the DP went away"):
        write_image(Failing(), str(tmp_path / "t"), compression="none", sha256="0" * 64, size=None)


def test_an_unwritable_target_is_a_device_error(tmp_path) -> None:
    with pytest.raises(DeviceError, match=r"cannot open .*/missing/t for writing: No such file or directory"):
        write_image(io.BytesIO(DATA), str(tmp_path / "missing" / "t"), compression="none",
                    sha256=sha256(DATA), size=None)
