"""The frames a write plan needs, verified, in plan order: fetched, decompressed, assembled, checked.

The writer (peagent.image.writer) takes frames in the order of its plan (peagent.image.reuse);
:class:`FrameSource` gets them ready ahead of it. A producer thread walks the plan, asks the
fetcher (peagent.image.ranges) for every blob piece the plan needs, coalesced into range requests
(peagent.image.extents), and hands each frame to a pool of threads that decompresses its pieces
(python-zstandard releases the GIL), reads the target's blocks for LOCAL and ASSEMBLE frames,
assembles the frame and **checks its sha256**. The queue of prepared frames is bounded, so memory
stays flat however far the fetch could run ahead.

A frame that does not verify comes back as :class:`BadFrame`, naming the DPs whose bytes went into
it, and :meth:`FrameSource.recover` takes it from elsewhere: without the target's blocks (a fetch
of the frame, or of its base's frames) when it used them, else from another DP, and from the same
DP once more when there is no other (a corruption in transit). When nothing gives it right, the
error names the frame and its bytes in the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import zstandard

from peagent.errors import FetchError, VerifyError
from peagent.image.extents import Extent, Range, coalesce
from peagent.image.load import LoadedImage
from peagent.image.ranges import Fetched, FetchOptions, RangeFetcher
from peagent.image.reuse import How, Plan, SourceError, assemble

QUEUE = 32  # prepared frames waiting for the writer

Prepared = tuple[int, int, "Future[bytes] | None"]  # frame, How, its bytes to come (None: KEEP or HOLE)


class BadFrame(Exception):
    """A prepared frame did not verify; ``origins``: the DPs whose bytes went into it."""

    def __init__(self, frame: int, why: str, origins: set[str], used_disk: bool) -> None:
        super().__init__(f"frame {frame}: {why}")
        self.origins, self.used_disk = origins, used_disk


class FrameSource:
    """Prepares the frames of ``plan`` for the writer; see the module's docstring."""

    def __init__(self, image: LoadedImage, plan: Plan, read: Callable[[int, int], bytes], fetch: FetchOptions,
                 threads: int, on_retry: Callable[[str], None] | None) -> None:
        self.image, self.chain, self.plan, self.read = image, image.chain, plan, read
        self.fetcher = RangeFetcher([level.blob for level in self.chain],
                                    [level.manifest.blob.size for level in self.chain], fetch, on_retry)
        self.pool = ThreadPoolExecutor(threads or os.cpu_count() or 2, thread_name_prefix="peagent-frame")
        self.queue: queue.Queue[Prepared | BaseException | None] = queue.Queue(QUEUE)
        self.stop = threading.Event()
        self.local = threading.local()
        self._producer = threading.Thread(target=self._produce, name="peagent-plan", daemon=True)

    def start(self) -> None:
        self._producer.start()

    def close(self) -> None:
        """Stop the producer and the fetches, and wait for both."""
        self.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        self.fetcher.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._producer.ident is not None:
            self._producer.join(timeout=30)

    # --- what each action needs from the blobs, in plan order --------------------------------

    def _remote(self, j: int, how: int) -> tuple[tuple[int, int], ...]:
        if how == How.FETCH:
            return ((0, j),)
        if how == How.ASSEMBLE:
            return self.plan.assemblies[j].remote
        return ()

    def _extent(self, level: int, q: int) -> Extent:
        frames = self.chain[level].frames
        return Extent(level, frames.offsets[q], frames.lengths[q])

    def _needs(self) -> Iterator[Extent]:
        for j in self.plan.order:
            for level, q in self._remote(j, self.plan.how[j]):
                yield self._extent(level, q)

    # --- the producer ----------------------------------------------------------------------

    def _produce(self) -> None:
        """Queues (frame, How, its future bytes) in plan order, then None; or the error that stopped it."""
        try:
            stream = self.fetcher.stream(coalesce(self._needs(), self.fetcher.span_hint))
            available: dict[int, tuple[Fetched, int, int]] = {}
            seq = 0
            for j in self.plan.order:
                how = self.plan.how[j]
                pieces = []
                for _ in self._remote(j, how):
                    while seq not in available:
                        handle = next(stream)
                        for s, offset, length in handle.range.extents:
                            available[s] = (handle, offset, length)
                    handle, offset, length = available.pop(seq)
                    handle.wait(offset + length)  # the range's first frames come before its last ones
                    pieces.append((memoryview(handle.data)[offset:offset + length], handle.origins(offset, length)))
                    seq += 1
                job = self.pool.submit(self._build, j, how, pieces) if how >= How.FETCH else None
                while not self.stop.is_set():
                    with contextlib.suppress(queue.Full):
                        self.queue.put((j, how, job), timeout=0.5)
                        break
                if self.stop.is_set():
                    return
            self.queue.put(None)
        except BaseException as exc:  # handed to the writer, which raises it
            with contextlib.suppress(queue.Full):
                self.queue.put(exc, timeout=5)

    def _decompress(self, level: int, q: int, data: memoryview | bytes) -> bytes:
        d = getattr(self.local, "zstd", None)
        if d is None:
            d = self.local.zstd = zstandard.ZstdDecompressor()
        limit = self.chain[level].manifest.frame_size
        try:
            size = zstandard.frame_content_size(data)
            if size > limit:
                raise SourceError(f"frame {q} claims {size} bytes, more than a frame")
            return d.decompress(data, max_output_size=limit)
        except zstandard.ZstdError as exc:
            raise SourceError(f"frame {q} of {self.chain[level].label}: not zstd ({exc})") from None

    def _build(self, j: int, how: int, pieces: list[tuple[memoryview, set[str]]],
               asm_override: object = None) -> bytes:
        """Frame j's bytes, verified; raises BadFrame when they do not match its sha256."""
        length = self.plan.frame_length(j)
        origins = set().union(*(o for _, o in pieces)) if pieces else set()
        asm = self.plan.assemblies.get(j) if asm_override is None else asm_override
        try:
            if how == How.FETCH:
                data = self._decompress(0, j, pieces[0][0])
            else:
                assert asm is not None
                remote = [self._decompress(level, q, piece)
                          for (level, q), (piece, _) in zip(asm.remote, pieces, strict=True)]
                data = assemble(asm, length, self.read, remote)
        except SourceError as exc:
            raise BadFrame(j, str(exc), origins, how != How.FETCH) from None
        if len(data) != length or hashlib.sha256(data).digest() != self.image.frames.hashes[32 * j:32 * j + 32]:
            raise BadFrame(j, "sha256 mismatch", origins, how in (How.LOCAL, How.ASSEMBLE) and asm is not None
                           and any(True for _ in asm.disk_offsets()))
        return bytes(data)

    # --- when a frame does not verify ------------------------------------------------------

    def recover(self, j: int, how: int, bad: BadFrame) -> bytes:
        """Frame j from other sources until one verifies: without the target's blocks, from another DP,
        and from the same DP once more when there is no other (a corruption in transit)."""
        asm = self.plan.assemblies.get(j)
        remote = None if how == How.FETCH or asm is None else (asm.fallback or (asm if how == How.ASSEMBLE else None))
        exclude = set() if bad.used_disk else set(bad.origins)
        needs = [(0, j)] if remote is None else list(remote.remote)
        dps = {origin for level, _ in needs for origin in self.fetcher.origins_of(level)}
        tried: set[str] = set(bad.origins)
        for attempt in range(len(dps) + 1):
            if attempt and not dps - exclude:
                exclude = set()  # every DP gave it wrong once: the same again, in case it was the link
            pieces = []
            try:
                for level, q in needs:
                    e = self._extent(level, q)
                    got = self.fetcher.fetch(Range(level, e.start, e.start + e.length), exclude)
                    pieces.append((memoryview(got.data), got.origins(0, e.length)))
            except FetchError as exc:
                raise self._damaged(j, tried, str(exc)) from None
            try:
                return self._build(j, How.FETCH if remote is None else How.ASSEMBLE, pieces, remote)
            except BadFrame as again:
                exclude |= again.origins
                tried |= again.origins
        raise self._damaged(j, tried, "no DP gave it right")

    def _damaged(self, j: int, tried: set[str], why: str) -> VerifyError:
        start = j * self.plan.frame_size
        end = start + self.plan.frame_length(j) - 1
        return VerifyError(f"frame {j} of {self.image.label} (image bytes {start}-{end})"
                           f" does not match its sha256 as served by {', '.join(sorted(tried)) or 'the DPs'}: the image"
                           f" on the DPs is damaged ({why}); nothing more is written and the target is not done")
