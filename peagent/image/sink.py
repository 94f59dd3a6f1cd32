"""The target of a stream, written in order, leaving alone what it already holds.

The device side (opening with O_EXCL or a lock, the capacity check, making holes read as zeros
by punching, discarding or BLKZEROOUT) is :class:`peagent.image.device.Target`'s. What this
module adds is what a single stream needs, because it arrives in order and cannot skip ahead:

* **Known zeros.** Past the target's ``zero_from`` (past the old end of a file; everywhere on a
  disk the deployment has just erased with a zeroing erase), an all-zero block is not written
  and a file stays sparse.
* **Already in place** (resume across processes). A compressed single stream cannot restart in
  the middle after a crash or a reboot: it is decompressed again from the start, and what a
  previous attempt wrote is read back and compared, so that only blocks that differ are written
  (reading a disk costs little next to a network). :class:`InPlace` decides which blocks are
  worth comparing: all of them while they keep matching; after ``give_up`` bytes in a row that
  differ (the end of what was written before), one block in ``sample_every``, to notice matching
  data again (writeback may have lost a stretch before a power loss). A blank or foreign disk
  costs ``give_up`` bytes of reads and a few samples.
* **Holes** (unmapped bmap ranges), batched while adjacent, then made to read as zeros the
  target's way (:func:`peagent.image.device.hole_method`: skipped where they are zeros already,
  punched in a file, discarded on a disk whose discarded blocks are guaranteed to read as zeros,
  else BLKZEROOUT), so that the target holds the whole image, holes included: no old filesystem
  signature survives in a hole to confuse blkid, and the image's sha256 holds on the disk.
  ``holes="keep"`` leaves them as they are, as bmaptool does (fastest; old data stays).

Dirty pages are flushed every ``SYNC_EVERY`` bytes, so that they never fill the PE's RAM and a
power loss loses at most that much (less than ``give_up``, so a rerun finds the stretch after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peagent.disk.capabilities import EraseCaps
from peagent.errors import ImageError
from peagent.image.device import Target

SYNC_EVERY = 64 << 20
GIVE_UP = 128 << 20  # bytes differing in a row before comparing stops (but for samples)
SAMPLE_EVERY = 16  # pieces: one compared in this many once comparing has stopped
HOLE_BATCH = 1 << 30  # bytes of adjacent holes made zero per call
HOLES = ("auto", "keep")
_ZEROS = bytes(4 << 20)


@dataclass
class InPlace:
    """Which pieces to read back and compare before writing (see the module's docstring)."""

    enabled: bool = True
    give_up: int = GIVE_UP
    sample_every: int = SAMPLE_EVERY
    _differing: int = 0
    _seen: int = 0

    @property
    def sampling(self) -> bool:
        return self._differing >= self.give_up

    def should_compare(self) -> bool:
        if not self.enabled:
            return False
        self._seen += 1
        return not self.sampling or self._seen % self.sample_every == 0

    def record(self, same: bool, length: int) -> None:
        self._differing = 0 if same else self._differing + length


@dataclass
class Counts:
    written: int = 0  # bytes written
    in_place: int = 0  # bytes found already in place and not written
    zero_skipped: int = 0  # zero bytes not written because the target reads as zeros there
    holes: dict[str, int] = field(default_factory=dict)  # hole bytes by how they were made zeros


class Sink:
    """Writes pieces of the image at increasing offsets."""

    def __init__(self, path: str, *, size: int | None = None, target_zeroed: bool = False,
                 caps: EraseCaps | None = None, resume: bool = True, holes: str = "auto") -> None:
        if holes not in HOLES:
            raise ImageError(f"holes: expected one of {', '.join(HOLES)}, found {holes!r}")
        self.path = path
        self.holes = holes
        self.counts = Counts()
        # Buffered writes: the stream's buffers are not page-aligned, as O_DIRECT wants them.
        self.target = Target(path, size or 0, direct=False, zeroed=target_zeroed,
                             discard_zeroes=caps.discard_zeroes if caps else None)
        if caps is not None and caps.discard_granularity:
            self.target.discard_granularity = caps.discard_granularity
        # Nothing to compare with where the target is known to read as zeros.
        self.in_place = InPlace(enabled=resume and self.target.zero_from > 0)
        self._unsynced = 0
        self._hole: tuple[int, int] | None = None

    @property
    def is_file(self) -> bool:
        return not self.target.is_block

    def close(self) -> None:
        self.target.close()

    def write(self, offset: int, data: bytes) -> None:
        self._flush_hole()
        end = offset + len(data)
        if self.target.is_block and end > self.target.capacity:
            raise ImageError(f"the image is larger than {self.path} ({self.target.capacity} bytes): "
                             f"{end} bytes and counting")
        if offset >= self.target.zero_from and data == _zeros(len(data)):
            self.counts.zero_skipped += len(data)
            return
        if offset < self.target.zero_from and self.in_place.should_compare():
            same = self.target.read(offset, len(data)) == data
            self.in_place.record(same, len(data))
            if same:
                self.counts.in_place += len(data)
                return
        self.target.write(offset, data)
        self.counts.written += len(data)
        self._unsynced += len(data)
        if self._unsynced >= SYNC_EVERY:
            self.target.sync()
            self._unsynced = 0

    def hole(self, offset: int, length: int) -> None:
        """An unmapped range: batched with adjacent ones, then made zeros (or kept)."""
        if self._hole is not None and sum(self._hole) == offset and self._hole[1] < HOLE_BATCH:
            self._hole = (self._hole[0], self._hole[1] + length)
        else:
            self._flush_hole()
            self._hole = (offset, length)

    def finish(self, size: int) -> None:
        """After the last piece: the last holes, a file cut to the image's size, everything flushed."""
        self._flush_hole()
        self.target.image_size = size
        self.target.finish()

    def _flush_hole(self) -> None:
        if self._hole is None:
            return
        offset, length = self._hole
        self._hole = None
        if self.holes == "keep":
            self._count("kept", length)
            return
        # Target.zero skips what lies past zero_from; count that part as skipped here.
        before = min(max(self.target.zero_from - offset, 0), length)
        if before < length:
            self._count("skip", length - before)
        if before:
            self._count(self.target.zero(offset, before), before)

    def _count(self, how: str, length: int) -> None:
        self.counts.holes[how] = self.counts.holes.get(how, 0) + length


def _zeros(length: int) -> bytes:
    return _ZEROS if length == len(_ZEROS) else bytes(length)
