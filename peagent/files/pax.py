"""The pax tar format's building blocks: ustar header blocks, pax records, sparse data maps.

A tar stream is a sequence of 512-byte blocks. Each entry is a ustar header block (name, mode,
numeric owner, size, mtime, type, link target, device numbers, and a checksum over the block)
followed by its data padded to a whole block. The header's fields are small (100-byte names,
octal numbers that stop at 8 GiB, whole seconds), so pax puts an extended header before an entry
that needs more: records ``LEN key=value\\n``, where LEN counts the whole record, itself
included. peagent.files.tree writes streams with these; this module only encodes.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

BLOCK = 512

TYPES = {stat.S_IFREG: b"0", stat.S_IFLNK: b"2", stat.S_IFCHR: b"3", stat.S_IFBLK: b"4", stat.S_IFDIR: b"5",
          stat.S_IFIFO: b"6"}
HARDLINK = b"1"


@dataclass(frozen=True)
class StatFields:  # what a header takes from a stat result, for an entry that stands for no file (a whiteout)
    st_mode: int
    st_mtime_ns: int = 0
    st_uid: int = 0
    st_gid: int = 0
    st_rdev: int = 0


def data_regions(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of each run of data in a file with holes; a hole at the end gets (size, 0),
    which tells GNU tar to extend the file to its size."""
    regions: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset
                break
            if exc.errno == errno.EINVAL:  # SEEK_DATA not supported here: all data, then
                return [(0, size)]
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        regions.append((start, end - start))
        offset = end
    if not regions or sum(regions[-1]) < size:
        regions.append((size, 0))
    return regions


def seconds(ns: int) -> bytes:
    sign = b"-" if ns < 0 else b""
    return sign + b"%d.%09d" % divmod(abs(ns), 1_000_000_000)


def record(key: str, value: bytes) -> bytes:
    """One pax record: ``LEN key=value\\n``, where LEN counts the whole record, itself included."""
    body = b" " + os.fsencode(key) + b"=" + value + b"\n"
    length = len(body)
    while len(body) + len(str(length)) != length:
        length = len(body) + len(str(length))
    return b"%d" % length + body


def octal(value: int, width: int) -> bytes:
    # A value too large is 0 here; the pax header carries it.
    return b"%0*o\0" % (width - 1, value if 0 <= value < 8 ** (width - 1) else 0)


def header(name: bytes, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, link: bytes = b"",
            device: tuple[int, int] = (0, 0)) -> bytes:
    """A ustar header block. Names longer than a field are cut; the pax header carries them whole."""
    block = b"".join((
        name[:100].ljust(100, b"\0"), octal(mode, 8), octal(uid, 8), octal(gid, 8), octal(size, 12),
        octal(mtime, 12), b" " * 8, kind, link[:100].ljust(100, b"\0"), b"ustar\x0000",
        bytes(64),  # uname and gname: empty, owners are numeric
        octal(device[0], 8), octal(device[1], 8), bytes(167)))
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)
