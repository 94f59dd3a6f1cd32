from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from peagent.errors import DeviceError, ImageError, PeagentError, UsageError
from peagent.image.sources import device_users, open_source, sniff
from peagent.progress import Progress

DATA = random.Random(3).randbytes(300_000) + bytes(200_000) + b"text " * 40_000


def compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "bzip2":
        return bz2.compress(data)
    return zstandard.ZstdCompressor().compress(data)


def read_all(name: str, **kwargs) -> tuple[str, bytes, int | None]:
    with open_source(name, **kwargs) as s:
        chunks = []
        while chunk := s.stream.read(65536):
            chunks.append(chunk)
        return s.format, b"".join(chunks), s.size


def test_a_raw_file_is_read_as_it_is_with_its_size(tmp_path: Path) -> None:
    (tmp_path / "disk.img").write_bytes(DATA)
    assert read_all(str(tmp_path / "disk.img")) == ("raw", DATA, len(DATA))


@pytest.mark.parametrize("kind", ["gzip", "xz", "bzip2", "zstd"])
def test_compressed_files_are_told_by_magic_and_every_member_is_read(tmp_path: Path, kind: str) -> None:
    # Two members back to back (pigz, xz -T, pbzip2, zstd -T write such files), under a misleading name.
    path = tmp_path / "image.raw"
    path.write_bytes(compress(kind, DATA[:250_000]) + compress(kind, DATA[250_000:]))
    found, data, size = read_all(str(path))
    assert (found, size) == (kind, None)
    assert data == DATA


def test_a_truncated_compressed_file_is_an_error_not_a_short_image(tmp_path: Path) -> None:
    whole = compress("xz", DATA)
    (tmp_path / "cut.xz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(PeagentError, match="truncated"):  # peagent.image.compression says which
        read_all(str(tmp_path / "cut.xz"))


def test_progress_of_a_compressed_file_counts_the_compressed_bytes_for_an_eta(tmp_path: Path) -> None:
    blob = compress("gzip", DATA)
    (tmp_path / "a.gz").write_bytes(blob)
    snaps = []
    with open_source(str(tmp_path / "a.gz")) as s:
        assert s.progress_total == len(blob)
        progress = Progress(s.progress_total, snaps.append, interval=0)
        track = s.track(progress.add)
        while chunk := s.stream.read(65536):
            track(len(chunk))
    assert progress.done == len(blob)  # all of the file, whatever it expanded to


@pytest.mark.parametrize(("head", "name"), [
    (b"\x04\x22\x4d\x18rest", "lz4"),
    (b"PK\x03\x04rest", "zip"),
    (b"MSWIM\x00\x00\x00rest", "WIM"),
    (b"7z\xbc\xaf\x27\x1crest", "7-zip"),
])
def test_unknown_formats_are_refused_naming_what_was_found_and_what_is_supported(
        tmp_path: Path, head: bytes, name: str) -> None:
    (tmp_path / "x.img").write_bytes(head + bytes(600))
    with pytest.raises(ImageError) as err:
        read_all(str(tmp_path / "x.img"))
    assert name in str(err.value)
    assert "supported: raw (a file, a block device, or - for stdin), gzip, xz, zstd, bzip2, qcow2" in str(err.value)


def test_sniff_tells_virtual_disks_and_leaves_anything_else_raw() -> None:
    assert sniff(b"QFI\xfb" + bytes(100)) == "qcow2"
    assert sniff(bytes(64) + b"\x7f\x10\xda\xbe" + bytes(10)) == "vdi"
    assert sniff(b"conectix" + bytes(10)) == "vpc"
    assert sniff(b"\xeb\x63\x90" + bytes(509)) == "raw"  # an MBR's jump: a disk image
    assert sniff(b"BZh" + bytes(10)) == "raw"  # "BZh" without a block size digit is not bzip2
    assert sniff(b"") == "raw"


def test_a_compressed_virtual_disk_is_refused_with_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "a.qcow2.xz").write_bytes(lzma.compress(b"QFI\xfb" + bytes(1000)))
    with pytest.raises(ImageError, match=r"is xz holding qcow2: decompress it first"):
        read_all(str(tmp_path / "a.qcow2.xz"))


def test_missing_source_and_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read the source .*nope: No such file"):
        read_all(str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="neither a file nor a block device"):
        read_all(str(tmp_path))


def test_standard_input_is_sniffed_without_losing_bytes() -> None:
    code = ("import sys; from peagent.image.sources import open_source\n"
            "with open_source('-') as s:\n"
            "    out = b''\n"
            "    while chunk := s.stream.read(70000): out += chunk\n"
            "    sys.stdout.write(f'{s.format} {len(out)} {hash(out)}')")
    for payload, kind in ((DATA, "raw"), (gzip.compress(DATA), "gzip")):
        result = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=True,
                                env=dict(os.environ, PYTHONHASHSEED="0"))
        fmt, size, _ = result.stdout.decode().split()
        assert (fmt, int(size)) == (kind, len(DATA))


def test_a_virtual_disk_without_qemu_img_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "a.img").write_bytes(b"QFI\xfb" + bytes(1000))
    with pytest.raises(ImageError, match=r"needs qemu-img \(Debian: qemu-utils\)"):
        read_all(str(tmp_path / "a.img"), qemu_img="/nonexistent/qemu-img")


def test_device_users_names_mounts_of_the_disk_and_its_partitions(tmp_path: Path) -> None:
    sys_block = tmp_path / "sys"
    for name, dev in (("sdz", "8:240"), ("sdz1", "8:241"), ("sdz2", "8:242")):
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "dev").write_text(dev + "\n")
    for part in ("sdz1", "sdz2"):
        (sys_block / "sdz" / part).mkdir()
        (sys_block / "sdz" / part / "partition").write_text("1\n")
    (sys_block / "sdz2" / "holders" / "dm-0").mkdir(parents=True)
    mountinfo = ("22 1 8:241 / /mnt/golden rw,relatime shared:1 - ext4 /dev/sdz1 rw\n"
                 "23 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    assert device_users("/dev/sdz", mountinfo, sys_block) == [
        "/dev/sdz1 is mounted on /mnt/golden", "/dev/sdz2 is held by dm-0"]


def test_a_busy_device_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from peagent.image import sources

    calls = []

    def fake_open(path: str, flags: int) -> int:
        calls.append(flags & os.O_EXCL)
        if flags & os.O_EXCL:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return 99

    monkeypatch.setattr(sources.os, "open", fake_open)
    monkeypatch.setattr(sources, "device_users", lambda path: ["/dev/sdz1 is mounted on /"])
    with pytest.raises(DeviceError, match=r"/dev/sdz is in use \(/dev/sdz1 is mounted on /\).*--allow-mounted"):
        sources._open_device("/dev/sdz", allow_mounted=False)
    assert sources._open_device("/dev/sdz", allow_mounted=True) == 99
    assert calls == [os.O_EXCL, os.O_EXCL, 0]


def test_read_exactly_gathers_short_reads() -> None:
    from peagent.image.readers import read_exactly

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.left = 10

        def read(self, size: int = -1) -> bytes:
            if not self.left:
                return b""
            self.left -= 1
            return b"x"

    assert read_exactly(Trickle(), 4) == b"xxxx"
