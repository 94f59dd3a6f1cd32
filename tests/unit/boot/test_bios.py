"""BIOS checks on image files standing in for disks: boot code, 55AA, active partition, and the
BIOS boot partition of GPT disks (tables written by sfdisk, as the deploy writes them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from peagent.boot.bios import bios_check
from peagent.errors import DeviceError

BOOT_CODE = bytes([0xEB, 0x63, 0x90]) + b"\x10" * 100  # a jump, then anything non-zero
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def disk(path: Path, layout: str | None, *, code: bytes = b"", size: int = 8 << 20) -> str:
    path.write_bytes(b"\0" * size)
    if layout is not None:
        subprocess.run(["sfdisk", "-q", "--no-reread", str(path)], input=layout, text=True, check=True,
                       capture_output=True)
    if code:
        with path.open("r+b") as f:
            f.write(code)
    return str(path)


def test_blank_disk_has_no_boot_code_nor_signature(tmp_path):
    d = disk(tmp_path / "blank.img", None)
    assert bios_check(d) == [
        f"BIOS: no boot entry to set; the firmware boots {d} by running its first sector (MBR)",
        "WARNING: no boot code (the first 440 bytes are zero): the image has no BIOS boot loader, this disk will not boot on BIOS",
        "WARNING: no 55AA signature at byte 510 (found 0000): the firmware will not boot this disk",
    ]


def test_mbr_disk_with_boot_code_and_active_partition(tmp_path):
    d = disk(tmp_path / "mbr.img", "label: dos\nsize=4M, type=83, bootable\ntype=83\n", code=BOOT_CODE)
    assert bios_check(d)[1:] == [
        "boot code: present (the first 440 bytes are not all zero)",
        "signature 55AA: present",
        "MBR: partition 1 is active",
    ]


def test_mbr_disk_without_active_partition(tmp_path):
    d = disk(tmp_path / "mbr.img", "label: dos\ntype=83\n", code=BOOT_CODE)
    assert bios_check(d)[-1].startswith("WARNING: MBR without an active partition")


def test_gpt_with_bios_boot_partition(tmp_path):
    d = disk(tmp_path / "gpt.img", f"label: gpt\nsize=1M, type={BIOS_BOOT}\ntype={LINUX}\n", code=BOOT_CODE)
    assert bios_check(d)[1:] == [
        "boot code: present (the first 440 bytes are not all zero)",
        "signature 55AA: present",
        "GPT: BIOS boot partition 1 present (GRUB's core image lives there)",
    ]


def test_gpt_without_bios_boot_partition_is_a_warning(tmp_path):
    # A UEFI-only image: sfdisk's protective MBR has the signature but no boot code.
    d = disk(tmp_path / "uefi.img", f"label: gpt\nsize=2M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\ntype={LINUX}\n")
    lines = bios_check(d)
    assert lines[1].startswith("WARNING: no boot code")
    assert lines[2] == "signature 55AA: present"
    assert lines[3] == ("WARNING: GPT disk without a BIOS boot partition (type 21686148-6449-6e6f-744e-656564454649): "
                        "GRUB cannot boot it from BIOS; the image is probably UEFI-only")


def test_protective_mbr_with_damaged_gpt(tmp_path):
    d = disk(tmp_path / "gpt.img", f"label: gpt\ntype={LINUX}\n", code=BOOT_CODE)
    with open(d, "r+b") as f:
        f.seek(512)
        f.write(b"\0" * 512)
    assert bios_check(d)[-1].startswith("WARNING: protective MBR but no GPT header at LBA 1")


def test_unreadable_or_short_disk(tmp_path):
    with pytest.raises(DeviceError, match=r"cannot read the first sectors of .*/missing: No such file"):
        bios_check(str(tmp_path / "missing"))
    short = tmp_path / "short"
    short.write_bytes(b"\x55" * 100)
    with pytest.raises(DeviceError, match="expected a 512-byte first sector, found 100 bytes"):
        bios_check(str(short))
