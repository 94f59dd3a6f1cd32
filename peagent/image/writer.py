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
5. **prepares** the frames (peagent.image.framesource): fetches the blob ranges the plan needs
   (peagent.image.ranges: coalesced, parallel, resumed, from the best DP) while a pool of
   threads decompresses them, reads local blocks and assembles frames, and **verifies every
   frame's sha256 before it is written**; a frame that does not match is taken from elsewhere
   (its fetch instead of local blocks, another DP), and when no source gives it right the write
   fails naming the frame;
6. **writes** in plan order, in large aligned writes (O_DIRECT where it works) from two buffers,
   one filling while a thread writes the other, zeroes holes the cheapest way, flushes every
   ``sync_every`` bytes, and journals each write after it returned;
7. reports done only when every frame is accounted for: kept (verified in place, or recorded by
   the journal after its verification), a hole made zero, or written after verification.

Memory is bounded by the fetch window (ranges in flight), the queue of prepared frames and two
write buffers, plus the tables (about 9 bytes per 4 KiB block): well under 200 MB for 10 GiB.
"""

from __future__ import annotations

import logging
import mmap
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from peagent.errors import ImageError, UsageError
from peagent.fetch import ATTEMPTS, CONNECT_TIMEOUT, READ_TIMEOUT
from peagent.image import inplace
from peagent.image.device import Target
from peagent.image.extents import MAX_SPAN
from peagent.image.format import BLOCK
from peagent.image.framesource import BadFrame, FrameSource
from peagent.image.journal import Journal
from peagent.image.load import LoadedImage
from peagent.image.ranges import FetchOptions
from peagent.image.reuse import DISK, How, Plan, Tables, plan_frames
from peagent.progress import MIB

log = logging.getLogger(__name__)

WRITE_BUFFER = 4 << 20  # bytes per write
SYNC_EVERY = 64 << 20  # bytes written between flushes: bounds dirty memory and what a power loss costs
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
        return (f"{self.image}: {self.size / MIB:.1f} MiB onto {self.target} in {self.seconds:.1f} s; fetched "
                f"{self.fetched / MIB:.1f} MiB, kept {(self.in_place + self.journaled) / MIB:.1f} MiB in place, "
                f"copied {self.reused_local / MIB:.1f} MiB on the disk, holes {self.holes_skipped / MIB:.1f} MiB "
                f"skipped and {self.holes_zeroed / MIB:.1f} MiB zeroed ({self.hole_method}); "
                f"{self.retries} retries; every frame verified")


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
            _Writer(image, plan, tgt, journal, options, report, progress, on_retry).run()
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


class _Writer:
    """Executes a plan: writes the frames a FrameSource prepares, in plan order, and accounts for each."""

    def __init__(self, image: LoadedImage, plan: Plan, tgt: Target, journal: Journal, options: WriteOptions,
                 report: WriteReport, progress: Callable[[int], None],
                 on_retry: Callable[[str], None] | None) -> None:
        self.plan, self.tgt, self.journal = plan, tgt, journal
        self.options, self.report, self.progress = options, report, progress
        self.frames = FrameSource(
            image, plan, tgt.read,
            FetchOptions(connections=options.connections, max_span=options.max_span, timeout=options.timeout,
                         attempts=options.attempts, limit_rate=options.limit_rate, ca=options.ca),
            options.threads, on_retry)
        # Page-aligned, as O_DIRECT wants; one fills while the other is written, so that a synchronous
        # O_DIRECT write never holds up the frames behind it.
        self.buffers = [mmap.mmap(-1, WRITE_BUFFER), mmap.mmap(-1, WRITE_BUFFER)]
        self.buffer = self.buffers[0]
        self.batch: tuple[int, int] | None = None  # (first frame, bytes filled)
        self.writing: tuple[Future[None], int, int] | None = None  # the write in flight: (its end, first, filled)
        self.write_behind = ThreadPoolExecutor(1, thread_name_prefix="peagent-write")
        self.holes: tuple[int, int] | None = None  # (first frame, last frame)
        self.kept: tuple[int, int] | None = None  # a run of frames right in place, for the journal
        self.unsynced = 0
        self.processed = 0

    def run(self) -> None:
        self.frames.start()
        prepared = self.frames.queue
        try:
            while True:
                try:
                    item = prepared.get_nowait()
                except queue.Empty:
                    # Nothing ready: write what is pending rather than hold it while waiting, so a
                    # network-bound write keeps nothing verified in memory that a crash would lose.
                    self._flush()
                    self._flush_holes()
                    self._journal_kept()
                    if self.writing is not None and prepared.empty():
                        self._reap()
                    item = prepared.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                self._take(*item)
            self._flush()
            self._reap()
            self._flush_holes()
            self._journal_kept()
            if self.processed != len(self.plan.how):
                raise ImageError(f"internal: {self.processed} of {len(self.plan.how)} frames processed")
        finally:
            self.frames.close()
            self.write_behind.shutdown(wait=True)
            fetcher = self.frames.fetcher
            self.report.fetched = fetcher.received
            self.report.retries = fetcher.retries
            self.report.dps = {o: {k: v for k, v in asdict(s).items() if k not in ("origin", "active", "cool_until")}
                               for o, s in fetcher.origins.items()}
            for buffer in self.buffers:
                buffer.close()

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
        except BadFrame as bad:
            log.warning("frame %d did not verify (%s); taking it from %s", j, bad,
                        "the DPs" if bad.used_disk else "another DP")
            self.report.fallbacks += 1
            data = self.frames.recover(j, how, bad)
        self._add(j, data)

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
        """Start writing the batch in the buffer, and switch to the other buffer once its write is done."""
        if self.batch is None:
            return
        first, filled = self.batch
        self.batch = None
        self._reap()
        done = self.write_behind.submit(self.tgt.write, first * self.plan.frame_size,
                                        memoryview(self.buffer)[:filled])
        self.writing = (done, first, filled)
        self.buffer = self.buffers[self.buffers[0] is self.buffer]

    def _reap(self) -> None:
        """Wait for the write in flight, and account for it (the journal only after it returned)."""
        if self.writing is None:
            return
        done, first, filled = self.writing
        self.writing = None
        done.result()
        self.journal.written(first, first + -(-filled // self.plan.frame_size) - 1)
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
        self._reap()  # the journal records frames in plan order
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
