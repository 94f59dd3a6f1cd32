"""The erases the host does itself: signatures and headers (metadata), BLKDISCARD, BLKZEROOUT.

:func:`_metadata` runs wipefs on every partition and the disk, zeroes both ends of each
(:func:`~peagent.disk.erase.decide.metadata_regions`) and has the partition table re-read;
:func:`zero_range` zeroes a range with BLKZEROOUT, writing zero blocks where the ioctl is refused;
:func:`_discard` discards the whole device.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct

from peagent.disk.erase.decide import DISK_EDGE, MIB, PART_EDGE, _human, metadata_regions
from peagent.disk.erase.device import (
    Progress,
    _Disk,
    _drop_cache,
    _no_progress,
    _open_rw,
    _reread,
    _tool,
)
from peagent.disk.tools import Runner
from peagent.errors import DeviceError, EraseUnsupportedError

ZERO_CHUNK = 256 * MIB  # per BLKZEROOUT call: progress granularity
DISCARD_CHUNK = 1 << 30
WRITE_BLOCK = 4 * MIB  # the fallback's writes
SYNC_EVERY = 256 * MIB

# <linux/fs.h>: _IO(0x12, n); these numbers are the same on every architecture Linux runs the PE on.
BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F
_FALLBACK_ERRNOS = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY)
_ZEROS = bytes(WRITE_BLOCK)

_WIPED = re.compile(r"^(\S+): \d+ bytes? (?:was|were) erased at offset (0x[0-9a-f]+) \(([^)]+)\)", re.M)


def _metadata(disk: _Disk, runner: Runner, progress: Progress, steps: list[str],
              notes: list[str]) -> list[tuple[int, int]]:
    wiped: list[str] = []
    for target in [*(p.node for p in disk.partitions), disk.path]:
        out = _tool(runner, ["wipefs", "--all", "--force", target], f"wiping signatures from {target}")
        wiped += [f"{kind} on {os.path.basename(dev)} at {offset}"
                  for dev, offset, kind in _WIPED.findall(out.stdout)]
    names = ", ".join(os.path.basename(p.node) for p in disk.partitions)
    which = f" ({names})" if names else ""
    steps.append(f"wipefs --all --force on {len(disk.partitions)} partition(s){which} and on {disk.path}: "
                 + (", ".join(dict.fromkeys(wiped)) or "no signature found"))
    regions = metadata_regions(disk.size, [(p.start, p.size) for p in disk.partitions])
    with _open_rw(disk) as fd:
        for offset, length in regions:
            zero_range(fd, offset, length, progress, device=disk.path)
        os.fsync(fd)
        _drop_cache(fd)
        ends = f" and {PART_EDGE // MIB} MiB at both ends of each partition" if disk.partitions else ""
        steps.append(f"zeroed {_human(sum(n for _, n in regions))} in {len(regions)} region(s): the first "
                     f"and last {DISK_EDGE // MIB} MiB of the disk{ends}")
        _reread(fd, disk, runner, steps, notes)
    return regions


def zero_range(fd: int, start: int, length: int, progress: Progress = _no_progress, *,
               device: str = "the device", chunk: int = ZERO_CHUNK, offload: bool = True) -> str:
    """Zero [start, start+length) with BLKZEROOUT, falling back to writing zero blocks when the
    ioctl is refused (or from the start with ``offload=False``, which the benchmark uses); returns
    how: "BLKZEROOUT", "write", or "BLKZEROOUT, then write"."""
    used: list[str] = []
    pos, end = start, start + length
    while pos < end:
        n = min(chunk, end - pos)
        if offload:
            try:
                fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", pos, n))
            except OSError as exc:
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise DeviceError(f"zeroing {device} at byte {pos}: {exc.strerror}") from None
                offload = False  # this device will not do it: write the rest
            else:
                used.append("BLKZEROOUT")
                progress(n)
                pos += n
                continue
        _write_zeroes(fd, pos, n, device)
        used.append("write")
        progress(n)
        pos += n
    return ", then ".join(dict.fromkeys(used)) or "nothing to do"


def _write_zeroes(fd: int, start: int, length: int, device: str) -> None:
    pos, end, unsynced = start, start + length, 0
    while pos < end:
        n = min(WRITE_BLOCK, end - pos)
        try:
            written = os.pwrite(fd, _ZEROS[:n], pos)
        except OSError as exc:
            raise DeviceError(f"writing zeroes to {device} at byte {pos}: {exc.strerror}") from None
        if written <= 0:
            raise DeviceError(f"writing zeroes to {device} at byte {pos}: the device is full")
        pos += written
        unsynced += written
        if unsynced >= SYNC_EVERY:  # keep dirty pages from filling the PE's RAM
            os.fdatasync(fd)
            unsynced = 0


def _discard(fd: int, disk: _Disk, progress: Progress) -> None:
    pos = 0
    while pos < disk.size:
        n = min(DISCARD_CHUNK, disk.size - pos)
        try:
            fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", pos, n))
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
                raise EraseUnsupportedError(f"discard: {disk.path} refused BLKDISCARD ({exc.strerror}); "
                                            "use mode zero instead") from None
            raise DeviceError(f"discarding {disk.path} at byte {pos}: {exc.strerror}") from None
        progress(n)
        pos += n
