"""The decisions of an erase: pure functions of the spec and the disk's probed capabilities.

Nothing here touches a disk, so a plan (and every test of one) can ask: which secure methods this
disk can do and why not (:func:`secure_methods`), which one ``auto`` takes (:func:`choose_secure`),
what the data must read as afterwards (:func:`expected_data`), whether the erase is possible at
all and what the plan prints (:func:`check_erase`), and which regions are zeroed
(:func:`metadata_regions`) and read back (:func:`sample_positions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peagent.disk.capabilities import EraseCaps
from peagent.disk.erase.spec import ATA_METHODS, AUTO_ORDER, NVME_METHODS, EraseSpec
from peagent.errors import EraseError, EraseUnsupportedError

MIB = 1 << 20
DISK_EDGE = 4 * MIB  # zeroed at both ends of the disk in metadata mode
PART_EDGE = 1 * MIB  # zeroed at both ends of each partition
SAMPLE_EDGE = 1 * MIB  # the first and last MiB are always sampled
SAMPLE_BLOCK = 64 << 10

ATA_PASSWORD = "peagent"  # temporary; documented so that a drive left locked can be unlocked by hand


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


def _human(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"
