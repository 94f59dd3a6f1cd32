"""The reuse planner: one mechanism for resume, delta and differencing.

A write takes every frame of an image from the cheapest place that has it. What the target already
holds is described by two inputs, and the image itself (and its bases, for a differencing image)
by its tables:

* ``done``: frames known to be right where they are (found by the in-place check, or recorded by
  the journal of an interrupted run): **resume**;
* ``disk``: a :class:`DiskView`, the short hash of each 4 KiB block the target is believed to hold
  (the previous image's block index when the disk is known to hold it, a base image on the disk,
  or a scan of the disk): blocks that moved are copied from where they are now: **delta**;
* a base chain: a differencing image's BASE and PARTIAL frames take their missing blocks from the
  base, on the disk when it is there, else from the base's blob frames: **differencing**.

:func:`plan_frames` turns these into one action per frame (:class:`How`): KEEP (already right),
HOLE (zeros: skipped on a zero target, else zeroed), FETCH (the frame whole from the blob), LOCAL
(every block from the disk: nothing fetched) or ASSEMBLE (some blocks fetched: packed blocks of a
PARTIAL frame, base frames; the rest from the disk). A LOCAL or ASSEMBLE frame is described by an
:class:`Assembly`: per block, where its bytes come from, in two flat arrays.

**Order.** Copying blocks within the disk that is being written needs care: a frame that reads a
block in another frame's region must be built before that region is overwritten. Each such read is
an edge, reader before writer, and peagent.image.order sorts the actions accordingly, breaking a
cycle (two frames that swapped places) by turning one of its frames into a fetch (its
:attr:`Assembly.fallback`, which reads nothing from the disk).

Everything assembled is a hint until the frame's sha256 says otherwise; the writer falls back to
:attr:`Assembly.fallback` when it does not match, so a wrong ``disk`` view costs fetches, never a
wrong byte. This module is pure: no I/O, no clock; tests run plans against a bytearray disk.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from peagent.image.blockmap import UNKNOWN, ZERO_KEY, BlockFinder, key_of, keys_of
from peagent.image.chain import BaseChain, packed_index
from peagent.image.format import BLOCK, BLOCK_HASH_SIZE, BlockIndex, FrameKind, FrameTable, Manifest
from peagent.image.order import safe_order

# Where one block of an assembled frame comes from (Assembly.kinds).
ZERO, DISK, REMOTE = 0, 1, 2
_OFFSET_BITS = 32  # REMOTE args: slot << 32 | byte offset in the slot's decompressed frame


class How(IntEnum):
    KEEP = 0  # already right in place
    HOLE = 1  # all zeros
    FETCH = 2  # the frame whole from the blob
    LOCAL = 3  # every block from the disk
    ASSEMBLE = 4  # some blocks fetched (packed, base frames), the rest from the disk


class Tables(Protocol):
    """An image as the planner sees it: everything but its data."""

    @property
    def manifest(self) -> Manifest: ...
    @property
    def frames(self) -> FrameTable: ...
    @property
    def blocks(self) -> BlockIndex: ...


@dataclass(frozen=True)
class DiskView:
    """What the target is believed to hold: the short hash of its 4 KiB block k at ``hashes[8k:8k+8]``
    (:data:`~peagent.image.blockmap.UNKNOWN` where nobody knows)."""

    hashes: bytes | bytearray


@dataclass
class Assembly:
    """How to build one frame block by block."""

    frame: int
    remote: tuple[tuple[int, int], ...]  # stored frames to fetch and decompress: (chain level, frame)
    kinds: bytes  # per block: ZERO, DISK or REMOTE
    args: array  # DISK: byte offset on the disk; REMOTE: slot << 32 | byte offset in that frame's data
    fallback: Assembly | None = None  # the same frame with nothing from the disk; None: FETCH it whole

    def disk_offsets(self) -> Iterator[int]:
        return (a for kind, a in zip(self.kinds, self.args, strict=True) if kind == DISK)


@dataclass(frozen=True)
class Action:
    frame: int
    how: How
    assembly: Assembly | None = None


@dataclass
class Totals:
    fetch: int = 0  # compressed bytes to fetch from the blobs
    in_place: int = 0  # image bytes already right in place (KEEP)
    local: int = 0  # image bytes of blocks copied from elsewhere on the disk
    remote: int = 0  # image bytes of frames or blocks that come from fetched data
    holes: int = 0  # image bytes of holes


@dataclass
class Plan:
    frame_size: int
    size: int
    target_zero: bool
    order: array  # frame indexes, in the order to process them
    how: bytearray  # per frame: a How
    assemblies: dict[int, Assembly] = field(default_factory=dict)
    converted: int = 0  # LOCAL or ASSEMBLE frames turned into fetches to break cycles
    totals: Totals = field(default_factory=Totals)

    def actions(self) -> Iterator[Action]:
        for j in self.order:
            yield Action(j, How(self.how[j]), self.assemblies.get(j))

    def writes(self, j: int) -> bool:
        """Whether processing frame j writes its region."""
        how = self.how[j]
        return how != How.KEEP and not (how == How.HOLE and self.target_zero)

    def frame_length(self, j: int) -> int:
        return min(self.frame_size, self.size - j * self.frame_size)


class _Builder:
    """Collects an Assembly's per-block sources, and the remote frames they use."""

    def __init__(self, frame: int, nblocks: int) -> None:
        self.frame = frame
        self.kinds = bytearray(nblocks)
        self.args = array("q", bytes(8 * nblocks))
        self.slots: dict[tuple[int, int], int] = {}

    def disk(self, b: int, offset: int) -> None:
        self.kinds[b] = DISK
        self.args[b] = offset

    def remote(self, b: int, where: tuple[int, int, int] | None) -> None:
        if where is None:
            return  # zeros: the block stays ZERO
        level, q, offset = where
        slot = self.slots.setdefault((level, q), len(self.slots))
        self.kinds[b] = REMOTE
        self.args[b] = slot << _OFFSET_BITS | offset

    def build(self, fallback: Assembly | None = None) -> Assembly:
        return Assembly(self.frame, tuple(self.slots), bytes(self.kinds), self.args, fallback)


def plan_frames(chain: Sequence[Tables], *, done: Container[int] = frozenset(), disk: DiskView | None = None,
                target_zero: bool = False) -> Plan:
    """One action per frame of ``chain[0]`` (its bases follow it in ``chain``), in a safe order."""
    image = chain[0]
    m = image.manifest
    n, fsize, bpf = m.frame_count, m.frame_size, m.frame_size // BLOCK
    kinds = image.frames.kinds
    how = bytearray(n)
    for j in range(n):
        how[j] = How.KEEP if j in done else How.HOLE if kinds[j] == FrameKind.HOLE else How.FETCH
    plan = Plan(fsize, m.size, target_zero, array("I"), how)
    stable = bytearray(0 if plan.writes(j) else 1 for j in range(n))
    lookups = BaseChain(chain)

    view = None if disk is None or target_zero else _overlay(disk, image, how)
    finder = None
    if view is not None:
        finder = BlockFinder(_wanted_on_disk(image, how, view))
        finder.scan(view, lambda k: 0 if k * BLOCK // fsize >= n or stable[k * BLOCK // fsize] else 1)

    hashes = image.blocks.hashes
    for j in range(n):
        if how[j] != How.FETCH:
            continue
        k0, k1 = j * bpf, min((j + 1) * bpf, m.block_count)
        kind = kinds[j]
        local = _all_local(j, k0, k1, hashes, view, finder) if view is not None else None
        remote_only = None
        if kind != FrameKind.FULL:
            remote_only = _Builder(j, k1 - k0)
            packed = image.frames.packed[j] if kind == FrameKind.PARTIAL else 0
            for k in range(k0, k1):
                b = k - k0
                where = (0, j, packed_index(packed, b) * BLOCK) if packed >> b & 1 else lookups.resolve(0, k)
                remote_only.remote(b, where)
        if local is not None:
            how[j] = How.LOCAL
            plan.assemblies[j] = local.build(remote_only.build() if remote_only else None)
        elif remote_only is not None:
            how[j] = How.ASSEMBLE
            plan.assemblies[j] = _mixed(j, k0, k1, image, hashes, view, finder, lookups, remote_only)
    _order(plan, chain)
    _count(plan, chain)
    return plan


def _overlay(disk: DiskView, image: Tables, how: bytearray) -> bytearray:
    """The disk view, with the image's own hashes over the frames that are already right."""
    view = bytearray(disk.hashes)
    size = len(image.blocks.hashes)
    if len(view) < size:
        view += UNKNOWN * ((size - len(view)) // BLOCK_HASH_SIZE)
    step = image.manifest.frame_size // BLOCK * BLOCK_HASH_SIZE
    for j, h in enumerate(how):
        if h == How.KEEP:
            view[j * step:(j + 1) * step] = image.blocks.hashes[j * step:(j + 1) * step]
    return view


def _wanted_on_disk(image: Tables, how: bytearray, view: bytearray) -> list[int]:
    """Short hashes of the blocks of frames still to build that are not at their own position."""
    keys = keys_of(image.blocks.hashes)
    hashes = image.blocks.hashes
    bpf = image.manifest.frame_size // BLOCK
    wanted = []
    for j, h in enumerate(how):
        if h != How.FETCH:
            continue
        for k in range(j * bpf, min((j + 1) * bpf, len(keys))):
            s = k * BLOCK_HASH_SIZE
            if keys[k] != ZERO_KEY and hashes[s:s + BLOCK_HASH_SIZE] != view[s:s + BLOCK_HASH_SIZE]:
                wanted.append(keys[k])
    return wanted


def _disk_block(k: int, hashes: bytes, view: bytearray | None, finder: BlockFinder | None) -> int:
    """A disk block holding image block k (its own position first), or -1."""
    if view is None or finder is None:
        return -1
    s = k * BLOCK_HASH_SIZE
    short = hashes[s:s + BLOCK_HASH_SIZE]
    if view[s:s + BLOCK_HASH_SIZE] == short:
        return k
    return finder.find(key_of(short))


def _all_local(j: int, k0: int, k1: int, hashes: bytes, view: bytearray, finder: BlockFinder | None
               ) -> _Builder | None:
    built = _Builder(j, k1 - k0)
    for k in range(k0, k1):
        s = k * BLOCK_HASH_SIZE
        if key_of(hashes[s:s + BLOCK_HASH_SIZE]) == ZERO_KEY:
            continue
        p = _disk_block(k, hashes, view, finder)
        if p < 0:
            return None
        built.disk(k - k0, p * BLOCK)
    return built


def _mixed(j: int, k0: int, k1: int, image: Tables, hashes: bytes, view: bytearray | None,
           finder: BlockFinder | None, lookups: BaseChain, remote_only: _Builder) -> Assembly:
    """A BASE or PARTIAL frame: packed blocks from its own data, the others from the disk or the base."""
    fallback = remote_only.build()
    if view is None:
        return fallback
    built = _Builder(j, k1 - k0)
    packed = image.frames.packed[j] if image.frames.kinds[j] == FrameKind.PARTIAL else 0
    used_disk = False
    for k in range(k0, k1):
        b = k - k0
        if packed >> b & 1:
            built.remote(b, (0, j, packed_index(packed, b) * BLOCK))
            continue
        p = _disk_block(k, hashes, view, finder)
        if p >= 0:
            built.disk(b, p * BLOCK)
            used_disk = True
        else:
            built.remote(b, lookups.resolve(0, k))
    return built.build(fallback) if used_disk else fallback


def _reads(plan: Plan, j: int) -> set[int]:
    """The other regions frame j reads from that some action writes."""
    asm = plan.assemblies.get(j)
    if asm is None:
        return set()
    n = len(plan.how)
    regions = {offset // plan.frame_size for offset in asm.disk_offsets()}
    return {r for r in regions if r != j and r < n and plan.writes(r)}


def _order(plan: Plan, chain: Sequence[Tables]) -> None:
    """Readers before the writers of what they read (peagent.image.order); cycles broken by fetching."""
    reads = {j: r for j in plan.assemblies if (r := _reads(plan, j))}

    def extra(j: int) -> int:
        asm = plan.assemblies[j]
        return _fetch_cost(plan, chain, j, asm.fallback) - _fetch_cost(plan, chain, j, asm)
    plan.order = safe_order(len(plan.how), reads, extra, lambda j: _fall_back(plan, j))


def _fetch_cost(plan: Plan, chain: Sequence[Tables], j: int, asm: Assembly | None) -> int:
    if asm is None:
        return chain[0].frames.lengths[j]
    return sum(chain[level].frames.lengths[q] for level, q in asm.remote)


def _fall_back(plan: Plan, j: int) -> None:
    fallback = plan.assemblies.pop(j).fallback
    if fallback is None:
        plan.how[j] = How.FETCH
    else:
        plan.how[j] = How.ASSEMBLE
        plan.assemblies[j] = fallback
    plan.converted += 1


def _count(plan: Plan, chain: Sequence[Tables]) -> None:
    t = plan.totals
    for j, h in enumerate(plan.how):
        length = plan.frame_length(j)
        if h == How.KEEP:
            t.in_place += length
        elif h == How.HOLE:
            t.holes += length
        elif h == How.FETCH:
            t.fetch += chain[0].frames.lengths[j]
            t.remote += length
        else:
            asm = plan.assemblies[j]
            t.fetch += _fetch_cost(plan, chain, j, asm)
            for b, kind in enumerate(asm.kinds):
                block = min(BLOCK, length - b * BLOCK)
                if kind == DISK:
                    t.local += block
                elif kind == REMOTE:
                    t.remote += block


class SourceError(Exception):
    """A source gave fewer bytes than a block needs (a short disk, a short frame): the frame cannot be
    built from these sources."""


def assemble(asm: Assembly, length: int, read: Callable[[int, int], bytes | bytearray],
             remote: Sequence[bytes | bytearray | memoryview]) -> bytearray:
    """Build a frame of ``length`` bytes: ``read(offset, count)`` reads the disk, ``remote[slot]`` is
    the decompressed data of ``asm.remote[slot]``. Runs of consecutive blocks are copied at once."""
    out = bytearray(length)
    kinds, args = asm.kinds, asm.args
    nblocks = len(kinds)
    b = 0
    while b < nblocks:
        kind = kinds[b]
        e = b + 1
        if kind == ZERO:
            b = e
            continue
        while e < nblocks and kinds[e] == kind and args[e] == args[b] + (e - b) * BLOCK:
            e += 1
        start, end = b * BLOCK, min(length, e * BLOCK)
        if kind == DISK:
            data = read(args[b], end - start)
        else:
            slot, offset = args[b] >> _OFFSET_BITS, args[b] & ((1 << _OFFSET_BITS) - 1)
            data = remote[slot][offset:offset + end - start]
        if len(data) != end - start:
            raise SourceError(f"frame {asm.frame}: {len(data)} bytes where blocks {b}-{e - 1} need {end - start}")
        out[start:end] = data
        b = e
    return out
