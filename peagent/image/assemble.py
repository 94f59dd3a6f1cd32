"""Getting an image's frames back from its files: read from the blob, decompressed, completed from the base, verified.

A frame of kind FULL is one zstd frame in the blob; a HOLE is zeros; a BASE frame is made of
blocks found in the base image by their hash; a PARTIAL frame interleaves the blocks stored in
the blob (those whose bit is set in ``packed``, in order) with blocks from the base
(docs/image-format.md). :class:`ImageData` does that for any frame and checks its sha256 before
handing it out, so callers (``peagent image verify``, a differencing build's tests) see verified
bytes or a :class:`FrameError` saying which frame and why. (A deploy does not come this way: its
writer plans every frame's sources at once, peagent.image.reuse, and fetches in parallel.)

:class:`BlobReader` reads the blob's bytes: ``pread`` on a local file; over HTTP, one streaming
request per run of sequential reads (resumed by peagent.fetch.RangeReader when the link drops),
so reading frames in blob order costs one request, and a jump costs a new one.

Where the base's blocks come from is a :class:`BlockSource`: another :class:`ImageData` (the base
image's own files, from a directory or a DP), or :class:`RawBase`, a raw file or disk holding the
base image. Blocks are located with the base's block index (peagent.image.blockmap) and checked
against their hash as they are read: the index is a hint, the frame's sha256 is the proof.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import Protocol

import requests
import zstandard

from peagent.errors import FetchError, ImageError
from peagent.fetch import RangeReader, is_url, new_session
from peagent.image.blockmap import BlockLocator
from peagent.image.format import BLOCK, BlockIndex, Frame, FrameKind, Manifest, block_hash
from peagent.image.load import LoadedImage
from peagent.image.readers import read_exactly

CACHE_FRAMES = 16  # decoded frames kept for block lookups (4 MiB at 256 KiB)
SKIP_LIMIT = 1 << 20  # a forward jump of the blob reader this small is read through rather than reconnected


class FrameError(ImageError):
    """One frame cannot be had or is wrong; names the frame, its kind and where it lies in the image."""

    def __init__(self, frame: Frame, start: int, reason: str) -> None:
        self.frame = frame
        self.start = start
        self.reason = reason
        super().__init__(f"frame {frame.index} ({frame.kind.name}, image offset {start}): {reason}")


class NeedsBaseError(FrameError):
    """The frame takes blocks from a base image, and none was given."""


class BlockSource(Protocol):
    def block(self, block_hash: bytes) -> bytes | None:
        """The content of a block that has this hash, or None when there is none."""
        ...


def packed_blocks(packed: int, count: int) -> list[int]:
    """The block numbers (within a frame of ``count`` blocks) whose bit is set in ``packed``."""
    return [j for j in range(count) if packed >> j & 1]


class BlobReader:
    """Byte ranges of a blob (a path or a URL), cheapest when read in increasing order."""

    def __init__(self, location: str, session: requests.Session | None = None) -> None:
        self.location = location
        self.session = session or (new_session() if is_url(location) else None)
        self._fd: int | None = None
        self._reader: RangeReader | None = None
        if not is_url(location):
            try:
                self._fd = os.open(location, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise ImageError(f"cannot read the blob {location}: {exc.strerror}") from None

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def size(self) -> int:
        """The blob's actual size (over HTTP: as the server reports it)."""
        if self._fd is not None:
            return os.fstat(self._fd).st_size
        assert self.session is not None
        try:
            r = self.session.head(self.location, timeout=(5, 15), allow_redirects=True)
        except requests.RequestException as exc:
            raise FetchError(f"{self.location}: {exc}") from None
        if r.status_code != 200 or "Content-Length" not in r.headers:
            raise FetchError(f"{self.location}: HTTP {r.status_code} without a length")
        return int(r.headers["Content-Length"])

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; fewer only when the blob ends first."""
        if self._fd is not None:
            return os.pread(self._fd, length, offset)
        reader = self._reader
        if reader is not None and not reader.position <= offset <= reader.position + SKIP_LIMIT:
            reader.close()
            reader = None
        if reader is None:
            reader = self._reader = RangeReader([self.location], self.session)
            reader.position = offset  # the first request asks for bytes=offset-
        while reader.position < offset:
            if not reader.read(min(offset - reader.position, 1 << 20)):
                return b""
        return read_exactly(reader, length)


class ImageData:
    """The frames of one image, verified, with the blocks of a base where the image needs them."""

    def __init__(self, files: LoadedImage, blob: BlobReader, base: BlockSource | None = None) -> None:
        self.files = files
        self.blob = blob
        self.base = base
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._locator: BlockLocator | None = None

    @property
    def manifest(self) -> Manifest:
        return self.files.manifest

    def extent(self, index: int) -> tuple[int, int]:
        return self.manifest.frame_extent(index)

    def stored(self, frame: Frame) -> bytes:
        """The frame's data as stored in the blob, decompressed and of the length its kind implies."""
        start, end = self.extent(frame.index)
        if frame.kind == FrameKind.FULL:
            want = end - start
        elif frame.kind == FrameKind.PARTIAL:
            want = sum(min(BLOCK, end - start - j * BLOCK) for j in packed_blocks(frame.packed, _blocks(start, end)))
        else:
            return b""
        data = self.blob.read(frame.offset, frame.length)
        if len(data) != frame.length:
            raise FrameError(frame, start, f"the blob ends before the frame's {frame.length} bytes at blob offset "
                                           f"{frame.offset}")
        try:
            raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=max(want, 1))
        except zstandard.ZstdError as exc:
            raise FrameError(frame, start, f"does not decompress ({exc})") from None
        if len(raw) != want:
            raise FrameError(frame, start, f"decompresses to {len(raw)} bytes, expected {want}")
        return raw

    def frame(self, index: int) -> bytes:
        """Frame ``index``'s bytes, checked against its sha256 (FrameError otherwise)."""
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        frame = self.files.frames[index]
        start, end = self.extent(index)
        if frame.kind == FrameKind.HOLE:
            data = bytes(end - start)
        elif frame.kind == FrameKind.FULL:
            data = self.stored(frame)
        else:
            data = self._assemble(frame, start, end)
        if hashlib.sha256(data).digest() != frame.sha256:
            raise FrameError(frame, start, "sha256 does not match the frame table")
        self._cache[index] = data
        if len(self._cache) > CACHE_FRAMES:
            self._cache.popitem(last=False)
        return data

    def _assemble(self, frame: Frame, start: int, end: int) -> bytes:
        if self.base is None:
            ref = self.manifest.base
            raise NeedsBaseError(frame, start, f"needs the base image {ref.name} {ref.version}" if ref else
                                 "needs a base image")
        stored = self.stored(frame)
        out = bytearray()
        taken = 0
        first = start // BLOCK
        for j in range(_blocks(start, end)):
            size = min(BLOCK, end - start - j * BLOCK)
            if frame.packed >> j & 1:
                out += stored[taken:taken + size]
                taken += size
                continue
            wanted = self.files.blocks[first + j]
            block = self.base.block(wanted)
            if block is None or len(block) != size:
                raise FrameError(frame, start, f"block {j} (hash {wanted.hex()}) is not in the base image")
            out += block
        return bytes(out)

    def block(self, wanted: bytes) -> bytes | None:
        """As a base: the content of a block of this image with this hash."""
        if self._locator is None:
            self._locator = BlockLocator(self.files.blocks)
        position = self._locator.find(wanted)
        if position is None:
            return None
        per_frame = self.manifest.frame_size // BLOCK
        index, j = divmod(position, per_frame)
        data = self.frame(index)[j * BLOCK:(j + 1) * BLOCK]
        return data if block_hash(data) == wanted else None


class RawBase:
    """A base image as raw bytes: a file or a disk holding it, located with the base's block index."""

    def __init__(self, path: str, blocks: BlockIndex, size: int) -> None:
        self.locator = BlockLocator(blocks)
        self.size = size
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def block(self, wanted: bytes) -> bytes | None:
        position = self.locator.find(wanted)
        if position is None:
            return None
        data = os.pread(self.fd, min(BLOCK, self.size - position * BLOCK), position * BLOCK)
        return data if block_hash(data) == wanted else None


def _blocks(start: int, end: int) -> int:
    return -(-(end - start) // BLOCK)
