"""Decompressing a third-party image on the fly: gzip, xz, bzip2, zstd or none, told apart by magic bytes.

Third-party images come as ``.img``/``.raw``, ``.gz``, ``.xz``, ``.bz2`` or ``.zst``. What a file
*is* is decided by its first bytes (:func:`identify`), read through a
:class:`~peagent.image.readers.Peekable` so that nothing is fetched twice; the name's suffix is a
hint (:func:`choose`). A compression suffix that the data contradicts (a ``.gz`` that is xz), a
format peagent does not stream (lz4, zip, qcow2, ...) or an explicit setting the data contradicts
is an :class:`~peagent.errors.ImageError` naming what was found and what is supported: writing the
wrong bytes to a disk and finding out from a checksum after an hour is worse than refusing now.
A name without a compression suffix (``.img``, ``.raw``) gives no hint: the data decides.

Every format allows several members back to back (``pbzip2``, ``pzstd``, ``gzip -c a b``,
``cat a.xz b.xz`` write such files) and all of them are read, where a naive reader would stop
silently after the first. Every way a stream can be short or damaged is a
:class:`~peagent.errors.VerifyError`, never an early end: Python's ``LZMAFile`` and ``BZ2File``
ignore a damaged member after the first, and python-zstandard's ``stream_reader`` returns a frame
cut short as if it were complete, so:

* gzip, xz, bzip2 go through :class:`_MultiMember`, which feeds the stdlib decompressor objects
  with an output limit (a MiB of compressed zeros can expand to gigabytes) and raises when the
  input ends inside a member or a member is followed by anything but zero padding;
* zstd goes through ``stream_reader`` (which checks each frame's checksum and releases the GIL),
  with :class:`ZstdFrames` watching the compressed bytes on their way in: it follows the
  frame and block headers, so that a stream that ends between two headers is told from one
  that ends inside a frame.

Integrity checks are the formats' own: gzip's CRC-32 and length, xz's check (CRC-64 by
default), bzip2's block CRCs, zstd's content checksum when the frame has one. They catch
corruption in transit; the image's digest (or its bmap) is what proves it is the right image.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Any

import zstandard

from peagent.errors import ImageError, VerifyError
from peagent.image.readers import Counter, Readable

SUPPORTED = ("none", "gzip", "xz", "bzip2", "zstd")
SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".xz": "xz", ".bz2": "bzip2", ".bzip2": "bzip2",
            ".zst": "zstd", ".zstd": "zstd"}
HEAD = 64  # bytes peeked to identify a stream
READ = 1 << 20  # compressed bytes per read from the source

# Formats recognised only to be refused by name; suffix -> name.
UNSUPPORTED_SUFFIXES = {".lz4": "lz4", ".lzo": "lzop", ".lzma": "lzma", ".zip": "zip", ".7z": "7z",
                        ".qcow2": "qcow2", ".vmdk": "VMDK", ".vhdx": "VHDX", ".vdi": "VDI", ".Z": "compress (.Z)"}
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x89LZO\x00\r\n\x1a\n", "lzop"),
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"QFI\xfb", "qcow2"),
    (b"KDMV", "VMDK"),
    (b"vhdxfile", "VHDX"),
    (b"<<< Oracle VM VirtualBox Disk Image >>>", "VDI"),
    (b"\x1f\x9d", "compress (.Z)"),
)
_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # 0x184D2A50-0x184D2A5F: skippable frames (pzstd starts files with one)

_CORRUPT = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)


def identify(head: bytes) -> str:
    """What the first bytes of a stream are: one of SUPPORTED, or the name of a refused format."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0":
        return "bzip2"
    if len(head) >= 4 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
        return "zstd"
    return "none"


def suffix_hint(name: str) -> tuple[str, str] | None:
    """(suffix, format) when the file name ends in a compression suffix, else None."""
    dot = name.rfind(".")
    if dot <= 0:
        return None
    suffix = name[dot:]
    found = SUFFIXES.get(suffix.lower()) or UNSUPPORTED_SUFFIXES.get(suffix)
    return (suffix, found) if found else None


def decompressed_name(name: str) -> str:
    """The image's name without its compression suffix (``a.img.xz`` -> ``a.img``), as bmaptool strips it."""
    hint = suffix_hint(name)
    return name[: -len(hint[0])] if hint and hint[1] in SUPPORTED else name


def choose(head: bytes, name: str, asked: str = "auto") -> str:
    """The compression to decode ``name`` with, from its first bytes, its suffix and what was asked.

    Raises ImageError when they disagree or the data is of a format peagent does not stream.
    """
    if asked != "auto" and asked not in SUPPORTED:
        raise ImageError(f"unknown compression {asked!r}: supported are auto, {', '.join(SUPPORTED)}")
    found = identify(head)
    supported = "raw (none), gzip, xz, bzip2 and zstd"
    if found not in SUPPORTED:
        raise ImageError(f"{name or 'the image'} is {found} data (first bytes {head[:8].hex(' ')}); "
                         f"peagent streams {supported}")
    if asked != "auto" and asked != found:
        raise ImageError(f"{name or 'the image'}: compression {asked!r} was asked for, but the data is "
                         f"{_describe(found)} (first bytes {head[:8].hex(' ')}); fix the setting or use auto")
    hint = suffix_hint(name)
    if hint is not None and hint[1] != found:
        raise ImageError(f"{name}: the suffix {hint[0]} says {hint[1]}, but the data is {_describe(found)} "
                         f"(first bytes {head[:8].hex(' ')}); peagent streams {supported}")
    return found


def _describe(found: str) -> str:
    return "not compressed (raw)" if found == "none" else found


def open_decompressed(source: Readable, compression: str) -> Readable:
    """A reader of the decompressed bytes of ``source`` (one of SUPPORTED, already chosen)."""
    if compression == "none":
        return source
    if compression == "zstd":
        return _Zstd(source)
    if compression in _CODECS:
        return _MultiMember(source, compression)
    raise ImageError(f"unknown compression {compression!r}: supported are {', '.join(SUPPORTED)}")


class _Codec:
    """One member's decompressor behind one interface (zlib's differs from lzma's and bz2's)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._zlib = kind == "gzip"
        self._d: Any
        if kind == "gzip":
            self._d = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer (CRC-32, length)
        elif kind == "xz":
            self._d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        else:
            self._d = bz2.BZ2Decompressor()

    def feed(self, data: bytes, limit: int) -> bytes:
        """Up to ``limit`` bytes out; what zlib could not take yet waits in its unconsumed_tail."""
        if self._zlib:
            tail = self._d.unconsumed_tail
            return self._d.decompress(tail + data if tail else data, limit)
        return self._d.decompress(data, limit)

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused(self) -> bytes:
        return self._d.unused_data

    def wants_input(self, produced: int, limit: int) -> bool:
        if self._zlib:
            # Output stopped short of the limit with no input left over: zlib holds nothing back.
            return not self._d.unconsumed_tail and produced < limit
        return self._d.needs_input


_CODECS = ("gzip", "xz", "bzip2")
_MEMBER_MAGIC = {"gzip": b"\x1f\x8b\x08", "xz": b"\xfd7zXZ\x00", "bzip2": b"BZh"}


class _MultiMember:
    """Decompresses every member of a gzip, xz or bzip2 file; raises on truncation and trailing garbage."""

    def __init__(self, source: Readable, kind: str) -> None:
        self._source = source
        self._kind = kind
        self._codec: _Codec | None = None
        self._input = b""  # compressed bytes not yet given to a codec
        self._hungry = True
        self.members = 0
        self.position = 0  # compressed bytes read from the source

    def read(self, size: int = -1) -> bytes:
        limit = size if size > 0 else READ
        while True:
            if self._codec is None:
                if not self._start_member():
                    return b""
                continue
            assert self._codec is not None
            if self._codec.eof:
                self._input = self._codec.unused + self._input
                self._codec = None
                continue
            data, self._input = self._input, b""
            if not data and self._hungry:
                data = self._more()
                if not data:
                    raise VerifyError(f"the {self._kind} data ends inside member {self.members}, at compressed "
                                      f"byte {self.position}: the download is truncated or the file incomplete")
            try:
                out = self._codec.feed(data, limit)
            except _CORRUPT as exc:
                raise VerifyError(f"corrupt {self._kind} data in member {self.members}, before compressed byte "
                                  f"{self.position}: {exc}") from None
            self._hungry = self._codec.wants_input(len(out), limit)
            if out:
                return out

    def _start_member(self) -> bool:
        """Begins the next member; False at a clean end (nothing, or zero padding, after the last)."""
        data = self._input.lstrip(b"\0")  # gzip and xz allow zero padding between and after members
        while len(data) < HEAD:
            more = self._more()
            if not more:
                break
            data = (data + more).lstrip(b"\0") if not data else data + more
        self._input = b""
        if not data:
            if self.members == 0:
                raise ImageError(f"the {self._kind} data is empty")
            return False
        if _MEMBER_MAGIC[self._kind].startswith(data):  # the start of a member, and nothing after it
            raise VerifyError(f"the {self._kind} data ends inside member {self.members + 1}, at compressed byte "
                              f"{self.position}: the download is truncated or the file incomplete")
        if identify(data) != self._kind:
            where = f"after {self._kind} member {self.members}" if self.members else "at the start"
            raise VerifyError(f"{where}, at compressed byte {self.position - len(data)}: {len(data)}+ bytes that "
                              f"are not {self._kind} data (first bytes {data[:8].hex(' ')}): a corrupt or mixed file")
        self._codec = _Codec(self._kind)
        self._input = data
        self._hungry = False
        self.members += 1
        return True

    def _more(self) -> bytes:
        data = self._source.read(READ)
        self.position += len(data)
        return data


class ZstdFrames:
    """Follows zstd frame and block headers through the compressed bytes, to tell a complete stream.

    A frame: magic (4), frame header descriptor (1), then window descriptor, dictionary id and
    content size (sizes from the descriptor), blocks (a 3-byte header each: last flag, type, size;
    an RLE block carries 1 byte) and a 4-byte checksum when the descriptor says so. Skippable
    frames: magic 0x184D2A5?, a 4-byte length, that many bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 4
        self._state = "magic"
        self._skip = 0
        self._checksum = False
        self.frames = 0  # data frames begun
        self.position = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            step = min(self._need - len(self._buf), n - i)
            self._buf += view[i:i + step]
            i += step
            if len(self._buf) == self._need:
                self._header(bytes(self._buf), self.position + i)
                self._buf.clear()
        self.position += n

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip and self.frames > 0

    def _header(self, header: bytes, at: int) -> None:
        value = int.from_bytes(header, "little")
        if self._state == "magic":
            if value == _ZSTD_MAGIC:
                self.frames += 1
                self._state, self._need = "descriptor", 1
            elif value & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
                self._state, self._need = "skippable", 4
            else:
                raise VerifyError(f"corrupt zstd data: no frame starts at compressed byte {at - 4} "
                                  f"(found {header.hex(' ')})")
        elif self._state == "skippable":
            self._skip = value
            self._state, self._need = "magic", 4
        elif self._state == "descriptor":
            fcs, single, dict_id = value >> 6, (value >> 5) & 1, value & 3
            self._checksum = bool(value & 4)
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[dict_id] + ((1 if single else 0), 2, 4, 8)[fcs]
            self._state, self._need = "block", 3
        else:  # a block header
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise VerifyError(f"corrupt zstd data: reserved block type at compressed byte {at - 3}")
            self._skip = 1 if kind == 1 else size
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4


class _Zstd:
    """All frames of a zstd stream; an end inside a frame is an error, not the end of the image."""

    def __init__(self, source: Readable) -> None:
        self._frames = ZstdFrames()
        self._tap = Counter(source, self._frames.feed)
        # read_across_frames: zstd -T0 and pzstd write several frames; all of them are the image.
        self._reader = zstandard.ZstdDecompressor().stream_reader(self._tap, read_size=READ,
                                                                  read_across_frames=True)

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._reader.read(size if size > 0 else READ)
        except zstandard.ZstdError as exc:
            raise VerifyError(f"corrupt zstd data before compressed byte {self._tap.count}: {exc}") from None
        if not data and not self._frames.complete:
            where = f"inside frame {self._frames.frames}" if self._frames.frames else "before its first frame"
            raise VerifyError(f"the zstd data ends {where}, at compressed byte {self._tap.count}: the download "
                              "is truncated or the file incomplete")
        return data
