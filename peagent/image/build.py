"""Building an image: a raw stream in, the four files of docs/image-format.md out.

The source is read once, sequentially, in frames. Each frame is hashed (sha256 for the frame
table, a short hash per 4 KiB block for the block index, and the whole image's sha256), an
all-zero frame becomes a hole (never stored, never fetched), and every other frame is compressed
on its own as one zstd frame and appended to the blob. Compression runs in a pool of threads
(python-zstandard releases the GIL) while the reader moves on, with a bounded number of frames in
flight, so memory stays flat whatever the image's size.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zstandard

from peagent import __version__
from peagent.errors import ImageError
from peagent.image.format import (
    BLOCK,
    DEFAULT_FRAME,
    MAX_FRAME,
    BlockIndex,
    FileRef,
    FrameKind,
    FrameTable,
    Manifest,
    block_hash,
    encode_blocks,
    encode_frames,
)

MANIFEST = "manifest.json"
FRAMES = "frames.bin"
BLOCKS = "blocks.bin.zst"
BLOB = "image.blob"
DEFAULT_LEVEL = 9


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


@dataclass(frozen=True)
class BuildOptions:
    name: str
    version: str
    kind: str = "disk"
    frame_size: int = DEFAULT_FRAME
    level: int = DEFAULT_LEVEL
    threads: int = max(1, os.cpu_count() or 1)
    source_name: str = ""


def read_exactly(source: Readable, size: int) -> bytes:
    """Up to ``size`` bytes: short only at the end of the stream (decompressors return less)."""
    parts = []
    while size:
        chunk = source.read(size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def build_image(source: Readable, out: Path, options: BuildOptions,
                progress: Callable[[int], None] = lambda n: None) -> Manifest:
    """Read ``source`` to its end and write the image's files into the directory ``out``."""
    if options.frame_size % BLOCK or not BLOCK <= options.frame_size <= MAX_FRAME:
        raise ImageError(f"frame size {options.frame_size}: expected a multiple of {BLOCK} from {BLOCK} to "
                         f"{MAX_FRAME}")
    out.mkdir(parents=True, exist_ok=True)
    table = FrameTable(options.frame_size)
    blocks = bytearray()
    whole = hashlib.sha256()
    size = 0
    blob_size = 0
    pending: deque[tuple[bytes, Future[bytes] | None]] = deque()

    def settle(item: tuple[bytes, Future[bytes] | None]) -> None:
        nonlocal blob_size
        digest, future = item
        if future is None:
            table.append(FrameKind.HOLE, 0, 0, 0, digest)
            return
        data = future.result()
        blob.write(data)
        table.append(FrameKind.FULL, blob_size, len(data), 0, digest)
        blob_size += len(data)

    with (out / BLOB).open("wb") as blob, ThreadPoolExecutor(options.threads) as pool:
        while True:
            frame = read_exactly(source, options.frame_size)
            if not frame:
                break
            size += len(frame)
            whole.update(frame)
            for i in range(0, len(frame), BLOCK):
                blocks += block_hash(frame[i:i + BLOCK])
            digest = hashlib.sha256(frame).digest()
            future = None
            if frame.count(0) != len(frame):  # an all-zero frame is a hole: nothing to store
                future = pool.submit(_compress, frame, options.level)
            pending.append((digest, future))
            while len(pending) > 2 * options.threads:
                settle(pending.popleft())
            progress(len(frame))
        while pending:
            settle(pending.popleft())
    if size == 0:
        raise ImageError("the source is empty: nothing to build an image from")

    frames_data = encode_frames(table)
    blocks_data = encode_blocks(BlockIndex(bytes(blocks)))
    (out / FRAMES).write_bytes(frames_data)
    (out / BLOCKS).write_bytes(blocks_data)
    manifest = Manifest(
        name=options.name, version=options.version, kind=options.kind, size=size, sha256=whole.hexdigest(),
        frame_size=options.frame_size,
        frames=FileRef(FRAMES, len(frames_data), hashlib.sha256(frames_data).hexdigest()),
        blocks=FileRef(BLOCKS, len(blocks_data), hashlib.sha256(blocks_data).hexdigest()),
        blob=FileRef(BLOB, blob_size),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tool=f"peagent {__version__}", source=options.source_name,
    )
    (out / MANIFEST).write_bytes(manifest.to_json())
    return manifest


def _compress(frame: bytes, level: int) -> bytes:
    # ZstdCompressor objects are not thread-safe; one per frame costs little next to the work.
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(frame)
