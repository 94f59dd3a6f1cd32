"""Carrying an erase out: refuse before the first write, erase as the mode says, verify, report.

:func:`erase` is the one entry point: it checks the spec against the capabilities again
(:func:`~peagent.disk.erase.decide.check_erase`), claims the disk, runs the host's erase
(:mod:`~peagent.disk.erase.wipe`) or the drive's (:mod:`~peagent.disk.erase.secure`), reads the
disk back (:mod:`~peagent.disk.erase.verify`) and returns an :class:`EraseReport`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from peagent.disk.capabilities import EraseCaps
from peagent.disk.erase.decide import _human, check_erase, choose_secure, expected_data, sample_positions
from peagent.disk.erase.device import Progress, _claim, _drop_cache, _inspect, _no_progress, _open_rw, _reread
from peagent.disk.erase.secure import _ata_erase, _nvme_format, _nvme_sanitize
from peagent.disk.erase.spec import EraseSpec
from peagent.disk.erase.verify import _fingerprint, _verify
from peagent.disk.erase.wipe import _discard, _metadata, zero_range
from peagent.disk.tools import Runner, run_tool
from peagent.errors import EraseError


@dataclass(frozen=True)
class EraseReport:
    device: str
    mode: str
    method: str  # how: "wipefs+zero", "BLKDISCARD", "BLKZEROOUT", "write", a secure method
    seconds: float
    bytes: int  # bytes erased: the whole disk, or the metadata regions zeroed
    steps: tuple[str, ...] = ()  # what was done, in order
    verified: tuple[str, ...] = ()  # what was read back and found erased
    notes: tuple[str, ...] = ()  # caveats: what was not verified and why, fallbacks taken

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": list(self.steps), "verified": list(self.verified),
                "notes": list(self.notes)}

    def summary(self) -> str:
        return (f"{self.mode} erase of {self.device} ({self.method}): {_human(self.bytes)} in "
                f"{self.seconds:.1f} s; verified: {'; '.join(self.verified)}")


def erase(device: str, spec: EraseSpec, caps: EraseCaps, progress: Progress = _no_progress, *,
          runner: Runner = run_tool) -> EraseReport:
    """Erase ``device`` (a whole disk; a regular file works too, for tests) as ``spec`` says,
    verify it, and report. ``progress(n)`` gets the bytes done since its previous call; the total
    is the disk's size (metadata mode: the regions it zeroes)."""
    started = time.monotonic()
    check_erase(spec, caps)  # refuse before the first write
    if os.path.realpath(device) != os.path.realpath(caps.device):
        raise EraseError(f"the capabilities given are those of {caps.device}, not of {device}")
    disk = _inspect(device)
    _claim(disk)
    steps: list[str] = []
    notes: list[str] = []
    zeroed: list[tuple[int, int]] = []  # regions that must read back as zeroes
    before: dict[int, bytes] = {}  # fingerprints of the samples, for "changed" verification
    samples = sample_positions(disk.size, spec.samples)
    method = choose_secure(spec.method, caps) if spec.mode == "secure" else spec.mode
    expect = expected_data(spec.mode, method, caps)

    if spec.mode == "metadata":
        zeroed = _metadata(disk, runner, progress, steps, notes)
        method, affected = "wipefs+zero", sum(n for _, n in zeroed)
    elif spec.mode == "discard":
        with _open_rw(disk) as fd:
            _discard(fd, disk, progress)
        steps.append(f"discarded all {_human(disk.size)} of {disk.path} (BLKDISCARD)")
        zeroed = _metadata(disk, runner, _no_progress, steps, notes)
        method, affected = "BLKDISCARD", disk.size
    elif spec.mode == "zero":
        with _open_rw(disk) as fd:
            method = zero_range(fd, 0, disk.size, progress, device=disk.path)
            _reread(fd, disk, runner, steps, notes)
        steps.insert(0, f"wrote zeroes over all {_human(disk.size)} of {disk.path} ({method})")
        if method != "BLKZEROOUT":
            notes.append(f"BLKZEROOUT was refused on {disk.path}: zeroes were written instead ({method})")
        affected = disk.size
    else:
        if expect.data == "changed":
            before = _fingerprint(disk.path, samples)
        if method.startswith("nvme-format"):
            _nvme_format(disk, caps, method, runner, steps)
        elif method.startswith("nvme-sanitize"):
            _nvme_sanitize(disk, caps, method, runner, progress, steps)
        else:
            _ata_erase(disk, caps, method, runner, steps, notes)
        if not method.startswith("nvme-sanitize"):  # sanitize reports its progress as it goes
            progress(disk.size)
        with _open_rw(disk) as fd:
            _drop_cache(fd)
            _reread(fd, disk, runner, steps, notes)
        affected = disk.size

    verified = _verify(disk, spec, expect, zeroed, samples, before, runner, notes)
    return EraseReport(device=disk.path, mode=spec.mode, method=method,
                       seconds=round(time.monotonic() - started, 3), bytes=affected,
                       steps=tuple(steps), verified=tuple(verified), notes=tuple(notes))
