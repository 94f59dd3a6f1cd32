"""BIOS (legacy) boot: nothing to set, only the disk's first sector to check.

A BIOS keeps no boot entries naming an OS: it reads the first sector (the MBR) of the first disk
in its own boot order into memory and jumps into it if its last two bytes are 55 AA. The MBR's
first 440 bytes are boot code (then a 4-byte disk signature, 2 reserved bytes, four 16-byte
partition entries, and the signature at 510). So after a BIOS deployment the agent can only check
that the image brought boot code along: all-zero boot code means the image was made for UEFI, or
written without its boot loader, and the machine will not boot it.

On a GPT disk the MBR is a "protective" one (one partition of type 0xEE); GRUB's boot code then
loads its core image from a *BIOS boot partition* (type 21686148-6449-6E6F-744E-656564454649,
"Hah!IdontNeedEFI"), without which GRUB cannot boot a GPT disk from BIOS. On an MBR disk the boot
code of Windows (and of some BIOSes) starts the *active* partition; none active is worth a line.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

from peagent.errors import DeviceError

SECTOR = 512
BOOT_CODE = 440
BIOS_BOOT_TYPE = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
_GPT_SIGNATURE = b"EFI PART"
_MAX_ENTRIES_BYTES = 1 << 20  # a GPT's entry array is 16 KiB in practice; refuse to read absurd sizes


def mbr_lines(disk: str, sector: bytes) -> tuple[list[str], bool]:
    """What the first sector says (lines), and whether it is a protective MBR (a GPT disk)."""
    lines = [f"BIOS: no boot entry to set; the firmware boots {disk} by running its first sector (MBR)"]
    if any(sector[:BOOT_CODE]):
        lines.append("boot code: present (the first 440 bytes are not all zero)")
    else:
        lines.append("WARNING: no boot code (the first 440 bytes are zero): the image has no BIOS boot loader, "
                     "this disk will not boot on BIOS")
    if sector[510:512] == b"\x55\xaa":
        lines.append("signature 55AA: present")
    else:
        lines.append(f"WARNING: no 55AA signature at byte 510 (found {sector[510:512].hex().upper() or 'nothing'}): "
                     "the firmware will not boot this disk")
        return lines, False
    entries = [sector[446 + 16 * i: 462 + 16 * i] for i in range(4)]
    protective = any(e[4] == 0xEE for e in entries)
    if not protective:
        active = [i + 1 for i, e in enumerate(entries) if e[0] == 0x80]
        used = [e for e in entries if e[4] != 0]
        if active:
            lines.append(f"MBR: partition {active[0]} is active")
        elif used:
            lines.append("WARNING: MBR without an active partition: Windows' boot code (and some BIOSes) "
                         "need one")
    return lines, protective


def gpt_entries_location(header: bytes) -> tuple[int, int, int] | None:
    """(first LBA, number, size) of the partition entry array from a GPT header; None if not one."""
    if header[:8] != _GPT_SIGNATURE or len(header) < 92:
        return None
    lba, = struct.unpack_from("<Q", header, 72)
    count, size = struct.unpack_from("<II", header, 80)
    if size < 128 or count * size > _MAX_ENTRIES_BYTES:
        return None
    return lba, count, size


def gpt_type_lines(entries: bytes, count: int, size: int) -> list[str]:
    """The line about the BIOS boot partition, from the GPT's entry array."""
    for i in range(count):
        raw = entries[i * size: i * size + 16]
        if len(raw) < 16:
            break
        if uuid.UUID(bytes_le=raw) == BIOS_BOOT_TYPE:
            return [f"GPT: BIOS boot partition {i + 1} present (GRUB's core image lives there)"]
    return [f"WARNING: GPT disk without a BIOS boot partition (type {BIOS_BOOT_TYPE}): GRUB cannot boot "
            "it from BIOS; the image is probably UEFI-only"]


def bios_check(disk: str) -> list[str]:
    """Lines about whether ``disk`` (a device or an image file) looks BIOS-bootable; WARNING lines
    say what will not boot. Raises DeviceError if the disk cannot be read."""
    try:
        with Path(disk).open("rb") as f:
            sector = f.read(SECTOR)
            if len(sector) < SECTOR:
                raise DeviceError(f"{disk}: expected a 512-byte first sector, found {len(sector)} bytes")
            lines, protective = mbr_lines(disk, sector)
            if not protective:
                return lines
            for block in (SECTOR, 4096):  # the GPT header is at LBA 1: 512 or 4096 bytes in
                f.seek(block)
                found = gpt_entries_location(f.read(block))
                if found is not None:
                    lba, count, size = found
                    f.seek(lba * block)
                    return [*lines, *gpt_type_lines(f.read(count * size), count, size)]
    except OSError as exc:
        raise DeviceError(f"cannot read the first sectors of {disk}: {exc.strerror or exc}") from exc
    return [*lines, "WARNING: protective MBR but no GPT header at LBA 1: the partition table is damaged"]
