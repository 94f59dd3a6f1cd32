"""Parsing efibootmgr's output, on listings shaped like those of real firmware (OVMF, a PC with
Windows and Debian, efibootmgr 18's extra lines)."""

from __future__ import annotations

import pytest

from peagent.boot.efivars import BootEntry, hexnum, parse_device_path, parse_efibootmgr
from peagent.errors import DeviceError

T = "\t"
OLD_ESP = "0b5f2c1e-4a43-4b8e-9c39-6a2fd1b8e0d1"
NEW_ESP = "7d9e43aa-1c55-4b0e-8f2d-3e1a5b6c7d8e"
OTHER_DISK_ESP = "c0ffee00-1234-4d2a-9a6b-0123456789ab"

# OVMF with nothing installed yet, booted from PXE (efibootmgr 17 -v, efivar 37).
OVMF_FRESH = f"""BootCurrent: 0002
Timeout: 0 seconds
BootOrder: 0001,0002,0000,0003
Boot0000* UiApp{T}FvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)
Boot0001* UEFI QEMU HARDDISK QM00001 {T}PciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0)N.....YM....R,Y.
Boot0002* UEFI PXEv4 (MAC:525400123456){T}PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)/IPv4(0.0.0.0,0,DHCP,0.0.0.0,0.0.0.0,0.0.0.0)N.....YM....R,Y.
Boot0003* EFI Internal Shell{T}FvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(7c04a583-9e3e-4f1c-ad65-e05268d0b4d1)
"""

# The same VM after a Debian install on this disk, and a Windows disk beside it.
OVMF_WITH_OS = f"""BootCurrent: 0002
Timeout: 3 seconds
BootOrder: 0004,0005,0001,0002,0000,0003
Boot0000* UiApp{T}FvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)
Boot0001* UEFI QEMU HARDDISK QM00001 {T}PciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0)N.....YM....R,Y.
Boot0002* UEFI PXEv4 (MAC:525400123456){T}PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)/IPv4(0.0.0.0,0,DHCP,0.0.0.0,0.0.0.0,0.0.0.0)N.....YM....R,Y.
Boot0003* EFI Internal Shell{T}FvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(7c04a583-9e3e-4f1c-ad65-e05268d0b4d1)
Boot0004* debian{T}HD(1,GPT,{OLD_ESP},0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)
Boot0005* Windows Boot Manager{T}HD(2,GPT,{OTHER_DISK_ESP.upper()},0x109000,0x32000)/File(\\EFI\\Microsoft\\Boot\\bootmgfw.efi)WINDOWS.........x...B.C.D.O.B.J.E.C.T.=.{{.9.d.e.a.8.6.2.c.-.5.c.d.d.-.4.e.7.0.}}...
"""


def test_ovmf_defaults():
    v = parse_efibootmgr(OVMF_FRESH)
    assert (v.current, v.next, v.order, v.timeout) == (2, None, (1, 2, 0, 3), 0)
    assert [(e.num, e.label, e.active, e.kind) for e in v.entries] == [
        (0, "UiApp", True, "firmware"),
        (1, "UEFI QEMU HARDDISK QM00001 ", True, "device"),
        (2, "UEFI PXEv4 (MAC:525400123456)", True, "network"),
        (3, "EFI Internal Shell", True, "firmware"),
    ]
    assert all(e.partuuid is None and e.loader is None for e in v.entries)
    assert v.entries[1].path == "PciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0)N.....YM....R,Y."


def test_disk_entries_give_partuuid_loader_and_partition():
    v = parse_efibootmgr(OVMF_WITH_OS)
    debian, windows = v.entry(4), v.entry(5)
    assert debian == BootEntry(4, "debian", True, OLD_ESP, "\\EFI\\debian\\shimx64.efi", 1,
                               f"HD(1,GPT,{OLD_ESP},0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)")
    # The optional data after File(...) (Windows' BCD object) is not part of the loader; GUIDs are lower-cased.
    assert (windows.partuuid, windows.loader, windows.partition) == (
        OTHER_DISK_ESP, "\\EFI\\Microsoft\\Boot\\bootmgfw.efi", 2)
    assert windows.kind == "disk"
    assert debian.describe() == f'Boot0004 "debian" on partition {OLD_ESP} \\EFI\\debian\\shimx64.efi'
    assert v.entry(9) is None


def test_inactive_entries_and_lowercase_numbers():
    text = (f"BootOrder: 000A,0001\nBoot0001  old install{T}HD(1,GPT,{OLD_ESP},0x800,0x100000)/File(\\EFI\\old\\grubx64.efi)\n"
            f"Boot000a* lower{T}HD(2,GPT,{NEW_ESP},0x800,0x1000)/File(\\EFI\\BOOT\\BOOTX64.EFI)\n")
    v = parse_efibootmgr(text)
    assert v.order == (10, 1)
    assert [(e.num, e.label, e.active) for e in v.entries] == [(1, "old install", False), (10, "lower", True)]
    assert v.entries[1].name == "Boot000A" and hexnum(10) == "000A"


def test_without_verbose_only_labels():
    v = parse_efibootmgr("BootCurrent: 0000\nBootOrder: 0000\nBoot0000* debian\nBoot0001  UEFI Shell\n")
    assert [(e.label, e.active, e.path, e.kind) for e in v.entries] == [("debian", True, "", "unknown"),
                                                                          ("UEFI Shell", False, "", "unknown")]


def test_no_bootorder_and_bootnext():
    v = parse_efibootmgr("BootNext: 0003\nBootCurrent: 0001\nNo BootOrder is set; firmware will attempt recovery\n")
    assert (v.next, v.current, v.order, v.entries) == (3, 1, (), ())


def test_efibootmgr_18_hex_dump_lines_and_shim_data_are_skipped():
    text = (f"BootCurrent: 0000\nTimeout: 1 seconds\nBootOrder: 0000\n"
            f"Boot0000* debian{T}HD(1,GPT,{NEW_ESP},0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi) File(.\\grubx64.efi)\n"
            "      dp: 04 01 2a 00 01 00 00 00 00 08 00 00 00 00 00 00 / 7f ff 04 00\n"
            "    data: 5c 00 67 00 72 00\n")
    v = parse_efibootmgr(text)
    assert len(v.entries) == 1
    assert (v.entries[0].partuuid, v.entries[0].loader) == (NEW_ESP, "\\EFI\\debian\\shimx64.efi")


@pytest.mark.parametrize(("path", "expected"), [
    # MBR disks: Linux's PARTUUID is the disk signature and the partition number in hex.
    ("HD(1,MBR,0x1234abcd,0x800,0x100000)/File(\\EFI\\BOOT\\BOOTX64.EFI)", ("1234abcd-01", 1, "\\EFI\\BOOT\\BOOTX64.EFI")),
    ("HD(12,MBR,0xabcd,0x800,0x100000)/File(\\EFI\\x\\grubx64.efi)", ("0000abcd-0c", 12, "\\EFI\\x\\grubx64.efi")),
    # Full device paths (efibootmgr -e 3, some firmware) still name the partition.
    (f"PciRoot(0x0)/Pci(0x17,0x0)/Sata(2,65535,0)/HD(1,GPT,{NEW_ESP},0x800,0x64000)/File(\\EFI\\fedora\\shim.efi)",
     (NEW_ESP, 1, "\\EFI\\fedora\\shim.efi")),
    # Newer efivar prints a file node as a bare path.
    (f"HD(1,GPT,{NEW_ESP},0x800,0x96000)/\\EFI\\ubuntu\\shimx64.efi", (NEW_ESP, 1, "\\EFI\\ubuntu\\shimx64.efi")),
    ("PciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0)", (None, None, None)),
])
def test_device_paths(path, expected):
    assert parse_device_path(path) == expected


def test_garbage_in_bootorder_is_an_error():
    with pytest.raises(DeviceError, match=r"expected boot entry numbers in hex \(0001\), found 'zz'"):
        parse_efibootmgr("BootOrder: 0001,zz\n")


def test_error_text_is_no_entry():
    # What efibootmgr prints (to stderr) on a BIOS machine is no boot entry.
    assert parse_efibootmgr("EFI variables are not supported on this system.\n").entries == ()
