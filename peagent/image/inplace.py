"""What the target already holds: frames right in place, a base image, a scan of its blocks.

Reading a disk costs little next to fetching over a network (a disk reads at hundreds of MB/s to
GB/s, sha256 runs at about 1.5 GB/s per core), but reading a whole blank disk for nothing would
still waste minutes. So frames are read and hashed in place according to a policy
(:func:`choose`), in the order of cheapest evidence first:

* **expected** frames, always checked: those the disk is believed to hold already. When the disk
  is known to hold a previous image (or a base), every frame whose blocks have the same hashes in
  that image at the same place; reusing them needs no fetch at all.
* **discovery**, for a resume without a journal (after a power loss in the PE, whose journal was
  in RAM): the other frames, in index order, which is the order a write proceeds in when no block
  moves. It stops after ``DISCOVERY_MISSES`` bytes in a row that are not right: past the end of
  what an interrupted write left, there is at most the data it had not yet flushed, and that is
  less than this (peagent.image.writer flushes every 64 MiB at most). So a blank or foreign disk
  costs 128 MiB of reads; a disk that holds the whole image is read whole and nothing is fetched.
* ``mode="full"`` checks every frame (when the caller knows a partial write of this image, in an
  unknown order, is there); ``mode="none"`` checks nothing but the expected frames. A target known
  to read as zeros holds no frame but holes: nothing is read.

Frames a journal records are not read again: they were verified before they were written.

:func:`holds_image` samples a few frames of another image (a base) to decide whether the disk
holds it, and :func:`scan` reads the disk once to describe all of its blocks (``reuse="scan"``):
a :class:`~peagent.image.reuse.DiskView` of short hashes, with the in-place check for free.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

from peagent.image.format import BLOCK, BLOCK_HASH_SIZE, FrameKind, block_hash
from peagent.image.reuse import DiskView, Tables

DISCOVERY_MISSES = 128 << 20
SAMPLES = 16  # frames of another image read to decide whether the disk holds it
BATCH = 4 << 20  # bytes read at once
MODES = ("auto", "full", "none")


@dataclass(frozen=True)
class CheckPlan:
    expected: list[int]  # checked, all of them
    discover: list[int]  # checked in this order until `misses` bytes in a row are wrong
    misses: int


def choose(image: Tables, *, done: set[int], target_zero: bool, mode: str = "auto",
           view: bytes | bytearray | None = None) -> CheckPlan:
    """Which frames to check in place (pure); ``view``: the short hashes the disk is believed to hold."""
    kinds = image.frames.kinds
    todo = [j for j in range(len(kinds)) if kinds[j] != FrameKind.HOLE and j not in done]
    if target_zero:
        return CheckPlan([], [], 0)
    expected: list[int] = []
    if view is not None:
        step = image.manifest.frame_size // BLOCK * BLOCK_HASH_SIZE
        hashes = image.blocks.hashes
        expected = [j for j in todo if hashes[j * step:(j + 1) * step] == view[j * step:(j + 1) * step]]
    rest = sorted(set(todo) - set(expected))
    if mode == "none":
        return CheckPlan(expected, [], 0)
    if mode == "full":
        return CheckPlan(expected, rest, 1 << 62)
    return CheckPlan(expected, rest, DISCOVERY_MISSES)


Read = Callable[[int, int], bytes]


def _batches(frames: Sequence[int], frame_size: int, size: int) -> Iterator[list[int]]:
    """Runs of consecutive frames of at most BATCH bytes."""
    run: list[int] = []
    for j in frames:
        if run and (j != run[-1] + 1 or (len(run) + 1) * frame_size > BATCH):
            yield run
            run = []
        run.append(j)
    if run:
        yield run


def _right(image: Tables, j: int, piece: memoryview) -> bool:
    """Whether ``piece`` (read where frame j belongs) is frame j."""
    a, b = image.manifest.frame_extent(j)
    return len(piece) == b - a and hashlib.sha256(piece).digest() == image.frames.hashes[32 * j:32 * j + 32]


def _check_batch(read: Read, image: Tables, run: list[int]) -> list[tuple[int, bool, int]]:
    m = image.manifest
    start = m.frame_extent(run[0])[0]
    end = m.frame_extent(run[-1])[1]
    data = memoryview(read(start, end - start))
    out = []
    for j in run:
        a, b = m.frame_extent(j)
        out.append((j, _right(image, j, data[a - start:b - start]), b - a))
    return out


def check(read: Read, image: Tables, plan: CheckPlan, threads: int = 2) -> tuple[set[int], int]:
    """The frames of ``plan`` that are right in place, and how many bytes were read for it."""
    found: set[int] = set()
    read_bytes = 0
    m = image.manifest
    with ThreadPoolExecutor(threads, thread_name_prefix="peagent-check") as pool:
        for frames, budget in ((plan.expected, None), (plan.discover, plan.misses)):
            misses = 0
            pending: deque[Future[list[tuple[int, bool, int]]]] = deque()
            batches = _batches(frames, m.frame_size, m.size)
            for run in batches:
                pending.append(pool.submit(_check_batch, read, image, run))
                if len(pending) > threads:
                    break
            while pending:
                for j, right, length in pending.popleft().result():
                    read_bytes += length
                    if right:
                        found.add(j)
                        misses = 0
                    else:
                        misses += length
                if budget is not None and misses >= budget:
                    for future in pending:
                        future.cancel()
                    break
                for run in batches:
                    pending.append(pool.submit(_check_batch, read, image, run))
                    break
    return found, read_bytes


def holds_image(read: Read, image: Tables, capacity: int, samples: int = SAMPLES) -> bool:
    """Whether the disk seems to hold ``image`` from byte 0: most of a few of its frames are right."""
    if image.manifest.size > capacity:
        return False
    stored = [j for j, kind in enumerate(image.frames.kinds) if kind != FrameKind.HOLE]
    if not stored:
        return False
    step = max(1, len(stored) // samples)
    picked = stored[::step][:samples]
    found, _ = check(read, image, CheckPlan(picked, [], 0))
    return len(found) * 2 >= len(picked)


def scan(read: Read, image: Tables, capacity: int, threads: int = 2) -> tuple[DiskView, set[int]]:
    """Read the disk over the image's extent: the short hash of every block, and the frames in place."""
    m = image.manifest
    end = min(capacity, m.size)
    frames_per_batch = max(1, BATCH // m.frame_size)
    span = frames_per_batch * m.frame_size

    def work(start: int) -> tuple[bytes, list[int]]:
        data = memoryview(read(start, min(span, end - start)))
        hashes = b"".join(block_hash(data[k:k + BLOCK]) for k in range(0, len(data), BLOCK))
        frames = range(start // m.frame_size, (start + len(data) - 1) // m.frame_size + 1)
        right = [j for j in frames if _right(image, j, data[j * m.frame_size - start:(j + 1) * m.frame_size - start])]
        return hashes, right

    view = bytearray()
    found: set[int] = set()
    with ThreadPoolExecutor(threads, thread_name_prefix="peagent-scan") as pool:
        starts = iter(range(0, end, span))
        # islice, not zip with a range: zip would take one start too many and drop it.
        pending: deque[Future[tuple[bytes, list[int]]]] = deque(pool.submit(work, s)
                                                                for s in islice(starts, threads + 1))
        while pending:
            hashes, right = pending.popleft().result()
            view += hashes
            found.update(right)
            for s in starts:
                pending.append(pool.submit(work, s))
                break
    return DiskView(bytes(view)), found


@dataclass
class Survey:
    """What the target holds, as far as a write is concerned."""

    done: set[int]  # frames right in place (checked, or recorded by the journal)
    view: DiskView | None  # the short hashes of the target's blocks, when known
    target_zero: bool
    reuse: str = "none"  # where the view came from
    checked: int = 0  # bytes read
    in_place: int = 0  # image bytes found right in place
    journaled: int = 0  # image bytes the journal recorded


def survey(chain: Sequence[Tables], read: Read, capacity: int, journaled: set[int], *, target_zero: bool,
           reuse: str = "auto", mode: str = "auto", previous: Tables | None = None) -> Survey:
    """Find what the target holds of ``chain[0]``: a previous image the caller names, else (``auto``) a
    base of the image sampled on the target, or (``scan``) a scan; then the in-place check (``mode``)."""
    image = chain[0]
    m = image.manifest

    def size_of(frames: set[int]) -> int:
        return sum(min(m.frame_size, m.size - j * m.frame_size) for j in frames)

    found = Survey(set(journaled), None, target_zero, journaled=size_of(journaled))
    if not target_zero and reuse != "none":
        if previous is not None:
            found.view = DiskView(previous.blocks.hashes)
            found.reuse = f"previous image {previous.manifest.name} {previous.manifest.version}"
        elif reuse == "scan":
            found.view, right = scan(read, image, capacity)
            found.checked, found.in_place = min(capacity, m.size), size_of(right - found.done)
            found.done |= right
            found.reuse = "scan of the target"
            return found
        else:
            for base in chain[1:]:
                if holds_image(read, base, capacity):
                    found.view = DiskView(base.blocks.hashes)
                    found.reuse = f"base image {base.manifest.name} {base.manifest.version} found on the target"
                    break
    plan = choose(image, done=found.done, target_zero=target_zero, mode=mode,
                  view=found.view.hashes if found.view else None)
    right, found.checked = check(read, image, plan)
    found.in_place = size_of(right)
    found.done |= right
    return found
