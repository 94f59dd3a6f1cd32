"""Writing a single-stream image (raw, or one zstd stream) onto a disk or a file, verified.

This is the path for images that are one opaque stream, as most third-party images are: the
bytes arrive in order from a :class:`~peagent.fetch.RangeReader` (which already hides dropped
and stalled connections), are decompressed on the fly, hashed, and written in large blocks.
Two threads form the pipeline, so that fetching and decompression overlap the disk's writes;
a short queue between them bounds memory to a few blocks, whatever the image's size.

"Done" means: the stream ended, its length is the expected size (when known), the sha256 of
every byte written equals the expected digest, and the data has been flushed to the device.
Anything else raises, so a truncated or corrupt transfer can never be reported as a success.
A block device is opened with O_EXCL, which the kernel refuses while it is mounted or held.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import zstandard

from peagent.errors import DeviceError, ImageError, VerifyError

BLOCK = 4 << 20  # bytes per write: large and aligned
SYNC_EVERY = 256 << 20  # flush this often so dirty pages never fill the PE's RAM
_QUEUE_BLOCKS = 4


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


@dataclass(frozen=True)
class WriteResult:
    size: int
    sha256: str
    seconds: float


def decompressed(source: Readable, compression: str) -> Readable:
    if compression == "none":
        return source
    if compression == "zstd":
        # Several concatenated frames are one image (zstd -T0 and pzstd write such files).
        return zstandard.ZstdDecompressor().stream_reader(source, read_size=1 << 20,
                                                           read_across_frames=True)
    raise ImageError(f"unknown compression {compression!r}: expected none or zstd")


def write_image(
    source: Readable,
    target: str,
    *,
    compression: str,
    sha256: str,
    size: int | None,
    progress: Callable[[int], None] = lambda n: None,
) -> WriteResult:
    """Stream ``source`` into ``target`` (a block device or a file) and verify it."""
    started = time.monotonic()
    stream = decompressed(source, compression)
    blocks: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUE_BLOCKS)
    digest = hashlib.sha256()
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(stream, blocks, digest, stop),
                                name="peagent-fetch", daemon=True)
    fd = _open_target(target)
    try:
        limit = _capacity(fd)
        producer.start()
        written = _consume(fd, blocks, limit, size, target, progress)
        if limit is None:  # a file target holds exactly the image, whatever it held before
            os.ftruncate(fd, written)
        os.fsync(fd)
    finally:
        stop.set()
        _drain(blocks)
        producer.join(timeout=30)
        os.close(fd)

    if size is not None and written != size:
        raise VerifyError(f"the image stream ended after {written} bytes; expected {size}")
    actual = digest.hexdigest()
    if actual != sha256:
        raise VerifyError(f"sha256 of the {written} bytes written is {actual}; expected {sha256}")
    return WriteResult(size=written, sha256=actual, seconds=time.monotonic() - started)


def _produce(stream: Readable, blocks: queue.Queue, digest: hashlib._Hash, stop: threading.Event) -> None:
    """Fill BLOCK-sized buffers from the stream, hashing them on the way to the writer."""
    try:
        while not stop.is_set():
            buf = bytearray()
            while len(buf) < BLOCK:
                chunk = stream.read(BLOCK - len(buf))
                if not chunk:
                    break
                buf += chunk
            if buf:
                digest.update(buf)
                blocks.put(bytes(buf))
            if len(buf) < BLOCK:
                blocks.put(None)
                return
    except BaseException as exc:  # handed to the writer thread, which raises it
        blocks.put(exc)


def _consume(fd: int, blocks: queue.Queue, limit: int | None, size: int | None, target: str,
             progress: Callable[[int], None]) -> int:
    offset = 0
    unsynced = 0
    while True:
        item = blocks.get()
        if item is None:
            return offset
        if isinstance(item, BaseException):
            raise item
        end = offset + len(item)
        if limit is not None and end > limit:
            raise ImageError(f"the image is larger than {target} ({limit} bytes): "
                             f"{end} bytes and counting")
        if size is not None and end > size:
            raise VerifyError(f"the image stream is longer than the expected {size} bytes")
        try:
            os.pwrite(fd, item, offset)
            unsynced += len(item)
            if unsynced >= SYNC_EVERY:
                os.fdatasync(fd)
                unsynced = 0
        except OSError as exc:
            raise DeviceError(f"writing {target} at byte {offset}: {exc.strerror}") from None
        offset = end
        progress(len(item))


def _drain(blocks: queue.Queue) -> None:
    # Unblock a producer waiting on a full queue so that it sees the stop flag.
    try:
        while True:
            blocks.get_nowait()
    except queue.Empty:
        pass


def _open_target(target: str) -> int:
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = 0
    except OSError as exc:
        raise DeviceError(f"cannot stat {target}: {exc.strerror}") from None
    flags = os.O_WRONLY | os.O_CLOEXEC
    # O_EXCL on a block device: the kernel refuses if anything (a mount, LVM) holds it.
    flags |= os.O_EXCL if stat.S_ISBLK(mode) else os.O_CREAT
    try:
        return os.open(target, flags, 0o644)
    except OSError as exc:
        raise DeviceError(f"cannot open {target} for writing: {exc.strerror}") from None


def _capacity(fd: int) -> int | None:
    """The size of a block device; None for a file, which grows."""
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return None
