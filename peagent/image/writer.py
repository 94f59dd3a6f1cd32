"""Writing a peagent-format image onto a disk or into a file: only what is missing, all of it verified.

:func:`write_manifest_image` takes an image that peagent.image.load has read and trusted, and:

1. **opens the target** (peagent.image.device): a block device exclusively, refused when the
   image is larger; a file created sparse;
2. **replays the journal** of an interrupted run (peagent.image.journal): frames it records are
   done;
3. **finds what the target holds** (peagent.image.inplace): a previous image the caller says is
   there, a base image sampled on the disk, or a scan (``reuse``); then checks frames in place;
4. **plans** (peagent.image.reuse): per frame KEEP, HOLE, FETCH, LOCAL or ASSEMBLE, in an order
   where no frame overwrites blocks another still has to read;
5. **fetches** the blob ranges the plan needs (peagent.image.ranges: coalesced, parallel,
   resumed, from the best DP) while a pool of threads decompresses them (python-zstandard
   releases the GIL), reads local blocks and assembles frames, and **verifies every frame's
   sha256 before it is written**; a frame that does not match is taken from elsewhere (its
   fetch instead of local blocks, another DP), and when no source gives it right the write
   fails naming the frame;
6. **writes** in plan order, in large aligned writes (O_DIRECT where it works), zeroes holes the
   cheapest way, flushes every ``sync_every`` bytes, and journals each write after it returned;
7. reports done only when every frame is accounted for: kept (verified in place, or recorded by
   the journal after its verification), a hole made zero, or written after verification.

Memory is bounded by the fetch window (ranges in flight), the queue of prepared frames and one
write buffer, plus the tables (about 9 bytes per 4 KiB block): well under 200 MB for 10 GiB.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import zstandard

from peagent.errors import FetchError, ImageError, UsageError, VerifyError
from peagent.fetch import ATTEMPTS, CONNECT_TIMEOUT, READ_TIMEOUT
from peagent.image import inplace
from peagent.image.device import Target
from peagent.image.format import BLOCK
from peagent.image.journal import Journal
from peagent.image.load import LoadedImage
from peagent.image.ranges import MAX_SPAN, Extent, Fetched, FetchOptions, Range, RangeFetcher, coalesce
from peagent.image.reuse import DISK, How, Plan, SourceError, Tables, assemble, plan_frames

log = logging.getLogger(__name__)

WRITE_BUFFER = 4 << 20  # bytes per write
SYNC_EVERY = 64 << 20  # bytes written between flushes: bounds dirty memory and what a power loss costs
QUEUE = 32  # prepared frames waiting for the writer
REUSE = ("auto", "scan", "none")


@dataclass(frozen=True)
class WriteOptions:
    connections: int = 4  # parallel HTTP connections
    threads: int = 0  # decompressing, assembling and verifying; 0: one per CPU
    direct: bool = True  # O_DIRECT when the target allows it
    journal: Path | None = None  # where to keep the journal (the PE: under /run/peagent/)
    reuse: str = "auto"  # auto: a previous image or a base on the disk; scan: read the disk; none
    check: str = "auto"  # in-place check: auto, full, none (peagent.image.inplace)
    previous: Tables | None = None  # an image the target is known to hold from byte 0
    target_zeroed: bool = False  # the target (a block device) is known to read as zeros
    discard_zeroes: bool | None = None  # discarded blocks read as zeros; None: probe the device
    limit_rate: float | None = None  # bytes/s
    ca: str | None = None  # CA bundle for https DPs
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)
    attempts: int = ATTEMPTS
    max_span: int = MAX_SPAN
    sync_every: int = SYNC_EVERY


@dataclass
class WriteReport:
    image: str
    target: str
    size: int
    frames: int
    fetched: int = 0  # bytes received from the DPs (retries included)
    planned_fetch: int = 0  # compressed bytes the plan needed
    retries: int = 0
    in_place: int = 0  # image bytes found right in place
    journaled: int = 0  # image bytes a previous run's journal recorded as done
    reused_local: int = 0  # image bytes copied from elsewhere on the target
    holes_skipped: int = 0
    holes_zeroed: int = 0
    hole_method: str = ""
    written: int = 0  # bytes written (verified frames)
    checked: int = 0  # bytes read to find frames in place
    fallbacks: int = 0  # frames whose first sources did not verify, taken from elsewhere
    converted: int = 0  # local copies turned into fetches to break cycles
    direct: bool = False
    reuse: str = "none"
    seconds: float = 0.0
    dps: dict[str, dict] = field(default_factory=dict)

    def summary(self) -> str:
        mib = 1 << 20
        return (f"{self.image}: {self.size / mib:.1f} MiB onto {self.target} in {self.seconds:.1f} s; fetched "
                f"{self.fetched / mib:.1f} MiB, kept {(self.in_place + self.journaled) / mib:.1f} MiB in place, "
                f"copied {self.reused_local / mib:.1f} MiB on the disk, holes {self.holes_skipped / mib:.1f} MiB "
                f"skipped and {self.holes_zeroed / mib:.1f} MiB zeroed ({self.hole_method}); "
                f"{self.retries} retries; every frame verified")


class _Bad(Exception):
    """A prepared frame did not verify; ``origins``: the DPs whose bytes went into it."""

    def __init__(self, frame: int, why: str, origins: set[str], used_disk: bool) -> None:
        super().__init__(f"frame {frame}: {why}")
        self.origins, self.used_disk = origins, used_disk


def write_manifest_image(image: LoadedImage, target: str, options: WriteOptions = WriteOptions(),
                         progress: Callable[[int], None] = lambda n: None,
                         on_retry: Callable[[str], None] | None = None) -> WriteReport:
    """Write ``image`` onto ``target`` (a block device or a file); see the module's docstring."""
    started = time.monotonic()
    m = image.manifest
    if m.kind == "files":
        raise ImageError(f"{image.label} is a file image (a tree of files), which is unpacked onto a "
                         "filesystem, not written onto a disk")
    if options.reuse not in REUSE or options.check not in inplace.MODES:
        raise UsageError(f"reuse must be one of {', '.join(REUSE)} and check one of {', '.join(inplace.MODES)}")
    report = WriteReport(image.label, target, m.size, m.frame_count)
    with Target(target, m.size, direct=options.direct, zeroed=options.target_zeroed,
                discard_zeroes=options.discard_zeroes) as tgt:
        journal = Journal(options.journal, image.manifest_sha256, tgt.identity, m.frame_count)
        try:
            plan = _prepare(image, tgt, journal, options, report)
            _Run(image, plan, tgt, journal, options, report, progress, on_retry).run()
            tgt.finish()
        except BaseException:
            journal.close()
            raise
        journal.remove()
        report.direct = tgt.direct
        report.hole_method = report.hole_method or tgt.method
    report.seconds = time.monotonic() - started
    return report


def _prepare(image: LoadedImage, tgt: Target, journal: Journal, options: WriteOptions, report: WriteReport) -> Plan:
    """What the target holds, and the plan that follows from it."""
    found = inplace.survey(image.chain, tgt.read, tgt.capacity, journal.done, target_zero=tgt.zero_from == 0,
                           reuse=options.reuse, mode=options.check, previous=options.previous)
    report.reuse, report.checked = found.reuse, found.checked
    report.in_place, report.journaled = found.in_place, found.journaled
    plan = plan_frames(image.chain, done=found.done, disk=found.view, target_zero=found.target_zero)
    report.planned_fetch, report.converted = plan.totals.fetch, plan.converted
    log.info("write plan: %d frames; fetch %d bytes, keep %d, copy %d on the target, holes %d (%s)",
             image.manifest.frame_count, plan.totals.fetch, plan.totals.in_place, plan.totals.local,
             plan.totals.holes, report.reuse)
    return plan


class _Run:
    """Executes a plan: a producer thread feeds prepared frames, in plan order, to the writer (the caller)."""

    def __init__(self, image: LoadedImage, plan: Plan, tgt: Target, journal: Journal, options: WriteOptions,
                 report: WriteReport, progress: Callable[[int], None],
                 on_retry: Callable[[str], None] | None) -> None:
        self.image, self.chain, self.plan, self.tgt, self.journal = image, image.chain, plan, tgt, journal
        self.options, self.report, self.progress = options, report, progress
        self.fetcher = RangeFetcher(
            [level.blob for level in self.chain], [level.manifest.blob.size for level in self.chain],
            FetchOptions(connections=options.connections, max_span=options.max_span, timeout=options.timeout,
                         attempts=options.attempts, limit_rate=options.limit_rate, ca=options.ca),
            on_retry)
        self.pool = ThreadPoolExecutor(options.threads or os.cpu_count() or 2, thread_name_prefix="peagent-frame")
        self.queue: queue.Queue[object] = queue.Queue(QUEUE)
        self.stop = threading.Event()
        self.local = threading.local()
        self.buffer = mmap.mmap(-1, WRITE_BUFFER)  # page-aligned, as O_DIRECT wants
        self.batch: tuple[int, int] | None = None  # (first frame, bytes filled)
        self.holes: tuple[int, int] | None = None  # (first frame, last frame)
        self.kept: tuple[int, int] | None = None  # a run of frames right in place, for the journal
        self.unsynced = 0
        self.processed = 0

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
        """Frame j's bytes, verified; raises _Bad when they do not match its sha256."""
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
                data = assemble(asm, length, self.tgt.read, remote)
        except SourceError as exc:
            raise _Bad(j, str(exc), origins, how != How.FETCH) from None
        if len(data) != length or hashlib.sha256(data).digest() != self.image.frames.hashes[32 * j:32 * j + 32]:
            raise _Bad(j, "sha256 mismatch", origins, how in (How.LOCAL, How.ASSEMBLE) and asm is not None
                       and any(True for _ in asm.disk_offsets()))
        return bytes(data)

    # --- the writer ------------------------------------------------------------------------

    def run(self) -> None:
        producer = threading.Thread(target=self._produce, name="peagent-plan", daemon=True)
        producer.start()
        try:
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    # Nothing ready: write what is pending rather than hold it while waiting, so a
                    # network-bound write keeps nothing verified in memory that a crash would lose.
                    self._flush()
                    self._flush_holes()
                    self._journal_kept()
                    item = self.queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                j, how, job = item  # type: ignore[misc]
                self._take(j, how, job)
            self._flush()
            self._flush_holes()
            self._journal_kept()
            if self.processed != len(self.plan.how):
                raise ImageError(f"internal: {self.processed} of {len(self.plan.how)} frames processed")
        finally:
            self.stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    self.queue.get_nowait()
            self.fetcher.close()
            self.pool.shutdown(wait=True, cancel_futures=True)
            producer.join(timeout=30)
            self.report.fetched = self.fetcher.received
            self.report.retries = self.fetcher.retries
            self.report.dps = {o: {k: v for k, v in asdict(s).items() if k not in ("origin", "active", "cool_until")}
                               for o, s in self.fetcher.origins.items()}
            self.buffer.close()

    def _take(self, j: int, how: int, job: Future[bytes] | None) -> None:
        length = self.plan.frame_length(j)
        self.processed += 1
        if how == How.KEEP:
            if self.kept and self.kept[1] == j - 1:
                self.kept = (self.kept[0], j)
            else:
                self._journal_kept()
                self.kept = (j, j)
            self.progress(length)
            return
        if how == How.HOLE:
            if self.holes and self.holes[1] == j - 1:
                self.holes = (self.holes[0], j)
            else:
                self._flush_holes()
                self.holes = (j, j)
            return
        assert job is not None
        try:
            data = job.result()
            asm = self.plan.assemblies.get(j)
            if asm is not None:
                self.report.reused_local += sum(min(BLOCK, length - b * BLOCK) for b, kind in enumerate(asm.kinds)
                                                if kind == DISK)
        except _Bad as bad:
            data = self._recover(j, how, bad)
        self._add(j, data)

    def _recover(self, j: int, how: int, bad: _Bad) -> bytes:
        """Frame j from other sources until one verifies: without the target's blocks, from another DP,
        and from the same DP once more when there is no other (a corruption in transit)."""
        asm = self.plan.assemblies.get(j)
        remote = None if how == How.FETCH or asm is None else (asm.fallback or (asm if how == How.ASSEMBLE else None))
        exclude = set() if bad.used_disk else set(bad.origins)
        log.warning("frame %d did not verify (%s); taking it from %s", j, bad,
                    "the DPs" if bad.used_disk else "another DP")
        self.report.fallbacks += 1
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
            except _Bad as again:
                exclude |= again.origins
                tried |= again.origins
        raise self._damaged(j, tried, "no DP gave it right")

    def _damaged(self, j: int, tried: set[str], why: str) -> VerifyError:
        start = j * self.plan.frame_size
        end = start + self.plan.frame_length(j) - 1
        return VerifyError(f"frame {j} of {self.image.label} (image bytes {start}-{end})"
                           f" does not match its sha256 as served by {', '.join(sorted(tried)) or 'the DPs'}: the image"
                           f" on the DPs is damaged ({why}); nothing more is written and the target is not done")

    def _add(self, j: int, data: bytes) -> None:
        if self.batch is not None:
            first, filled = self.batch
            if first + filled // self.plan.frame_size != j or filled + len(data) > WRITE_BUFFER:
                self._flush()
        if self.batch is None:
            self.batch = (j, 0)
        first, filled = self.batch
        self.buffer[filled:filled + len(data)] = data
        self.batch = (first, filled + len(data))

    def _flush(self) -> None:
        if self.batch is None:
            return
        first, filled = self.batch
        self.batch = None
        self.tgt.write(first * self.plan.frame_size, memoryview(self.buffer)[:filled])
        last = first + -(-filled // self.plan.frame_size) - 1
        self.journal.written(first, last)
        self.report.written += filled
        self._wrote(filled)

    def _journal_kept(self) -> None:
        if self.kept is not None:
            self.journal.written(*self.kept)
            self.kept = None

    def _flush_holes(self) -> None:
        if self.holes is None:
            return
        first, last = self.holes
        self.holes = None
        start = first * self.plan.frame_size
        length = min(self.plan.size, (last + 1) * self.plan.frame_size) - start
        how = "skip" if self.plan.target_zero else self.tgt.zero(start, length)
        if how == "skip":
            self.report.holes_skipped += length
        else:
            self.report.holes_zeroed += length
            self.report.hole_method = how
        self.journal.written(first, last)
        self._wrote(length if how != "skip" else 0, progressed=length)

    def _wrote(self, count: int, progressed: int | None = None) -> None:
        self.progress(count if progressed is None else progressed)
        self.unsynced += count
        if self.unsynced >= self.options.sync_every:
            self.tgt.sync()
            self.journal.synced()
            self.unsynced = 0
