"""Erasing the target disk, in one of four modes, each verified by reading the disk back.

The task says how (``"erase": "zero"``, or ``{"mode": "secure", "method": "auto", "samples":
64}``; :func:`parse_erase`). :func:`check_erase` decides from the disk's probed
:class:`~peagent.disk.capabilities.EraseCaps` alone whether the disk can do it, and raises
:class:`~peagent.errors.EraseUnsupportedError` (code ``erase.unsupported``) while planning, before
anything is written; otherwise it returns the plan's lines. :func:`erase` then does it and
returns an :class:`EraseReport`: what was done, how long it took, how many bytes it touched, and
what was verified.

Modes:

``metadata`` (seconds)
    Makes the disk look blank to every tool and to the kernel, leaving the data in between:
    ``wipefs --all --force`` on each partition, then on the disk (every signature libblkid knows:
    filesystems, LVM labels, MD, bcache, the GPT headers and the protective MBR); then zeroes the
    first and last 4 MiB of the disk and the first and last 1 MiB of each partition, which covers
    the MBR, both GPT headers and tables (primary from LBA 1, backup at the end), MD superblocks
    (0.90 and 1.0 near the end, 1.1 and 1.2 near the start), LVM labels (sectors 0-3) and their
    metadata areas, bcache (4 KiB) and ZFS labels (first and last 512 KiB), including stale ones
    wipefs does not recognise; then asks the kernel to re-read the partition table
    (``BLKRRPART``) and waits for udev (``udevadm settle``), so that udev sees a blank disk.
``discard`` (seconds to minutes)
    ``BLKDISCARD`` over the whole device, then the metadata erase above. The metadata erase comes
    after the discard on purpose: a drive whose TRIM is not deterministic may return old data
    for discarded blocks, so the headers are zeroed and checked explicitly whatever the drive does.
    Requires ``queue/discard_max_bytes`` > 0.
``zero`` (the disk's write speed, unless offloaded)
    ``BLKZEROOUT`` in 256 MiB chunks, with progress; when the ioctl is refused (EOPNOTSUPP,
    EINVAL, ENOTTY) the rest is written as 4 MiB blocks of zeroes. Then ``BLKRRPART``.
``secure`` (seconds to hours)
    The drive's own erase, which also reaches blocks the host cannot address (spare and
    remapped blocks, caches). ``method`` picks one; ``auto`` takes the first the disk supports in
    this order:

    1. ``nvme-format-crypto``: Format NVM with Secure Erase Setting 2 (the media key is replaced;
       seconds) when FNA bit 2 says it is supported;
    2. ``nvme-format``: Format NVM with SES 1 (user data erase);
    3. ``nvme-sanitize-crypto``, 4. ``nvme-sanitize-block``: Sanitize, when SANICAP allows;
    5. ``ata-enhanced``: ATA SECURITY ERASE UNIT, enhanced; 6. ``ata``: the normal one.

    Formats come before sanitize because a format is scoped to the namespace and returns when it
    is done, while a sanitize always spans the whole controller, cannot be aborted, resumes after
    a power loss and restricts the controller until it ends (that is also why a rerun waits for a
    sanitize already in progress instead of starting another). ``nvme-sanitize-overwrite`` (hours,
    and it writes every cell) is never chosen by ``auto``. A format or sanitize that would also
    erase another namespace of the controller is refused. The ATA erase goes through hdparm: set
    the temporary user password ``peagent``, erase, and check with ``hdparm -I`` that the password
    is cleared (hdparm's exit status is not enough: it returns 0 when the drive aborts the
    command, as QEMU's IDE drive does). A drive left locked with that password by an interrupted
    erase is unlocked with it and erased again. A frozen drive is reported with its remedy
    (suspend/resume or hot-plug), never attempted; a disk behind a USB bridge never gets a
    security command.

What each mode verifies, always by reading the device (O_DIRECT, so not the page cache):

=========  ==================================================================================
every      ``blkid -p`` and ``wipefs`` find no signature; the kernel lists no partition
metadata   the zeroed regions read back as zeroes (the data in between is not looked at)
discard    as metadata; plus the samples read as zeroes when the device guarantees that
           discarded blocks do (:mod:`~peagent.disk.capabilities`), else the report says so
zero       the samples read as zeroes
secure     zeroes where the erase guarantees them (ATA normal erase; NVMe format or block/overwrite
           sanitize on a namespace whose DLFEAT says deallocated blocks read as zeroes); otherwise
           (cryptographic erase, ATA enhanced erase's vendor pattern) every sampled 4 KiB block that
           held data before the erase must differ from what it held
=========  ==================================================================================

The samples are the first and last MiB of the disk plus ``samples`` (default 64) blocks of 64
KiB spread evenly from start to end (:func:`sample_positions`): deterministic, so two runs check
the same places. A failed verification raises :class:`~peagent.errors.EraseVerifyError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peagent.disk.capabilities import AtaSecurity, EraseCaps, parse_hdparm_identify
from peagent.disk.tools import NOT_INSTALLED, Runner, ToolResult, run_tool
from peagent.errors import (
    DeviceError,
    EraseError,
    EraseUnsupportedError,
    EraseVerifyError,
    TaskError,
    describe,
)
from peagent.schema import Fields

MODES = ("metadata", "discard", "zero", "secure")
AUTO_ORDER = ("nvme-format-crypto", "nvme-format", "nvme-sanitize-crypto", "nvme-sanitize-block",
              "ata-enhanced", "ata")
SECURE_METHODS = ("auto", *AUTO_ORDER, "nvme-sanitize-overwrite")
NVME_METHODS = tuple(m for m in SECURE_METHODS if m.startswith("nvme-"))
ATA_METHODS = ("ata-enhanced", "ata")
DEFAULT_SAMPLES = 64
MAX_SAMPLES = 4096

MIB = 1 << 20
DISK_EDGE = 4 * MIB  # zeroed at both ends of the disk in metadata mode
PART_EDGE = 1 * MIB  # zeroed at both ends of each partition
SAMPLE_EDGE = 1 * MIB  # the first and last MiB are always sampled
SAMPLE_BLOCK = 64 << 10
ZERO_CHUNK = 256 * MIB  # per BLKZEROOUT call: progress granularity
DISCARD_CHUNK = 1 << 30
WRITE_BLOCK = 4 * MIB  # the fallback's writes
SYNC_EVERY = 256 * MIB
READ_CHUNK = 1 * MIB
CHECK_BLOCK = 4096  # granularity of the "changed" comparison

ATA_PASSWORD = "peagent"  # temporary; documented so that a drive left locked can be unlocked by hand
NVME_FORMAT_TIMEOUT_MS = 3 * 3600 * 1000  # nvme-cli's default (600 s) is short for a big user-data erase
SANITIZE_POLL = 5.0  # s
SANITIZE_TIMEOUT = 24 * 3600.0
REREAD_TRIES = 10
SANITIZE_ACTIONS = {"block": 2, "overwrite": 3, "crypto": 4}  # nvme sanitize --sanact

# <linux/fs.h>: _IO(0x12, n); these numbers are the same on every architecture Linux runs the PE on.
BLKRRPART = 0x125F
BLKFLSBUF = 0x1261
BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F
_FALLBACK_ERRNOS = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY)
_ZEROS = bytes(max(WRITE_BLOCK, READ_CHUNK))

Progress = Callable[[int], None]  # called with the bytes done since the previous call


def _no_progress(n: int) -> None:
    pass


# --- the task's erase spec ---------------------------------------------------------------------


@dataclass(frozen=True)
class EraseSpec:
    mode: str
    method: str = "auto"  # only for mode "secure"
    samples: int = DEFAULT_SAMPLES


def parse_erase(obj: object, field: str = "erase") -> EraseSpec:
    """``"zero"`` or ``{"mode": "secure", "method": "auto", "samples": 64}`` -> EraseSpec."""
    modes = ", ".join(MODES)
    either = f"one of {modes}, or an object with mode, method and samples"
    if isinstance(obj, str):
        if obj not in MODES:
            raise TaskError(field, either, describe(obj))
        return EraseSpec(mode=obj)
    if not isinstance(obj, dict):
        raise TaskError(field, either, describe(obj))
    f = Fields(obj, field)
    mode = f.get("mode", str, f"one of {modes}")
    if mode not in MODES:
        raise TaskError(f.field("mode"), f"one of {modes}", describe(mode))
    method = f.get("method", str, f"one of {', '.join(SECURE_METHODS)}", None)
    if method is not None:
        if mode != "secure":
            raise TaskError(f.field("method"), 'no method: only mode "secure" has methods', describe(method))
        if method not in SECURE_METHODS:
            raise TaskError(f.field("method"), f"one of {', '.join(SECURE_METHODS)}", describe(method))
    samples = f.get("samples", int, f"a number of sample blocks to read back, 0 to {MAX_SAMPLES}",
                    DEFAULT_SAMPLES)
    if not 0 <= samples <= MAX_SAMPLES:
        raise TaskError(f.field("samples"), f"a number of sample blocks to read back, 0 to {MAX_SAMPLES}",
                        describe(samples))
    f.done()
    return EraseSpec(mode=mode, method=method or "auto", samples=samples)


# --- decisions: pure functions of the spec and the capabilities --------------------------------


def _frozen_remedy(device: str) -> str:
    return (f"{device}: the drive's security is frozen (the firmware froze it at power-on, as most do); "
            "suspend the machine to RAM and resume it (rtcwake -m mem -s 10), or unplug and re-plug "
            "the drive while the machine runs (hot-plug), then run the erase again")


def secure_methods(caps: EraseCaps) -> dict[str, str | None]:
    """Every secure method -> None when this disk can do it, else why not (for messages)."""
    found: dict[str, str | None] = {}
    nvme_base = _nvme_problem(caps)
    for method in NVME_METHODS:
        found[method] = nvme_base or _nvme_method_problem(method, caps)
    ata_base = _ata_problem(caps)
    for method in ATA_METHODS:
        found[method] = ata_base or (
            "the drive does not support enhanced security erase"
            if method == "ata-enhanced" and not caps.ata_enhanced_erase else None)
    return found


def _nvme_problem(caps: EraseCaps) -> str | None:
    if caps.interface == "nvme":
        return caps.secure_problem
    if caps.interface != "ata" and caps.secure_problem:  # USB, virtio, ...: say what it is
        return caps.secure_problem
    return f"{caps.device} is not an NVMe namespace"


def _nvme_method_problem(method: str, caps: EraseCaps) -> str | None:
    ctrl = caps.nvme_controller or "the controller"
    others = caps.nvme_namespaces - 1
    if method.startswith("nvme-format"):
        if not caps.nvme_format:
            return f"{ctrl} does not support Format NVM (OACS bit 1 is clear)"
        if method == "nvme-format-crypto" and not caps.nvme_crypto_erase:
            return f"{ctrl} does not support cryptographic erase in Format NVM (FNA bit 2 is clear)"
        if others > 0 and (caps.nvme_format_all_namespaces or caps.nvme_secure_erase_all_namespaces):
            return (f"a secure format on {ctrl} applies to all its {caps.nvme_namespaces} namespaces "
                    "(FNA): it would erase the other namespaces too")
        return None
    kind = method.removeprefix("nvme-sanitize-")
    if kind not in caps.nvme_sanitize:
        return f"{ctrl} does not support sanitize {kind} erase (SANICAP)"
    if others > 0:
        return (f"a sanitize erases every namespace of {ctrl}, and it has {caps.nvme_namespaces}: "
                "it would erase the other namespaces too")
    return None


def _ata_problem(caps: EraseCaps) -> str | None:
    if caps.interface != "ata":
        if caps.interface != "nvme" and caps.secure_problem:
            return caps.secure_problem
        return f"{caps.device} is not an ATA drive"
    if caps.secure_problem:
        return caps.secure_problem
    if not caps.ata_security_supported:
        return (f"{caps.device} does not implement the ATA Security feature set "
                "(hdparm -I shows no security support)")
    if caps.ata_security_frozen:
        return _frozen_remedy(caps.device)
    if caps.ata_security_count_expired:
        return (f"{caps.device}: too many wrong security passwords were tried (security count "
                "expired); power-cycle the drive, then run the erase again")
    return None


def choose_secure(method: str, caps: EraseCaps) -> str:
    """The secure method to use (``auto`` resolved), or EraseUnsupportedError saying why none."""
    options = secure_methods(caps)
    if method != "auto":
        why = options.get(method, f"unknown method {method!r}")
        if why is not None:
            raise EraseUnsupportedError(f"secure: {method} is not possible: {why}")
        return method
    for candidate in AUTO_ORDER:
        if options[candidate] is None:
            return candidate
    instead = "; use mode zero (or discard) instead"
    if caps.interface not in ("nvme", "ata"):
        raise EraseUnsupportedError(f"secure: {caps.secure_problem or caps.device + ' has no secure erase'}"
                                    + instead)
    relevant = NVME_METHODS if caps.interface == "nvme" else ATA_METHODS
    reasons = dict.fromkeys(str(options[m]) for m in relevant if options[m])  # in order, once each
    raise EraseUnsupportedError(f"secure: {caps.device} supports no secure erase: {'; '.join(reasons)}"
                                + instead)


@dataclass(frozen=True)
class Expectation:
    """What the data reads as after an erase: "zero", "changed" or None (not checked), and why."""

    data: str | None
    why: str


def expected_data(mode: str, method: str | None, caps: EraseCaps) -> Expectation:
    if mode == "metadata":
        return Expectation(None, "metadata mode leaves the data between the zeroed regions")
    if mode == "zero":
        return Expectation("zero", "every block was written with zeroes")
    if mode == "discard":
        if caps.discard_zeroes:
            return Expectation("zero", caps.discard_zeroes_reason)
        return Expectation(None, f"{caps.device} does not guarantee zeroes after discard "
                                 f"({caps.discard_zeroes_reason or 'unknown'}): the data samples are not "
                                 "checked, only the metadata erase that follows the discard")
    if method in ("nvme-format-crypto", "nvme-sanitize-crypto"):
        return Expectation("changed", "a cryptographic erase leaves unreadable data, not zeroes")
    if method == "ata-enhanced":
        return Expectation("changed", "an enhanced security erase writes a vendor-specific pattern")
    if method == "ata":
        return Expectation("zero", "a normal ATA security erase writes binary zeroes (ACS)")
    if caps.nvme_deallocated_reads_zero:
        return Expectation("zero", "the namespace reports that deallocated blocks read as zeroes (DLFEAT)")
    return Expectation("changed", "the namespace does not report that erased blocks read as zeroes (DLFEAT)")


def check_erase(spec: EraseSpec, caps: EraseCaps) -> list[str]:
    """Plan-time check: raise EraseUnsupportedError if the disk cannot, else the plan's lines."""
    dev = caps.device
    samples = f"{spec.samples} sample blocks of 64 KiB and the first and last MiB"
    metadata_lines = [
        f"wipefs --all --force on each partition of {dev}, then on {dev} itself",
        f"zero the first and last {DISK_EDGE // MIB} MiB of {dev} and the first and last "
        f"{PART_EDGE // MIB} MiB of each partition (MBR, both GPT headers and tables, MD, LVM, bcache)",
        "re-read the partition table (BLKRRPART) so that udev sees a blank disk",
    ]
    signature_check = "blkid -p and wipefs find no signature, the kernel lists no partition"
    if spec.mode == "metadata":
        return [*metadata_lines, f"verify: {signature_check}, the zeroed regions read back as zeroes"]
    if spec.mode == "discard":
        if not caps.discard:
            raise EraseUnsupportedError(f"discard: {dev} does not support discard "
                                        "(queue/discard_max_bytes is 0); use mode zero instead")
        expect = expected_data("discard", None, caps)
        data = f"{samples} read as zeroes ({expect.why})" if expect.data else \
            f"data not checked: {expect.why}"
        return [f"discard all {_human(caps.size)} of {dev} (BLKDISCARD)", *metadata_lines,
                f"verify: {signature_check}, the zeroed regions read back as zeroes; {data}"]
    if spec.mode == "zero":
        how = (f"offloaded to the device, up to {_human(caps.write_zeroes_max_bytes)} per command"
               if caps.write_zeroes else "the kernel writes zero pages: expect the disk's write speed")
        return [f"write zeroes over all {_human(caps.size)} of {dev} (BLKZEROOUT, {how}; "
                "zero blocks are written instead if the ioctl is refused)",
                "re-read the partition table (BLKRRPART) so that udev sees a blank disk",
                f"verify: {signature_check}, {samples} read as zeroes"]
    if spec.mode == "secure":
        method = choose_secure(spec.method, caps)
        expect = expected_data("secure", method, caps)
        data = (f"{samples} read as zeroes ({expect.why})" if expect.data == "zero" else
                f"every 4 KiB block of {samples} that held data differs from before ({expect.why})")
        return [*_secure_lines(method, caps), "re-read the partition table (BLKRRPART)",
                f"verify: {signature_check}, {data}"]
    raise EraseError(f"unknown erase mode {spec.mode!r}")  # parse_erase never lets one through


def _secure_lines(method: str, caps: EraseCaps) -> list[str]:
    if method.startswith("nvme-format"):
        ses = "2 (cryptographic erase)" if method == "nvme-format-crypto" else "1 (user data erase)"
        return [f"NVMe Format NVM with Secure Erase Setting {ses} of namespace {caps.nvme_nsid} "
                f"on {caps.nvme_controller} (nvme format {caps.device}), keeping the LBA format"]
    if method.startswith("nvme-sanitize"):
        kind = method.removeprefix("nvme-sanitize-")
        extra = ", one pass of zeroes" if kind == "overwrite" else ""
        return [f"NVMe Sanitize, {kind} erase{extra}, on {caps.nvme_controller} (nvme sanitize), "
                "waiting for it to complete (nvme sanitize-log)"]
    enhanced = method == "ata-enhanced"
    minutes = caps.ata_enhanced_erase_minutes if enhanced else caps.ata_erase_minutes
    estimate = f"; the drive estimates {minutes} min" if minutes else ""
    lines = [f"ATA SECURITY ERASE UNIT{' (enhanced)' if enhanced else ''} of {caps.device} through hdparm: "
             f"set the temporary user password {ATA_PASSWORD!r}, erase{estimate}, then check that the "
             "password is cleared"]
    if caps.ata_security_enabled or caps.ata_security_locked:
        lines.insert(0, f"{caps.device} already has a security password set (locked: "
                        f"{'yes' if caps.ata_security_locked else 'no'}): unlock it with {ATA_PASSWORD!r}, "
                        "which an interrupted erase leaves; any other password makes the erase fail")
    return lines


def progress_total(spec: EraseSpec, size: int, partitions: Sequence[tuple[int, int]] = ()) -> int:
    """The bytes :func:`erase` will report through ``progress`` for a disk of ``size`` bytes with
    these partitions ((start, length) in bytes): the regions metadata mode zeroes, else the disk."""
    if spec.mode == "metadata":
        return sum(n for _, n in metadata_regions(size, partitions))
    return size


def metadata_regions(size: int, partitions: Sequence[tuple[int, int]], *, edge: int = DISK_EDGE,
                     part_edge: int = PART_EDGE) -> list[tuple[int, int]]:
    """The (offset, length) regions metadata mode zeroes: both ends of the disk and of each
    partition (given as (start, length) in bytes), clipped to the disk, 512-aligned, merged."""
    spans = [(0, edge), (size - edge, size)]
    for start, length in partitions:
        end = start + length
        spans += [(start, min(start + part_edge, end)), (max(start, end - part_edge), end)]
    return _merge(spans, size, 512)


def sample_positions(size: int, count: int, *, block: int = SAMPLE_BLOCK,
                     edge: int = SAMPLE_EDGE) -> list[tuple[int, int]]:
    """The (offset, length) regions read back to verify an erase: the first and last ``edge``
    bytes and ``count`` blocks spread evenly from the start to the end, 4 KiB aligned, merged."""
    spans = [(0, edge), (size - edge, size)]
    last = max(0, size - block)
    for i in range(count):
        offset = last * i // (count - 1) if count > 1 else last // 2
        offset -= offset % 4096
        spans.append((offset, offset + block))
    return _merge(spans, size, 512)


def _merge(spans: list[tuple[int, int]], size: int, align: int) -> list[tuple[int, int]]:
    clipped = []
    for start, end in spans:
        start = max(0, start - start % align)
        end = min(size, end + (-end) % align)
        if end > start:
            clipped.append((start, end))
    merged: list[list[int]] = []
    for start, end in sorted(clipped):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e - s) for s, e in merged]


# --- the report ----------------------------------------------------------------------------------


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


# --- carrying it out -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    node: str
    start: int
    size: int


@dataclass
class _Disk:
    path: str
    size: int
    block: bool
    sys_dir: Path | None
    partitions: list[_Part] = field(default_factory=list)


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


def _inspect(device: str) -> _Disk:
    try:
        st = os.stat(device)
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise EraseError(f"cannot open {device}: {exc.strerror}") from None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    if stat.S_ISBLK(st.st_mode):
        sys_dir = Path("/sys/class/block", os.path.basename(os.path.realpath(device)))
        return _Disk(device, size, True, sys_dir, partitions_of(sys_dir))
    if stat.S_ISREG(st.st_mode):
        return _Disk(device, size, False, None)
    raise EraseError(f"{device} is neither a block device nor a file")


def partitions_of(sys_dir: Path) -> list[_Part]:
    """The partitions the kernel lists for a disk (its sysfs directory), in bytes."""
    parts = []
    for entry in sorted(sys_dir.iterdir()) if sys_dir.is_dir() else []:
        if (entry / "partition").is_file():
            start = int((entry / "start").read_text()) * 512  # sysfs counts 512-byte sectors
            size = int((entry / "size").read_text()) * 512
            parts.append(_Part(f"/dev/{entry.name}", start, size))
    return parts


def _claim(disk: _Disk) -> None:
    """Refuse a disk that anything uses: O_EXCL fails on a mounted, swapped-on or held device."""
    if not disk.block:
        return
    # Partitions first: with one mounted the whole disk is busy too, and the partition is the news.
    for path in [*(p.node for p in disk.partitions), disk.path]:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise EraseError(f"{path} is in use (mounted, swap, or held by LVM, MD or dm-crypt): "
                                 f"{disk.path} is not erased; unmount or stop what holds it") from None
            raise EraseError(f"cannot open {path}: {exc.strerror}") from None


@contextlib.contextmanager
def _open_rw(disk: _Disk) -> Iterator[int]:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if disk.block else 0)
    try:
        fd = os.open(disk.path, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise EraseError(f"{disk.path} became busy (something opened it exclusively)") from None
        raise EraseError(f"cannot open {disk.path} for writing: {exc.strerror}") from None
    try:
        yield fd
        os.fsync(fd)
    finally:
        os.close(fd)


def _tool(runner: Runner, argv: list[str], what: str, timeout: float | None = 300) -> ToolResult:
    result = runner(argv, timeout=timeout)
    if result.returncode == NOT_INSTALLED:
        raise EraseError(f"{what}: {argv[0]} is not installed in this PE")
    if not result.ok:
        raise EraseError(f"{what}: {result.why()}")
    return result


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


def _drop_cache(fd: int) -> None:
    # The page cache may still hold what the disk held before a tool erased it behind its back.
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, BLKFLSBUF)


def _reread(fd: int, disk: _Disk, runner: Runner, steps: list[str], notes: list[str]) -> None:
    """BLKRRPART, so that the kernel drops the old partitions and udev sees a blank disk."""
    if not disk.block:
        return
    for _ in range(REREAD_TRIES):
        try:
            fcntl.ioctl(fd, BLKRRPART)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # e.g. a loop device without partition scanning
                notes.append(f"the kernel does not scan partitions on {disk.path} (BLKRRPART refused)")
                return
            if exc.errno != errno.EBUSY:
                raise EraseError(f"re-reading the partition table of {disk.path}: {exc.strerror}") from None
            # A partition is open: usually udev probing it after our writes. Wait, then retry.
            _settle(runner)
            time.sleep(0.5)
            continue
        _settle(runner)
        steps.append(f"re-read the partition table of {disk.path} (BLKRRPART) and waited for udev")
        return
    raise EraseError(f"the kernel could not re-read the partition table of {disk.path}: a partition "
                     "stayed open (busy)")


def _settle(runner: Runner) -> None:
    runner(["udevadm", "settle", "--timeout=30"], timeout=60)  # absent or failing: nothing to wait for


# --- secure erase --------------------------------------------------------------------------------


def _nvme_format(disk: _Disk, caps: EraseCaps, method: str, runner: Runner, steps: list[str]) -> None:
    ses = 2 if method == "nvme-format-crypto" else 1
    argv = ["nvme", "format", disk.path, f"--namespace-id={caps.nvme_nsid}", f"--ses={ses}", "--force",
            f"--timeout={NVME_FORMAT_TIMEOUT_MS}"]
    _tool(runner, argv, f"NVMe Format NVM (SES={ses}) of {disk.path}", timeout=None)
    steps.append(f"NVMe Format NVM, Secure Erase Setting {ses}, of namespace {caps.nvme_nsid} on "
                 f"{caps.nvme_controller} ({' '.join(argv)})")


def _nvme_sanitize(disk: _Disk, caps: EraseCaps, method: str, runner: Runner, progress: Progress,
                   steps: list[str]) -> None:
    ctrl = caps.nvme_controller or ""
    kind = method.removeprefix("nvme-sanitize-")
    state, _ = _sanitize_state(ctrl, runner)
    if state == 2:  # a sanitize interrupted by a power loss resumes by itself: wait for it
        steps.append(f"a sanitize was already in progress on {ctrl}: waited for it instead of starting one")
    else:
        argv = ["nvme", "sanitize", ctrl, f"--sanact={SANITIZE_ACTIONS[kind]}"]
        if kind == "overwrite":
            argv += ["--owpass=1", "--ovrpat=0"]  # OWPASS 0 would mean 16 passes
        _tool(runner, argv, f"NVMe Sanitize ({kind}) of {ctrl}")
        steps.append(f"NVMe Sanitize, {kind} erase, of {ctrl} ({' '.join(argv)})")
    deadline = time.monotonic() + SANITIZE_TIMEOUT
    reported = 0
    while True:
        state, fraction = _sanitize_state(ctrl, runner)
        done = int(disk.size * fraction) if state == 2 else disk.size
        if done > reported:
            progress(done - reported)
            reported = done
        if state in (1, 4):  # completed (4: completed without deallocation)
            return
        if state == 3:
            raise EraseError(f"NVMe Sanitize of {ctrl} failed: the controller stays in its sanitize "
                             "failure mode until a sanitize succeeds; run the erase again")
        if state != 2:
            raise EraseError(f"NVMe Sanitize of {ctrl}: the sanitize log shows no sanitize (status {state})")
        if time.monotonic() > deadline:
            raise EraseError(f"NVMe Sanitize of {ctrl} did not complete in {SANITIZE_TIMEOUT / 3600:.0f} h")
        time.sleep(SANITIZE_POLL)


def parse_sanitize_log(text: str) -> tuple[int, float]:
    """``nvme sanitize-log -o json`` -> (status, progress 0..1). Status (SSTAT bits 2:0): 0 never
    sanitized, 1 completed, 2 in progress, 3 failed, 4 completed without deallocation. The JSON's
    shape changed across nvme-cli versions (SSTAT as a number, or an object whose status reads
    "(1) ..."), so both are read."""
    doc = json.loads(text)
    log = next((v for v in doc.values() if isinstance(v, dict) and "sprog" in v), doc) \
        if isinstance(doc, dict) else None
    if not isinstance(log, dict) or "sprog" not in log:
        raise ValueError("nvme sanitize-log JSON has no sprog")
    sstat = log.get("sstat")
    if isinstance(sstat, int):
        status = sstat & 0x7
    elif isinstance(sstat, dict):
        texts = [v for v in (*sstat.values(), *sstat.keys()) if isinstance(v, str)]
        m = next((m for t in texts if (m := re.match(r"\((\d+)\)", t))), None)
        if m is None:
            raise ValueError("nvme sanitize-log JSON has no readable status")
        status = int(m.group(1))
    else:
        raise ValueError("nvme sanitize-log JSON has no sstat")
    return status, int(log["sprog"]) / 65536  # SPROG is a numerator over 65536 (NVMe base spec)


def _sanitize_state(ctrl: str, runner: Runner) -> tuple[int, float]:
    result = _tool(runner, ["nvme", "sanitize-log", ctrl, "-o", "json"],
                   f"reading the sanitize log of {ctrl}")
    try:
        return parse_sanitize_log(result.stdout)
    except (ValueError, json.JSONDecodeError) as exc:
        raise EraseError(f"reading the sanitize log of {ctrl}: {exc}") from None


def _ata_state(device: str, runner: Runner) -> AtaSecurity:
    result = runner(["hdparm", "-I", device], timeout=60)
    try:
        return parse_hdparm_identify(result.stdout)
    except ValueError:
        raise EraseError(f"hdparm -I {device} no longer identifies the drive: {result.why()}") from None


def _ata_erase(disk: _Disk, caps: EraseCaps, method: str, runner: Runner, steps: list[str],
               notes: list[str]) -> None:
    dev = disk.path
    hdparm = ["hdparm", "--user-master", "u"]
    state = _ata_state(dev, runner)
    if state.frozen:  # the plan saw it unfrozen; it must not have changed since
        raise EraseUnsupportedError(_frozen_remedy(dev))
    if state.enabled:
        # Most likely our own password, left by an erase that was interrupted (power loss).
        if state.locked:
            runner([*hdparm, "--security-unlock", ATA_PASSWORD, dev], timeout=60)
            state = _ata_state(dev, runner)
            if state.locked:
                raise EraseError(f"{dev} is locked with a security password that is not peagent's "
                                 f"temporary one ({ATA_PASSWORD!r}): unlock it with its password first")
        steps.append(f"{dev} already had a security password set (an interrupted erase?): using "
                     f"{ATA_PASSWORD!r}")
    else:
        runner([*hdparm, "--security-set-pass", ATA_PASSWORD, dev], timeout=60)
        state = _ata_state(dev, runner)
        if not state.enabled:  # hdparm exits 0 even when the drive aborts the command
            raise EraseError(f"{dev} refused the temporary security password (SECURITY SET PASSWORD "
                             "was aborted): the drive cannot be security-erased")
        steps.append(f"set the temporary user password {ATA_PASSWORD!r} on {dev}")
    flag = "--security-erase-enhanced" if method == "ata-enhanced" else "--security-erase"
    result = runner([*hdparm, flag, ATA_PASSWORD, dev], timeout=None)
    state = _ata_state(dev, runner)
    if state.enabled:  # a completed SECURITY ERASE UNIT clears the password; it is still set
        runner([*hdparm, "--security-disable", ATA_PASSWORD, dev], timeout=60)
        raise EraseError(f"ATA SECURITY ERASE UNIT of {dev} did not complete ({result.why()}); peagent "
                         f"tried to remove its temporary password again (if the drive stays locked: "
                         f"hdparm --user-master u --security-disable {ATA_PASSWORD} {dev})")
    if not result.ok:
        notes.append(f"hdparm reported a failure ({result.why()}) but the drive cleared the password, "
                     "as a completed erase does; the read-back decides")
    steps.append(f"ATA SECURITY ERASE UNIT{' (enhanced)' if method == 'ata-enhanced' else ''} of {dev} "
                 "(hdparm); the drive cleared the temporary password")


# --- verification --------------------------------------------------------------------------------


def _verify(disk: _Disk, spec: EraseSpec, expect: Expectation, zeroed: list[tuple[int, int]],
            samples: list[tuple[int, int]], before: dict[int, bytes], runner: Runner,
            notes: list[str]) -> list[str]:
    verified = []
    found = signatures(disk.path, runner)
    if found:
        raise EraseVerifyError(f"{spec.mode}: signatures remain on {disk.path} after the erase: "
                               f"{', '.join(found)}")
    verified.append(f"blkid -p and wipefs find no signature on {disk.path}")
    if disk.sys_dir is not None:
        left = partitions_of(disk.sys_dir)
        if left:
            raise EraseVerifyError(f"{spec.mode}: the kernel still lists partitions of {disk.path} "
                                   f"after the erase: {', '.join(p.node for p in left)}")
        verified.append("the kernel lists no partition")
    if zeroed:
        bad = nonzero_blocks(disk.path, zeroed)
        if bad:
            raise EraseVerifyError(f"{spec.mode}: {len(bad)} block(s) of the zeroed regions of {disk.path} "
                                   f"are not zero (first at byte {bad[0]})")
        verified.append(f"the {len(zeroed)} zeroed region(s) ({_human(sum(n for _, n in zeroed))}: MBR, "
                        "both GPT headers and tables, superblocks at the ends) read back as zeroes")
    total = _human(sum(n for _, n in samples))
    if expect.data == "zero":
        bad = nonzero_blocks(disk.path, samples)
        if bad:
            raise EraseVerifyError(f"{spec.mode}: {len(bad)} sampled 4 KiB block(s) of {disk.path} are "
                                   f"not zero after the erase (first at byte {bad[0]}); expected zeroes "
                                   f"because {expect.why}")
        verified.append(f"the samples ({total}: {spec.samples} blocks of 64 KiB spread over the disk, "
                        "the first and last MiB) read as zeroes")
    elif expect.data == "changed":
        same, held = unchanged_blocks(disk.path, samples, before)
        if not held:
            notes.append("no sampled block held data before the erase: the read-back could not show a change")
        if same:
            raise EraseVerifyError(f"{spec.mode}: {len(same)} of the {held} sampled 4 KiB blocks of "
                                   f"{disk.path} that held data still hold the same data after the "
                                   f"erase (first at byte {same[0]})")
        verified.append(f"every sampled 4 KiB block that held data before now reads differently ({held} "
                        f"blocks, of {total} sampled; {expect.why})")
    else:
        notes.append(f"data not verified: {expect.why}")
    return verified


def signatures(device: str, runner: Runner) -> list[str]:
    """Signatures that wipefs or ``blkid -p`` still find on ``device`` (empty: none)."""
    found = []
    result = _tool(runner, ["wipefs", "--json", device], f"listing signatures on {device}")
    if result.stdout.strip():
        try:
            rows = json.loads(result.stdout).get("signatures", [])
        except (json.JSONDecodeError, AttributeError):
            raise EraseError(f"wipefs --json {device} printed something unexpected") from None
        found += [f"{r.get('type')} at {r.get('offset')} (wipefs)" for r in rows]
    probe = runner(["blkid", "-p", "-o", "export", device], timeout=60)
    if probe.returncode == NOT_INSTALLED:
        raise EraseError("checking for signatures: blkid is not installed in this PE")
    if probe.returncode != 2:  # blkid: 2 means nothing was found
        values = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
        kind = values.get("TYPE") or values.get("PTTYPE")
        found.append(f"{kind} (blkid -p)" if kind else f"blkid -p status {probe.returncode}: "
                     f"{(probe.stderr or probe.stdout).strip() or 'ambivalent result'}")
    return found


def _read_regions(path: str, regions: list[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of every region, READ_CHUNK at a time, from the device rather than the page
    cache (O_DIRECT, into a page-aligned buffer), or buffered where O_DIRECT is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        direct = True
    except OSError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        direct = False
    buf = mmap.mmap(-1, READ_CHUNK)
    view = memoryview(buf)
    try:
        if not direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for offset, length in regions:
            pos = offset
            while pos < offset + length:
                n = min(READ_CHUNK, offset + length - pos)
                try:
                    got = os.preadv(fd, [view[:n]], pos)
                except OSError as exc:
                    if not (direct and exc.errno == errno.EINVAL):
                        raise EraseVerifyError(f"reading {path} back at byte {pos}: {exc.strerror}") from None
                    # O_DIRECT wants another alignment here: read through the (dropped) cache instead.
                    os.close(fd)
                    fd, direct = os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    continue
                if got != n:
                    raise EraseVerifyError(f"reading {path} back at byte {pos}: {got} of {n} bytes")
                yield pos, bytes(view[:n])
                pos += n
    finally:
        view.release()
        buf.close()
        os.close(fd)


def nonzero_blocks(path: str, regions: list[tuple[int, int]]) -> list[int]:
    """Offsets of the 4 KiB blocks in ``regions`` that are not all zero."""
    bad = []
    for offset, data in _read_regions(path, regions):
        if data != _ZEROS[:len(data)]:
            bad += [offset + i for i in range(0, len(data), CHECK_BLOCK)
                    if data[i:i + CHECK_BLOCK] != _ZEROS[:len(data[i:i + CHECK_BLOCK])]]
    return bad


def _fingerprint(path: str, regions: list[tuple[int, int]]) -> dict[int, bytes]:
    """offset -> digest of every 4 KiB block in ``regions`` that holds data (zero blocks omitted)."""
    prints = {}
    for offset, data in _read_regions(path, regions):
        for i in range(0, len(data), CHECK_BLOCK):
            block = data[i:i + CHECK_BLOCK]
            if block != _ZEROS[:len(block)]:
                prints[offset + i] = hashlib.blake2b(block, digest_size=16).digest()
    return prints


def unchanged_blocks(path: str, regions: list[tuple[int, int]],
                     before: dict[int, bytes]) -> tuple[list[int], int]:
    """Blocks that held data before (``before``, from :func:`_fingerprint`) and still hold the same
    data; and how many held data."""
    after = _fingerprint(path, regions)
    same = sorted(offset for offset, digest in before.items() if after.get(offset) == digest)
    return same, len(before)


def _human(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"
