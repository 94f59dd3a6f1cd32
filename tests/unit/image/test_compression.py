from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os

import pytest
import zstandard

from peagent.errors import ImageError, VerifyError
from peagent.image.compression import (
    ZstdFrames,
    choose,
    decompressed_name,
    identify,
    open_decompressed,
    suffix_hint,
)
from peagent.image.readers import Peekable

DATA = os.urandom(300_000) + bytes(3 << 20) + b"some text " * 50_000
PARTS = (DATA[:100_000], DATA[100_000:2_000_000], DATA[2_000_000:])


def compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, 1)
    if kind == "xz":
        return lzma.compress(data, preset=0)
    if kind == "bzip2":
        return bz2.compress(data, 1)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data)
    return data


def members(kind: str) -> bytes:
    """Several members back to back, as pigz, pbzip2, xz --block or zstd -T0 (or cat) make them."""
    return b"".join(compress(kind, p) for p in PARTS)


def read_all(reader, size: int = 1 << 20) -> bytes:
    out = bytearray()
    while chunk := reader.read(size):
        assert len(chunk) <= size  # memory stays bounded whatever the ratio
        out += chunk
    return bytes(out)


KINDS = ("gzip", "xz", "bzip2", "zstd")


@pytest.mark.parametrize("kind", KINDS)
def test_every_member_is_read(kind) -> None:
    assert read_all(open_decompressed(io.BytesIO(members(kind)), kind)) == DATA


@pytest.mark.parametrize("kind", KINDS)
def test_small_reads_see_the_same_bytes(kind) -> None:
    assert read_all(open_decompressed(io.BytesIO(members(kind)), kind), 4096) == DATA


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_cut_anywhere_inside_a_member_is_an_error(kind) -> None:
    blob = members(kind)
    last_start = len(blob) - len(compress(kind, PARTS[-1]))
    for cut in (10, len(blob) // 2, last_start + 5, len(blob) - 1):
        with pytest.raises(VerifyError, match=r"ends (inside (member|frame) \d|before its first frame).*truncated"):
            read_all(open_decompressed(io.BytesIO(blob[:cut]), kind))


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_data_is_an_error(kind) -> None:
    blob = bytearray(members(kind))
    blob[len(blob) // 2] ^= 0x55
    with pytest.raises(VerifyError, match=rf"corrupt {kind} data|ends inside"):
        read_all(open_decompressed(io.BytesIO(bytes(blob)), kind))


@pytest.mark.parametrize("kind", ("gzip", "xz", "bzip2"))
def test_trailing_garbage_is_an_error_but_zero_padding_is_not(kind) -> None:
    blob = members(kind)
    assert read_all(open_decompressed(io.BytesIO(blob + bytes(512)), kind)) == DATA
    with pytest.raises(VerifyError) as info:
        read_all(open_decompressed(io.BytesIO(blob + b"\0\0\0\0garbage"), kind))
    assert str(info.value) == (f"after {kind} member 3, at compressed byte {len(blob) + 4}: 7+ bytes that are not "
                               f"{kind} data (first bytes 67 61 72 62 61 67 65): a corrupt or mixed file")


def test_trailing_garbage_after_zstd_frames_is_an_error() -> None:
    blob = members("zstd")
    with pytest.raises(VerifyError, match=rf"no frame starts at compressed byte {len(blob)} \(found 67 61 72 62\)"):
        read_all(open_decompressed(io.BytesIO(blob + b"garbage"), "zstd"))


def test_zstd_skippable_frames_are_skipped() -> None:
    """pzstd starts its files with a skippable frame; the seekable format ends with one."""
    skippable = (0x184D2A50).to_bytes(4, "little") + (6).to_bytes(4, "little") + b"pzstd!"
    blob = skippable + members("zstd") + skippable
    assert read_all(open_decompressed(io.BytesIO(blob), "zstd")) == DATA


def test_zstd_frames_follow_headers() -> None:
    blob = members("zstd")
    frames = ZstdFrames()
    for i in range(0, len(blob), 777):  # headers split across feeds
        frames.feed(blob[i:i + 777])
    assert frames.complete and frames.frames == 3
    frames = ZstdFrames()
    frames.feed(blob[:-1])
    assert not frames.complete


def test_a_gzip_bomb_is_read_in_bounded_pieces() -> None:
    blob = gzip.compress(bytes(64 << 20), 9)  # ~64 KiB expanding to 64 MiB
    reader = open_decompressed(io.BytesIO(blob), "gzip")
    total = 0
    while chunk := reader.read(1 << 20):
        assert len(chunk) <= 1 << 20
        total += len(chunk)
    assert total == 64 << 20


@pytest.mark.parametrize(("head", "found"), [
    (b"\x1f\x8b\x08\x00", "gzip"), (b"\xfd7zXZ\x00\x00", "xz"), (b"BZh91AY&SY", "bzip2"), (b"BZh0", "none"),
    (b"\x28\xb5\x2f\xfd\x04", "zstd"), (b"\x5f\x2a\x4d\x18\x00", "zstd"), (b"\x04\x22\x4d\x18", "lz4"),
    (b"QFI\xfb\x00\x00\x00\x03", "qcow2"), (b"PK\x03\x04", "zip"), (b"\xeb\x63\x90", "none"), (bytes(64), "none"),
    (b"", "none"),
])
def test_identify_by_magic(head, found) -> None:
    assert identify(head) == found


def test_suffixes() -> None:
    assert suffix_hint("a.img.gz") == (".gz", "gzip")
    assert suffix_hint("a.raw.ZST") == (".ZST", "zstd")
    assert suffix_hint("a.img") is None and suffix_hint("gz") is None
    assert suffix_hint("a.img.lz4") == (".lz4", "lz4")
    assert decompressed_name("debian.raw.xz") == "debian.raw"
    assert decompressed_name("a.img") == "a.img" and decompressed_name("a.img.lz4") == "a.img.lz4"


def test_choose_by_magic_with_the_suffix_as_a_hint() -> None:
    xz = compress("xz", b"x")
    assert choose(xz, "a.img.xz") == "xz"
    assert choose(xz, "a.img") == "xz"  # no compression suffix: the data decides
    assert choose(b"\xeb\x63\x90", "a.img") == "none"
    assert choose(xz, "a.img.xz", "xz") == "xz"


def test_a_suffix_the_data_contradicts_is_refused() -> None:
    with pytest.raises(ImageError) as info:
        choose(compress("xz", b"x"), "debian.raw.gz")
    assert str(info.value) == ("debian.raw.gz: the suffix .gz says gzip, but the data is xz (first bytes fd 37 7a 58 "
                               "5a 00 00 04); peagent streams raw (none), gzip, xz, bzip2 and zstd")
    with pytest.raises(ImageError, match=r"the suffix \.zst says zstd, but the data is not compressed \(raw\)"):
        choose(bytes(64), "a.img.zst")


def test_an_unsupported_format_is_named() -> None:
    with pytest.raises(ImageError) as info:
        choose(b"\x04\x22\x4d\x18\x64\x40\xa7", "a.img.lz4")
    assert str(info.value) == ("a.img.lz4 is lz4 data (first bytes 04 22 4d 18 64 40 a7); peagent streams raw (none), "
                               "gzip, xz, bzip2 and zstd")
    with pytest.raises(ImageError, match=r"a\.qcow2 is qcow2 data"):
        choose(b"QFI\xfb\x00\x00\x00\x03", "a.qcow2")
    with pytest.raises(ImageError, match=r"the suffix \.lz4 says lz4, but the data is not compressed"):
        choose(bytes(64), "a.img.lz4")


def test_an_explicit_compression_the_data_contradicts_is_refused() -> None:
    with pytest.raises(ImageError, match=r"a.img: compression 'gzip' was asked for, but the data is xz"):
        choose(compress("xz", b"x"), "a.img", "gzip")
    with pytest.raises(ImageError, match=r"compression 'none' was asked for, but the data is zstd"):
        choose(compress("zstd", b"x"), "a.img", "none")
    with pytest.raises(ImageError, match=r"unknown compression 'lz4': supported are auto, none, gzip, xz, bzip2, zstd"):
        choose(b"", "a.img", "lz4")


def test_peek_then_read_sees_every_byte_once() -> None:
    p = Peekable(io.BytesIO(b"0123456789"))
    assert p.peek(4) == b"0123" and p.peek(2) == b"01"
    assert p.read(2) == b"01" and p.read(5) == b"23" and p.read(5) == b"45678" and p.read() == b"9"
    assert Peekable(io.BytesIO(b"ab")).peek(64) == b"ab"
