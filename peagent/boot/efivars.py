"""The firmware's boot entries, as ``efibootmgr -v`` shows them.

UEFI keeps its boot configuration in NVRAM variables. Each ``BootXXXX`` (four upper-case hex
digits) is a *load option*: an active flag, a label, and a device path that says where the loader
is; ``BootOrder`` lists entry numbers in the order the firmware tries them, ``BootNext`` names
one entry to try first on the next boot only (the firmware deletes it when it uses it), and
``BootCurrent`` is the entry this boot came from.

efibootmgr 17 (Debian bookworm) prints them like this (rhboot/efibootmgr src/efibootmgr.c,
``show_vars``: ``Boot%04X``, ``*`` or a space for the active flag, a space, the label; with
``-v`` a tab, the device path in efivar's text form, then the optional data as text with the
unprintable bytes as dots, which follows the path without a separator; ``\\t`` is the tab)::

    BootCurrent: 0001
    Timeout: 0 seconds
    BootOrder: 0003,0001,0000
    Boot0000* UiApp\\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-...)
    Boot0001* UEFI QEMU HARDDISK QM00001 \\tPciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0)N.....YM....R,Y.
    Boot0003* debian\\tHD(1,GPT,5d8a3c1e-...,0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)

Only disk entries made by an OS installer (or efibootmgr) point at a partition: ``HD(n,GPT,
<partition GUID>,start,size)`` followed by ``File(<path of the loader>)``. On MBR disks the HD
node carries the disk signature instead (``HD(1,MBR,0x1234abcd,...)``), which Linux shows as the
partition UUID ``1234abcd-01``. Firmware entries (FvVol/FvFile: setup, shell), network entries
(MAC/IPv4/IPv6/Uri) and the firmware's own "boot this device" entries (PciRoot/.../Ata, Sata,
NVMe without HD) name no partition; peagent.boot.plan never deletes those.

Newer efibootmgr (18) prints ``dp:``/``data:`` hex lines under each entry with ``-v``; they are
indented and skipped here. Newer efivar may print a file node as a bare ``\\EFI\\...`` path
instead of ``File(...)``: both are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from peagent.errors import DeviceError

_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)(.*)$")
_ORDER_NUM = re.compile(r"^[0-9A-Fa-f]{1,4}$")
_HD = re.compile(r"HD\((\d+),(GPT|MBR),([^,()]+),0x[0-9a-fA-F]+,0x[0-9a-fA-F]+\)")
_FILE = re.compile(r"(?:^|/)File\(([^)]*)\)")  # not FvFile(
_BARE_FILE = re.compile(r"\)/(\\[^\t/()]*?\.efi)", re.IGNORECASE)
_NETWORK = re.compile(r"(?:^|/)(?:MAC|IPv4|IPv6|Uri|iSCSI)\(")
_FIRMWARE = re.compile(r"^(?:FvVol|FvFile|Fv|MemoryMapped|VenHw|VenMedia)\(")


def hexnum(num: int) -> str:
    """An entry number as efibootmgr's options and the variable names spell it: 0001, 000A."""
    return f"{num:04X}"


@dataclass(frozen=True)
class BootEntry:
    """One ``BootXXXX`` load option.

    ``partuuid`` (lower case) and ``partition`` are set for entries that point at a partition,
    ``loader`` (``\\EFI\\debian\\shimx64.efi``) for those that name a file on it; ``path`` is the
    device path as efibootmgr printed it (empty without ``-v``).
    """

    num: int
    label: str
    active: bool
    partuuid: str | None = None
    loader: str | None = None
    partition: int | None = None
    path: str = ""

    @property
    def name(self) -> str:
        return f"Boot{hexnum(self.num)}"

    @property
    def kind(self) -> str:
        """disk (a partition), network (PXE/HTTP boot), firmware (setup, shell), device (the
        firmware's own entry for a whole device), or unknown (no device path shown)."""
        if self.partuuid:
            return "disk"
        if not self.path:
            return "unknown"
        if _NETWORK.search(self.path):
            return "network"
        if _FIRMWARE.match(self.path):
            return "firmware"
        return "device"

    def where(self) -> str:
        """The label and where the entry points: ``"debian" on partition <guid> \\EFI\\...``."""
        where = f" on partition {self.partuuid}" if self.partuuid else f" ({self.kind})"
        loader = f" {self.loader}" if self.loader else ""
        return f'"{self.label.strip()}"{where}{loader}'

    def describe(self) -> str:
        """``Boot0003 "debian" on partition ...``, for plans and status lines."""
        return f"{self.name} {self.where()}"


@dataclass(frozen=True)
class BootVars:
    """The boot state: ``BootCurrent``, ``BootNext``, ``BootOrder`` and the entries, in printed order."""

    current: int | None
    next: int | None
    order: tuple[int, ...]
    entries: tuple[BootEntry, ...]
    timeout: int | None = None

    def entry(self, num: int) -> BootEntry | None:
        return next((e for e in self.entries if e.num == num), None)


def parse_device_path(path: str) -> tuple[str | None, int | None, str | None]:
    """(partition UUID, partition number, loader) named by a device path's text; None where absent."""
    partuuid = partition = loader = None
    if hd := _HD.search(path):
        partition = int(hd.group(1))
        signature = hd.group(3).strip()
        if hd.group(2) == "GPT":
            partuuid = signature.lower()
        else:
            try:  # Linux's PARTUUID of an MBR partition: disk signature, partition number (libblkid)
                partuuid = f"{int(signature, 16):08x}-{partition:02x}"
            except ValueError:
                partuuid = None
    if file := _FILE.search(path):
        loader = file.group(1)
    elif bare := _BARE_FILE.search(path):
        loader = bare.group(1)
    return partuuid, partition, loader


def _parse_entry(line: str, match: re.Match[str]) -> BootEntry:
    rest = match.group(3)
    # After the flag ('*' or a space) efibootmgr prints one space; an inactive entry thus shows two.
    rest = rest[1:] if rest.startswith(" ") else rest
    if not match.group(2) and rest.startswith(" "):
        rest = rest[1:]
    label, _, path = rest.partition("\t")
    partuuid, partition, loader = parse_device_path(path)
    return BootEntry(int(match.group(1), 16), label, bool(match.group(2)), partuuid, loader, partition, path)


def _number(text: str, line: str) -> int:
    text = text.strip()
    if not _ORDER_NUM.match(text):
        raise DeviceError(f"efibootmgr printed {line!r}: expected boot entry numbers in hex (0001), found {text!r}")
    return int(text, 16)


def parse_efibootmgr(text: str) -> BootVars:
    """The boot state from efibootmgr's output (with or without ``-v``); lines it does not know
    (Timeout's friends, mirror settings, v18's indented hex dumps) are skipped."""
    current = boot_next = timeout = None
    order: tuple[int, ...] = ()
    entries: list[BootEntry] = []
    for line in text.splitlines():
        if not line.strip() or line[0].isspace():
            continue
        key, _, value = line.partition(":")
        if key == "BootCurrent":
            current = _number(value, line)
        elif key == "BootNext":
            boot_next = _number(value, line)
        elif key == "BootOrder":
            order = tuple(_number(n, line) for n in value.split(",") if n.strip())
        elif key == "Timeout":
            digits = re.match(r"\s*(\d+)", value)
            timeout = int(digits.group(1)) if digits else None
        elif match := _ENTRY.match(line):
            entries.append(_parse_entry(line, match))
    return BootVars(current, boot_next, order, tuple(entries), timeout)
