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

The package, one job a module: ``spec`` reads the task's erase object; ``decide`` holds the pure
decisions (which secure method, what the data must read as, the plan's lines, which regions are
zeroed and sampled); ``run`` carries an erase out and reports it; ``wipe`` holds the host's own
erases (wipefs, BLKDISCARD, BLKZEROOUT), ``secure`` the drive's (NVMe format and sanitize, ATA
security erase), ``verify`` the read-back; ``device`` is the disk they all work on.
"""

from __future__ import annotations

from peagent.disk.erase.decide import (
    ATA_PASSWORD,
    Expectation,
    check_erase,
    choose_secure,
    expected_data,
    metadata_regions,
    progress_total,
    sample_positions,
    secure_methods,
)
from peagent.disk.erase.device import partitions_of
from peagent.disk.erase.run import EraseReport, erase
from peagent.disk.erase.secure import parse_sanitize_log
from peagent.disk.erase.spec import EraseSpec, parse_erase
from peagent.disk.erase.verify import signatures
from peagent.disk.erase.wipe import zero_range

__all__ = [
    "ATA_PASSWORD", "EraseReport", "EraseSpec", "Expectation", "check_erase", "choose_secure", "erase",
    "expected_data", "metadata_regions", "parse_erase", "parse_sanitize_log", "partitions_of",
    "progress_total", "sample_positions", "secure_methods", "signatures", "zero_range",
]
