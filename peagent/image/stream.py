"""Writing a single-stream image (raw, gzip, xz, bzip2 or zstd, with or without a bmap) onto a disk or a file.

This is the path for images that are one opaque stream, as third-party images are: the bytes
arrive in order from a :class:`~peagent.fetch.RangeReader` (which already hides dropped and
stalled connections, so the decompressor's state survives them), are decompressed on the fly
(:mod:`~peagent.image.compression`), hashed, and written in large blocks. Two threads form the
pipeline, which keeps both cores of a small machine busy (the decompressors and hashlib release
the GIL): the producer fetches, decompresses and checks the stream; the writer hashes the image
and writes it. A short queue between them bounds memory to a few blocks, whatever the image's size.

With a bmap (:mod:`~peagent.image.bmap`) the decompressed stream is cut along its ranges: mapped
bytes are hashed per range and written; unmapped bytes are read (they are in the stream), checked
to be zeros, and never written: the target's holes are skipped, discarded or zeroed
(:mod:`~peagent.image.sink`). The writer leaves alone what the target already holds
(:class:`~peagent.image.sink.Sink`), which is how a rerun after a crash resumes.

"Done" means: the stream ended cleanly (no member or frame cut short), its length is the
expected size, every expected digest matched (the image's, the compressed file's, each bmap
range's), and the data has been flushed to the device. Anything else raises, so a truncated or
corrupt transfer is never reported as a success; a digest is checked when its last byte has been
read, so a mismatch is found after the bytes were written, and the deployment fails.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from peagent.disk.capabilities import EraseCaps
from peagent.errors import ImageError, VerifyError
from peagent.image.bmap import Bmap
from peagent.image.checksums import Digest
from peagent.image.compression import HEAD, choose, identify, open_decompressed
from peagent.image.readers import Counter, Peekable, Readable, read_exactly
from peagent.image.sink import Counts, Sink

BLOCK = 4 << 20  # bytes per write: large and aligned
_QUEUE_BLOCKS = 4
_ZEROS = bytes(BLOCK)


@dataclass(frozen=True)
class StreamJob:
    """What to stream and what it must turn out to be."""

    name: str = ""  # the file's name (last part of its URL): the suffix hint, and messages
    compression: str = "auto"  # "auto" or one of compression.SUPPORTED
    size: int | None = None  # of the decompressed image, when known
    digest: Digest | None = None  # of the decompressed image
    compressed_digest: Digest | None = None  # of the bytes as fetched
    bmap: Bmap | None = None

    def check(self) -> None:
        """Refuse a job that could succeed without proof, or contradicts itself; before anything is written."""
        if self.digest is None and self.compressed_digest is None and not (self.bmap and self.bmap.verifies_data):
            why = " (its bmap has no range checksums)" if self.bmap else ""
            raise ImageError(f"nothing to verify {self.name or 'the image'} against{why}: give its sha256, a "
                             "checksum file, or a bmap with range checksums")
        if self.bmap and self.size is not None and self.size != self.bmap.image_size:
            raise ImageError(f"the image size given ({self.size} bytes) differs from the bmap's ImageSize "
                             f"({self.bmap.image_size} bytes, {self.bmap.source}): they are not for the same image")

    @property
    def expected_size(self) -> int | None:
        return self.bmap.image_size if self.bmap else self.size


@dataclass(frozen=True)
class WriteResult:
    size: int  # bytes of the image
    seconds: float
    compression: str
    digest: Digest | None  # of the image, when computed (always without a bmap)
    checks: tuple[str, ...]  # what was verified, for the report
    counts: Counts = field(default_factory=Counts)

    @property
    def sha256(self) -> str | None:
        return self.digest.hex if self.digest and self.digest.algorithm == "sha256" else None


def write_image(source: Readable, target: str, *, compression: str, sha256: str | None, size: int | None,
                progress: Callable[[int], None] = lambda n: None) -> WriteResult:
    """The stream with a sha256 and no bmap (the original interface; without a sha256 it is refused)."""
    digest = Digest("sha256", sha256, "expected") if sha256 else None
    job = StreamJob(compression=compression, size=size, digest=digest)
    return write_stream(source, target, job, progress=progress)


def write_stream(source: Readable, target: str, job: StreamJob, *, target_zeroed: bool = False,
                 caps: EraseCaps | None = None, resume: bool = True, holes: str = "auto",
                 progress: Callable[[int], None] = lambda n: None) -> WriteResult:
    """Stream ``source`` into ``target`` (a block device or a file) and verify it.

    ``target_zeroed``: the target reads as zeros (erased just before); ``caps``: the disk's
    probed capabilities (may its discards stand in for zeroing?); ``resume``: compare with what
    the target holds and write only what differs; ``holes``: "auto" or "keep" (see peagent.image.sink).
    """
    started = time.monotonic()
    job.check()
    compressed_hash = job.compressed_digest.new() if job.compressed_digest else None
    tap = Counter(source, compressed_hash.update if compressed_hash else None)
    head = Peekable(tap)
    compression = choose(head.peek(HEAD), job.name, job.compression)
    # Opening the target refuses an image larger than a disk, before the first write.
    sink = Sink(target, size=job.expected_size, target_zeroed=target_zeroed, caps=caps, resume=resume, holes=holes)
    items: queue.Queue[Any] = queue.Queue(_QUEUE_BLOCKS)
    stop = threading.Event()
    producer = _Producer(open_decompressed(head, compression), job, compression, tap, compressed_hash, items, stop)
    thread = threading.Thread(target=producer.run, name="peagent-fetch", daemon=True)
    # The image's digest is computed here, beside the writes, so that it runs in parallel with the
    # decompression (hashlib and the decompressors release the GIL). Without a bmap it is always
    # computed: the report names what was written.
    algorithm = job.digest.algorithm if job.digest else "sha256"
    image_hash = hashlib.new(algorithm) if job.digest or not job.bmap else None
    try:
        thread.start()
        while (item := items.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            offset, data, length = item
            if image_hash is not None:
                image_hash.update(data if data is not None else _ZEROS[:length])  # holes were checked zeros
            if data is None:
                sink.hole(offset, length)
            else:
                sink.write(offset, data)
            progress(length)
        checks = producer.checks
        digest = Digest(algorithm, image_hash.hexdigest()) if image_hash is not None else None
        if job.digest is not None:
            assert digest is not None
            if digest.hex != job.digest.hex:
                raise VerifyError(f"{algorithm} of the {producer.offset} bytes of {job.name or 'the image'} is "
                                  f"{digest.hex}; expected {job.digest.hex} ({job.digest.source})")
            checks.append(f"{algorithm} of the image matches ({job.digest.source})")
        sink.finish(producer.offset)
    finally:
        stop.set()
        _drain(items)
        if thread.is_alive():
            thread.join(timeout=30)
        sink.close()
    return WriteResult(size=producer.offset, seconds=time.monotonic() - started, compression=compression,
                       digest=digest, checks=tuple(checks), counts=sink.counts)


class _Producer:
    """Runs in its own thread: fetches, decompresses, cuts along the bmap (hashing each range), and
    queues (offset, data or None for a hole, length); checks the stream's end and the file's digest."""

    def __init__(self, stream: Readable, job: StreamJob, compression: str, tap: Counter, compressed_hash: Any,
                 items: queue.Queue, stop: threading.Event) -> None:
        self.stream = stream
        self.job = job
        self.compression = compression
        self.tap = tap
        self.compressed_hash = compressed_hash
        self.items = items
        self.stop = stop
        self.offset = 0
        self.checks: list[str] = []
        self._range = 0  # index of the bmap range the stream is in or before
        self._range_hash: Any = None

    def run(self) -> None:
        try:
            self._run()
            self.items.put(None)
        except BaseException as exc:  # handed to the writer thread, which raises it
            self.items.put(exc)

    def _run(self) -> None:
        name = self.job.name or "the image"
        expected = self.job.expected_size
        while not self.stop.is_set():
            block = read_exactly(self.stream, BLOCK)
            if not block:
                break
            if self.offset == 0 and self.compression != "none" and identify(block[:HEAD]) != "none":
                raise ImageError(f"{name} holds {identify(block[:HEAD])} data inside its {self.compression} "
                                 f"compression, not a raw disk image; peagent streams raw images, compressed once")
            end = self.offset + len(block)
            if expected is not None and end > expected:
                raise VerifyError(f"the image stream is longer than the expected {expected} bytes")
            if self.job.bmap:
                for item in self._cut(block):
                    self.items.put(item)
            else:
                self.items.put((self.offset, block, len(block)))
            self.offset = end
        if self.stop.is_set():
            return
        self._verify(name, expected)

    def _verify(self, name: str, expected: int | None) -> None:
        if expected is not None and self.offset != expected:
            raise VerifyError(f"the image stream ended after {self.offset} bytes; expected {expected}")
        self.checks.append(f"{self.compression} stream complete ({self.tap.count} bytes fetched)")
        if self.job.compressed_digest is not None:
            want = self.job.compressed_digest
            actual = self.compressed_hash.hexdigest()
            if actual != want.hex:
                raise VerifyError(f"{want.algorithm} of the {self.tap.count} bytes of {name} as fetched is {actual}; "
                                  f"expected {want.hex} ({want.source})")
            self.checks.append(f"{want.algorithm} of the file as fetched matches ({want.source})")
        if self.job.bmap is not None:
            bmap = self.job.bmap
            proven = "verified" if bmap.verifies_data else "written (no checksums)"
            self.checks.append(f"{len(bmap.ranges)} bmap ranges, {bmap.mapped_bytes} bytes, {proven}")

    def _cut(self, block: bytes) -> Iterator[tuple[int, bytes | None, int]]:
        """Pieces of a block along the bmap: mapped (hashed per range) or a hole (checked to be zeros)."""
        bmap = self.job.bmap
        assert bmap is not None
        ranges = bmap.ranges
        pos, end = self.offset, self.offset + len(block)
        while pos < end:
            current = ranges[self._range] if self._range < len(ranges) else None
            if current is not None and pos >= current.start:
                stop = min(end, current.end)
                piece = block[pos - self.offset: stop - self.offset]
                if current.checksum:
                    if self._range_hash is None:
                        self._range_hash = hashlib.new(bmap.checksum_type or "sha256")
                    self._range_hash.update(piece)
                yield pos, piece, len(piece)
                if stop == current.end:
                    self._finish_range(current)
            else:
                stop = min(end, current.start if current is not None else end)
                piece = block[pos - self.offset: stop - self.offset]
                if piece != _ZEROS[: len(piece)]:
                    at = pos + len(piece) - len(piece.lstrip(b"\0"))
                    raise VerifyError(f"{bmap.source} has bytes {pos}-{stop - 1} unmapped (a hole), but the image "
                                      f"holds data at byte {at}: the bmap is not for this image")
                yield pos, None, len(piece)
            pos = stop

    def _finish_range(self, done: Any) -> None:
        if done.checksum:
            actual = self._range_hash.hexdigest()
            if actual != done.checksum:
                bmap = self.job.bmap
                assert bmap is not None
                raise VerifyError(f"bmap range {done.first}-{done.last} (bytes {done.start}-{done.end - 1}) of "
                                  f"{self.job.name or 'the image'}: {bmap.checksum_type} is {actual}; "
                                  f"{bmap.source} says {done.checksum}")
        self._range_hash = None
        self._range += 1


def _drain(items: queue.Queue) -> None:
    # Unblock a producer waiting on a full queue so that it sees the stop flag.
    try:
        while True:
            items.get_nowait()
    except queue.Empty:
        pass

