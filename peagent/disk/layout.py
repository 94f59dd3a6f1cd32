"""Partition layouts: the task's ``target.partitions``, and exactly where each partition goes.

A task describes the partitions it wants, not the commands to make them::

    "partitions": {
      "table": "gpt",                                  # gpt | msdos
      "keep": [{"number": 3}, {"label": "DATA"}],      # existing partitions left untouched
      "create": [
        {"role": "esp", "size": "512MiB", "fs": "vfat", "label": "ESP"},
        {"role": "msr", "size": "16MiB"},
        {"role": "linux-root", "size": "fill", "fs": "ext4", "label": "root", "name": "root"},
        {"role": "swap", "size": "4GiB"},
        {"type": "0fc63daf-8483-4772-8e79-3d69d8477de4", "size": "10%", "flags": ["hidden"]}
      ]
    }

:func:`parse_layout` reads it into a :class:`LayoutSpec` (a :class:`~peagent.errors.TaskError` names
the field, e.g. ``target.partitions.create[2].size``). :func:`plan_layout` then computes, from the
spec and the inventory's :class:`~peagent.inventory.Disk` alone, every partition's exact byte and
sector extent: a :class:`LayoutPlan` whose ``created``, ``kept`` and ``deleted`` say everything the
table will become, and whose :meth:`~LayoutPlan.render` lines are the printed plan. A layout that
cannot be laid out on this disk raises :class:`~peagent.errors.LayoutError` there, before anything is
written. ``peagent.disk.partition`` then applies the plan with pyparted, and
``peagent.disk.filesystem`` makes the filesystems.

Roles
-----
A partition's type is given by a ``role`` (or an explicit ``type``: a GUID on gpt, a type byte such
as ``"0x0c"`` on msdos). Each role is one GPT type GUID and, where one exists, one MBR type byte:

================  ====================================  =====  ======================================
role              GPT type GUID                          MBR    what
================  ====================================  =====  ======================================
esp               c12a7328-f81f-11d2-ba4b-00a0c93ec93b   0xef   EFI system partition (fs vfat)
bios-boot         21686148-6449-6e6f-744e-656564454649   -      BIOS boot (GRUB's core.img on GPT)
msr               e3c9e316-0b5c-4db8-817d-f92df00215ae   -      Microsoft reserved (no filesystem)
windows-data      ebd0a0a2-b9e5-4433-87c0-68b6b72699c7   0x07   Microsoft basic data (NTFS, FAT)
windows-recovery  de94bba4-06d1-4d40-a16a-bfd50179d6ac   0x27   Windows recovery environment
recovery          de94bba4-06d1-4d40-a16a-bfd50179d6ac   0x27   same as windows-recovery: the one
                                                                recovery type firmware and OSes know
linux-root        4f68bce3-e8cd-4db1-96e7-fbcaf984b709   0x83   root, x86-64 (Discoverable Partitions)
linux-data        0fc63daf-8483-4772-8e79-3d69d8477de4   0x83   Linux filesystem data
swap              0657fd6d-a4ab-43c4-84e5-0933c84b4f4f   0x82   Linux swap (fs swap)
home              933ac7e1-2eb4-4f13-b844-0e14e2aef915   0x83   /home (Discoverable Partitions)
================  ====================================  =====  ======================================

A role without an MBR byte is refused on an msdos table. ``fs`` defaults to vfat for esp, swap for
swap and none (no filesystem: an image or the OS fills it) otherwise.

Sizes
-----
``"512MiB"``, ``"20GiB"``, ``"1.5TiB"`` (binary units only, the result a whole number of MiB: decimal
MB/GB are refused rather than rounded), ``"25%"`` (a whole percentage of the disk's usable area,
rounded down to whole MiB; all percentages together at most 100) and ``"fill"`` (the rest; at most
one). The usable area starts at 1 MiB and ends, rounded down to whole MiB, before the GPT's backup
header and entry array (16 KiB + one sector) on gpt, or at the disk's end (at most 2^32 sectors,
what MBR entries can address: 2 TiB with 512-byte sectors) on msdos. Every new partition starts
and ends on a 1 MiB boundary. Filesystems have minimum sizes: vfat 33 MiB (FAT32 needs 65525
clusters; below that mkfs.fat only warns and firmware reads the result as FAT16), xfs 300 MiB,
ntfs 2 MiB.

Keeping partitions
------------------
With ``keep`` empty the table is made afresh: every existing partition is deleted. Otherwise the
existing table must be of the type ``table`` names, each ``keep`` entry must match exactly one
existing partition (by ``number``, filesystem ``label``, or ``uuid``: the filesystem UUID or the GPT
partition GUID), kept partitions stay exactly where they are with their number, type, name and
bytes, and every other partition is deleted. New partitions go into the free gaps around the kept
ones, in the order listed: each at the lowest address after the previous new partition where it
fits, so that the disk holds them in the listed order; the space a partition skips stays free.
``fill`` takes what its gap has left after the partitions listed after it that also go into that
gap. New partitions take the lowest partition numbers that are free, in the order listed (what
libparted does). On msdos only the 4 primary partitions exist here: logical partitions are neither
made nor kept. """

from __future__ import annotations

import itertools
import re
import uuid
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from peagent.errors import LayoutError, TaskError, describe
from peagent.inventory import Disk, Partition
from peagent.schema import Fields

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
ALIGN = MiB  # every new partition starts and ends on a 1 MiB boundary

TABLES = ("gpt", "msdos")
FILESYSTEMS = ("vfat", "ext4", "xfs", "swap", "ntfs", "none")
GPT_ENTRY_ARRAY = 128 * 128  # bytes: 128 entries of 128 bytes, after each of the two headers
GPT_MAX_PARTITIONS = 128
MSDOS_MAX_PRIMARY = 4
MSDOS_MAX_SECTORS = 1 << 32  # MBR entries hold 32-bit sector numbers
MSDOS_EXTENDED = (0x05, 0x0F, 0x85)

# The smallest partition each filesystem's mkfs makes properly (measured with bookworm's tools).
FS_MIN_SIZE = {"vfat": 33 * MiB, "xfs": 300 * MiB, "ntfs": 2 * MiB}

_DATA_FS = ("vfat", "ext4", "xfs", "ntfs", "none")


@dataclass(frozen=True)
class Role:
    name: str
    gpt: str  # type GUID, lower case
    mbr: str | None  # type byte as "0x83", None when the role has no MBR equivalent
    what: str
    default_fs: str = "none"
    filesystems: tuple[str, ...] = _DATA_FS


_RECOVERY = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"
ROLES: dict[str, Role] = {r.name: r for r in (
    Role("esp", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "0xef", "EFI system partition",
         "vfat", ("vfat", "none")),
    Role("bios-boot", "21686148-6449-6e6f-744e-656564454649", None, "BIOS boot partition",
         "none", ("none",)),
    Role("msr", "e3c9e316-0b5c-4db8-817d-f92df00215ae", None, "Microsoft reserved partition",
         "none", ("none",)),
    Role("windows-data", "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "0x07", "Microsoft basic data"),
    Role("windows-recovery", _RECOVERY, "0x27", "Windows recovery environment"),
    Role("recovery", _RECOVERY, "0x27", "recovery (as windows-recovery)"),
    Role("linux-root", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "0x83", "Linux root (x86-64)"),
    Role("linux-data", "0fc63daf-8483-4772-8e79-3d69d8477de4", "0x83", "Linux filesystem data"),
    Role("swap", "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "0x82", "Linux swap",
         "swap", ("swap", "none")),
    Role("home", "933ac7e1-2eb4-4f13-b844-0e14e2aef915", "0x83", "Linux /home"),
)}

# libparted's partition flags (pyparted 3.12's parted.partitionFlag, libparted 3.5), and what each
# does per table type. libparted implements most flags by rewriting the partition's type (on gpt
# "boot" *is* the ESP type GUID); only a few are bits beside the type. Since the type here comes
# from the role or type, a type-setting flag is accepted only when it agrees with that type (it
# changes nothing), and refused otherwise. tests/unit/disk/test_flags.py checks this table against
# pyparted itself. None: a bit beside the type; absent: libparted does not offer it on that table.
LIBPARTED_FLAGS = (
    "boot", "root", "swap", "hidden", "raid", "lvm", "lba", "hp-service", "palo", "prep", "msftres",
    "bios_grub", "atvrecv", "diag", "legacy_boot", "msftdata", "irst", "esp", "chromeos_kernel",
    "bls_boot", "linux-home",
)
FLAG_TYPES: dict[str, dict[str, str | None]] = {
    "gpt": {
        "hidden": None,  # attribute bit 0 ("required partition"), as libparted writes it
        "legacy_boot": None,  # attribute bit 2 ("legacy BIOS bootable")
        "boot": ROLES["esp"].gpt,
        "esp": ROLES["esp"].gpt,
        "swap": ROLES["swap"].gpt,
        "raid": "a19d880f-05fc-4d3b-a006-743f0f84911e",
        "lvm": "e6d6d379-f507-44c2-a23c-238f2a3df928",
        "hp-service": "e2a1e728-32e3-11d6-a682-7b03a0000000",
        "prep": "9e1a2d38-c612-4316-aa26-8b49521e5a8b",
        "msftres": ROLES["msr"].gpt,
        "bios_grub": ROLES["bios-boot"].gpt,
        "atvrecv": "5265636f-7665-11aa-aa11-00306543ecac",
        "diag": _RECOVERY,
        "msftdata": ROLES["windows-data"].gpt,
        "irst": "d3bfe2de-3daf-11df-ba40-e3a556d89593",
        "chromeos_kernel": "fe3a2a5d-4f32-41a7-b725-accc3285a309",
        "bls_boot": "bc13c2ff-59e6-4262-a352-b275fd6f7172",
        "linux-home": ROLES["home"].gpt,
    },
    "msdos": {
        "boot": None,  # the active bit
        "swap": "0x82",
        "raid": "0xfd",
        "lvm": "0x8e",
        "palo": "0xf0",
        "prep": "0x41",
        "msftres": "0x27",
        "diag": "0x12",
        "irst": "0x84",
        "esp": "0xef",
        "bls_boot": "0xea",
    },
}
# On msdos libparted's hidden and lba pick variants of a FAT/NTFS type byte (0x0b -> 0x1b, 0x0c):
# give that byte as "type" instead.
_MSDOS_TYPE_VARIANT_FLAGS = ("hidden", "lba")

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MBR_TYPE = re.compile(r"(0x)?([0-9a-fA-F]{1,2})")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(MiB|GiB|TiB)")
_PERCENT = re.compile(r"(\d+)\s*%")
_DECIMAL_SIZE = re.compile(r"\d+(?:\.\d+)?\s*([kKMGT]i?B?|[kKMGT]B)")
_SIZE_EXPECTED = 'a size: "512MiB", "20GiB", "1TiB" (binary units), "25%" of the disk, or "fill"'
_UNITS = {"MiB": MiB, "GiB": GiB, "TiB": TiB}


# --- the spec: what the task asks for ---------------------------------------------------------


@dataclass(frozen=True)
class Size:
    kind: str  # "bytes", "percent" or "fill"
    value: int = 0  # bytes, or a percentage
    text: str = ""  # as the task wrote it


@dataclass(frozen=True)
class Keep:
    index: int  # position in keep[], for messages
    key: str  # "number", "label" or "uuid"
    value: int | str

    def describe(self) -> str:
        return f"keep[{self.index}] ({self.key} {self.value!r})"

    def matches(self, p: Partition) -> bool:
        if self.key == "number":
            return p.number == self.value
        if self.key == "label":
            return p.label == self.value
        # Either the filesystem UUID (vfat's look like "1A2B-3C4D") or the GPT partition GUID.
        want = str(self.value).lower()
        return any(u is not None and u.lower() == want for u in (p.uuid, p.part_uuid))


@dataclass(frozen=True)
class NewPartition:
    index: int  # position in create[], for messages
    role: str | None
    type_id: str  # GPT type GUID (lower case) or MBR type byte ("0x83")
    size: Size
    fs: str = "none"
    label: str | None = None
    name: str | None = None
    flags: tuple[str, ...] = ()

    def describe(self) -> str:
        return self.role or f"type {self.type_id}"


@dataclass(frozen=True)
class LayoutSpec:
    table: str
    keep: tuple[Keep, ...] = ()
    create: tuple[NewPartition, ...] = ()


# --- the plan: where everything goes ----------------------------------------------------------


@dataclass(frozen=True)
class PlannedPartition:
    number: int
    start: int  # bytes
    size: int  # bytes
    sector_size: int
    spec: NewPartition

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def first_sector(self) -> int:
        return self.start // self.sector_size

    @property
    def sectors(self) -> int:
        return self.size // self.sector_size


@dataclass(frozen=True)
class LayoutPlan:
    disk_path: str
    disk_size: int
    sector_size: int
    table: str
    fresh: bool  # a new, empty table replaces whatever is there
    usable_start: int  # bytes: where new partitions may go
    usable_end: int
    created: tuple[PlannedPartition, ...]
    kept: tuple[Partition, ...]
    deleted: tuple[Partition, ...]

    def render(self) -> list[str]:
        how = "new" if self.fresh else "existing"
        lines = [f"{how} {self.table} partition table on {self.disk_path} ({human(self.disk_size)})"]
        lines += [f"delete {_existing(p)}" for p in self.deleted]
        lines += [f"keep {_existing(p)}" for p in self.kept]
        for c in self.created:
            s = c.spec
            words = [f"create {c.number}: {s.describe()} {human(c.size)}"]
            if s.fs != "none":
                words.append(s.fs)
            if s.label is not None:
                words.append(repr(s.label))
            if s.name is not None:
                words.append(f"name {s.name!r}")
            if s.flags:
                words.append(f"flags {','.join(s.flags)}")
            lines.append(" ".join(words) + f" at {human(c.start)}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "fresh": self.fresh,
            "sector_size": self.sector_size,
            "created": [
                {"number": c.number, "start": c.start, "size": c.size, "role": c.spec.role,
                 "type": c.spec.type_id, "fs": c.spec.fs, "label": c.spec.label, "name": c.spec.name,
                 "flags": list(c.spec.flags)}
                for c in self.created
            ],
            "kept": [{"number": p.number, "start": p.start, "size": p.size} for p in self.kept],
            "deleted": [{"number": p.number, "start": p.start, "size": p.size} for p in self.deleted],
        }


def human(n: int) -> str:
    """A size for people: exact in the largest unit that gives fewer than 10000 of it ("512 MiB",
    "4094 MiB"), else with one decimal ("59.5 GiB")."""
    units = (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10), ("bytes", 1))
    for unit, size in units:
        if n % size == 0 and n // size < 10000:
            return f"{n // size} {unit}"
    unit, size = next((u, s) for u, s in units if n >= s)
    return f"{n / size:.1f} {unit}"


def exact(n: int) -> str:
    """A size for error messages: for people, and in bytes."""
    return f"{human(n)} ({n} bytes)"


def _existing(p: Partition) -> str:
    what = p.fstype or "no filesystem"
    label = f" {p.label!r}" if p.label else ""
    return f"{p.number}: {what}{label} {human(p.size)} at {human(p.start)}"


# --- parsing ----------------------------------------------------------------------------------


def parse_layout(obj: object, field: str = "target.partitions") -> LayoutSpec:
    """Read a layout object; raise TaskError naming the first wrong field."""
    f = Fields(obj, field)
    table = f.get("table", str, "gpt or msdos")
    if table not in TABLES:
        raise TaskError(f.field("table"), "gpt or msdos", describe(table))
    keeps = f.get("keep", list, 'a list of partitions to keep, each {"number": N}, {"label": ...} or '
                  '{"uuid": ...}', [])
    creates = f.get("create", list, "a list of partitions to create", [])
    f.done()

    keep = tuple(_keep(item, f"{field}.keep[{i}]", i) for i, item in enumerate(keeps))
    create: list[NewPartition] = []
    fill_at: int | None = None
    boot_at: int | None = None
    percent = 0
    for i, item in enumerate(creates):
        where = f"{field}.create[{i}]"
        p = _new_partition(item, where, i, table)
        if p.size.kind == "fill":
            if fill_at is not None:
                raise TaskError(f"{where}.size", f'at most one "fill" partition (create[{fill_at}] '
                                "already takes the rest)", describe(p.size.text))
            fill_at = i
        if p.size.kind == "percent":
            percent += p.size.value
            if percent > 100:
                raise TaskError(f"{where}.size", f"percentages adding up to at most 100% (those before "
                                f"this one add up to {percent - p.size.value}%)", describe(p.size.text))
        if table == "msdos" and "boot" in p.flags:
            if boot_at is not None:
                raise TaskError(f"{where}.flags", f"the boot flag on one partition only (msdos has one "
                                f"active partition; create[{boot_at}] has it)", '"boot"')
            boot_at = i
        create.append(p)
    most = GPT_MAX_PARTITIONS if table == "gpt" else MSDOS_MAX_PRIMARY
    if len(create) > most:
        extra = " (logical partitions are not supported)" if table == "msdos" else ""
        raise TaskError(f"{field}.create", f"at most {most} partitions on {table}{extra}",
                        describe(creates))
    return LayoutSpec(table=table, keep=keep, create=tuple(create))


def _keep(obj: object, field: str, index: int) -> Keep:
    f = Fields(obj, field)
    number = f.get("number", int, "a partition number, 1 or more", None)
    label = f.get("label", str, "a filesystem label", None)
    fs_uuid = f.get("uuid", str, "a filesystem UUID or a GPT partition GUID", None)
    f.done()
    given = [(k, v) for k, v in (("number", number), ("label", label), ("uuid", fs_uuid)) if v is not None]
    if len(given) != 1:
        found = " and ".join(k for k, _ in given) if given else "none of them"
        raise TaskError(field, "exactly one of number, label or uuid", found)
    key, value = given[0]
    if key == "number" and value < 1:
        raise TaskError(f"{field}.number", "a partition number, 1 or more", describe(value))
    if key != "number" and not value:
        raise TaskError(f"{field}.{key}", f"a non-empty {key}", '""')
    return Keep(index=index, key=key, value=value)


def _new_partition(obj: object, field: str, index: int, table: str) -> NewPartition:
    f = Fields(obj, field)
    role_name = f.get("role", str, f"a role, one of {', '.join(ROLES)}", None)
    type_text = f.get("type", str, _type_expected(table), None)
    size_text = f.get("size", str, _SIZE_EXPECTED)
    fs = f.get("fs", str, f"a filesystem, one of {', '.join(FILESYSTEMS)}", None)
    label = f.get("label", str, "a filesystem label", None)
    name = f.get("name", str, "a GPT partition name", None)
    flags = f.get("flags", list, "a list of partition flags", [])
    f.done()

    role: Role | None = None
    if role_name is not None and type_text is not None:
        raise TaskError(field, "either role or type, not both", "both")
    if role_name is not None:
        role = ROLES.get(role_name)
        if role is None:
            raise TaskError(f"{field}.role", f"a role, one of {', '.join(ROLES)}", describe(role_name))
        if table == "msdos" and role.mbr is None:
            with_mbr = ", ".join(r.name for r in ROLES.values() if r.mbr)
            raise TaskError(f"{field}.role", f"a role that has an MBR type on an msdos table ({with_mbr})",
                            f'"{role_name}" (a GPT-only type, no MBR equivalent: use "table": "gpt")')
        type_id = role.gpt if table == "gpt" else str(role.mbr)
    elif type_text is not None:
        type_id = _type_id(type_text, table, f"{field}.type")
    else:
        raise TaskError(field, f"a role (one of {', '.join(ROLES)}) or a type", "neither")

    size = _size(size_text, f"{field}.size")

    allowed = role.filesystems if role else FILESYSTEMS
    if fs is None:
        fs = role.default_fs if role else "none"
    elif fs not in FILESYSTEMS:
        raise TaskError(f"{field}.fs", f"a filesystem, one of {', '.join(FILESYSTEMS)}", describe(fs))
    elif fs not in allowed:
        raise TaskError(f"{field}.fs", f"a filesystem for role {role_name}: {', '.join(allowed)}",
                        describe(fs) + (' (swap goes in "role": "swap")' if fs == "swap" else ""))

    if label is not None:
        _check_label(label, fs, f"{field}.label")
    if name is not None:
        if table != "gpt":
            raise TaskError(f"{field}.name", "no name: partition names exist on gpt only", describe(name))
        if not (1 <= len(name) <= 36 and all(" " <= c <= "~" for c in name)):
            # libparted converts names from the locale's charset: ASCII is what works everywhere.
            raise TaskError(f"{field}.name", "1 to 36 printable ASCII characters", describe(name))

    checked: list[str] = []
    for j, flag in enumerate(flags):
        if not isinstance(flag, str):
            raise TaskError(f"{field}.flags[{j}]", "a flag name", describe(flag))
        _check_flag(flag, table, type_id, f"{field}.flags[{j}]")
        if flag not in checked:
            checked.append(flag)
    return NewPartition(index=index, role=role_name, type_id=type_id, size=size, fs=fs, label=label,
                        name=name, flags=tuple(checked))


def _type_expected(table: str) -> str:
    if table == "gpt":
        return "a GPT type GUID like 0fc63daf-8483-4772-8e79-3d69d8477de4"
    return 'an MBR type byte like "0x83"'


def _type_id(text: str, table: str, field: str) -> str:
    if table == "gpt":
        if not _GUID.fullmatch(text) or int(uuid.UUID(text)) == 0:
            raise TaskError(field, _type_expected(table) + " (the table is gpt)", describe(text))
        return str(uuid.UUID(text))
    m = _MBR_TYPE.fullmatch(text)
    byte = int(m.group(2), 16) if m else 0
    if not m or byte == 0:
        raise TaskError(field, _type_expected(table) + " (the table is msdos)", describe(text))
    if byte in MSDOS_EXTENDED or byte == 0xEE:
        what = "an extended partition" if byte in MSDOS_EXTENDED else "GPT's protective partition"
        raise TaskError(field, "the type of a primary data partition", f"{describe(text)} ({what})")
    return f"0x{byte:02x}"


def _size(text: str, field: str) -> Size:
    if text == "fill":
        return Size("fill", 0, text)
    m = _PERCENT.fullmatch(text)
    if m:
        value = int(m.group(1))
        if not 1 <= value <= 100:
            raise TaskError(field, "a percentage from 1% to 100%", describe(text))
        return Size("percent", value, text)
    m = _SIZE.fullmatch(text)
    if m:
        n = Fraction(m.group(1)) * _UNITS[m.group(2)]
        if n <= 0 or n.denominator != 1 or int(n) % ALIGN:
            raise TaskError(field, "a whole number of MiB, at least 1MiB", describe(text))
        return Size("bytes", int(n), text)
    if _DECIMAL_SIZE.fullmatch(text):
        raise TaskError(field, _SIZE_EXPECTED, f"{describe(text)} (write binary units: MiB, GiB or TiB)")
    raise TaskError(field, _SIZE_EXPECTED, describe(text))


_VFAT_FORBIDDEN = set('"*+,./:;<=>?[\\]|')
_LABEL_RULES = {  # fs: (most bytes in UTF-8, or characters for ntfs; a description)
    "vfat": (11, "at most 11 ASCII characters, none of \" * + , . / : ; < = > ? [ \\ ] |"),
    "ext4": (16, "at most 16 bytes (UTF-8)"),
    "xfs": (12, "at most 12 bytes (UTF-8)"),
    "swap": (16, "at most 16 bytes (UTF-8)"),
    "ntfs": (32, "at most 32 characters"),
}


def _check_label(label: str, fs: str, field: str) -> None:
    if fs == "none":
        raise TaskError(field, "no label: a label belongs to a filesystem and fs is none", describe(label))
    most, rule = _LABEL_RULES[fs]
    if fs == "vfat":
        ok = len(label) <= most and all(" " <= c <= "~" and c not in _VFAT_FORBIDDEN for c in label)
    elif fs == "ntfs":
        ok = len(label) <= most
    else:
        ok = len(label.encode()) <= most
    if not label or not ok or any(ord(c) < 32 for c in label):
        raise TaskError(field, f"a label for {fs}: {rule}", describe(label))


def _check_flag(flag: str, table: str, type_id: str, field: str) -> None:
    offered = FLAG_TYPES[table]
    if flag not in offered:
        choices = ", ".join(offered)
        if flag in _MSDOS_TYPE_VARIANT_FLAGS and table == "msdos":
            found = (f'"{flag}" (on msdos libparted implements it as a variant of the type byte: give that '
                     'byte as "type", e.g. "0x0c" for FAT32 with LBA, "0x1c" for hidden FAT32)')
        elif flag in LIBPARTED_FLAGS:
            found = f'"{flag}" (libparted does not offer it on {table})'
        else:
            found = describe(flag)
        raise TaskError(field, f"a flag libparted offers on {table}: {choices}", found)
    implied = offered[flag]
    if implied is not None and implied != type_id:
        roles = [r.name for r in ROLES.values() if (r.gpt if table == "gpt" else r.mbr) == implied]
        instead = f'"role": "{roles[0]}"' if roles else f'"type": "{implied}"'
        beside = ", ".join(k for k, v in offered.items() if v is None)
        raise TaskError(field, f"a flag that leaves the partition's type {type_id} as it is on {table} "
                        f"({beside}, or one that means this type)",
                        f'"{flag}", which libparted implements as the type {implied} (use {instead})')


# --- planning ---------------------------------------------------------------------------------


def usable_area(table: str, disk_size: int, sector_size: int) -> tuple[int, int]:
    """Where new partitions may go, in bytes, 1 MiB aligned: after the table at the start, before
    the GPT's backup entries and header at the end (or before what MBR entries can address)."""
    if table == "gpt":
        end = disk_size - GPT_ENTRY_ARRAY - sector_size
    else:
        end = min(disk_size, MSDOS_MAX_SECTORS * sector_size)
    return ALIGN, _down(end)


def plan_layout(spec: LayoutSpec, disk: Disk) -> LayoutPlan:
    """Every partition's extent on this disk, or LayoutError saying why the layout does not fit."""
    sector = disk.logical_sector_size
    if sector <= 0 or ALIGN % sector:
        raise LayoutError(f"{disk.path}: logical sectors of {sector} bytes do not divide 1 MiB")
    start, end = usable_area(spec.table, disk.size, sector)
    if end - start < ALIGN:
        raise LayoutError(f"{disk.path} ({exact(disk.size)}) is too small for a {spec.table} partition "
                          "table with even one 1 MiB partition")
    fills = [p for p in spec.create if p.size.kind == "fill"]
    if len(fills) > 1:
        raise LayoutError(f"create[{fills[1].index}]: only one partition can fill the rest "
                          f"(create[{fills[0].index}] does)")
    percent = sum(p.size.value for p in spec.create if p.size.kind == "percent")
    if percent > 100:
        raise LayoutError(f"the percentages of the new partitions add up to {percent}%, more than 100%")

    kept = _kept(spec, disk) if spec.keep else ()
    deleted = tuple(p for p in disk.partitions if p not in kept)
    _check_kept(spec.table, kept, disk)
    numbers = _numbers(spec, kept)

    usable = end - start
    sizes: list[int | None] = []
    for p in spec.create:
        if p.size.kind == "fill":
            sizes.append(None)
            continue
        n = p.size.value if p.size.kind == "bytes" else _down(usable * p.size.value // 100)
        if n < ALIGN:
            raise LayoutError(f"create[{p.index}] ({p.describe()}, {p.size.text} of the usable "
                              f"{exact(usable)}) is less than 1 MiB")
        sizes.append(n)
    for p, n in zip(spec.create, sizes, strict=True):
        least = FS_MIN_SIZE.get(p.fs, 0)
        if n is not None and n < least:
            raise LayoutError(f"create[{p.index}] ({p.describe()}, {exact(n)}) is too small for {p.fs}: "
                              f"mkfs needs at least {exact(least)}")

    gaps = _gaps(kept, start, end)
    fill_min = max(ALIGN, FS_MIN_SIZE.get(fills[0].fs, 0)) if fills else 0
    need = sum(n for n in sizes if n is not None) + fill_min
    free = sum(b - a for a, b in gaps)
    if need > free:
        parts = ", ".join(f"create[{p.index}] {human(n) if n is not None else 'fill ' + human(fill_min)}"
                          for p, n in zip(spec.create, sizes, strict=True))
        where = (f"the free gaps around the kept partitions hold {exact(free)}" if kept else
                 f"the disk's usable area ({human(start)} to {human(end)}) holds {exact(free)}")
        raise LayoutError(f"the layout is larger than {disk.path} ({exact(disk.size)}): the new partitions "
                          f"need {exact(need)} ({parts}) but {where}")
    extents = _place(spec.create, sizes, fill_min, gaps, kept)

    created = tuple(
        PlannedPartition(number=num, start=a, size=n, sector_size=sector, spec=p)
        for p, num, (a, n) in zip(spec.create, numbers, extents, strict=True)
    )
    return LayoutPlan(disk_path=disk.path, disk_size=disk.size, sector_size=sector, table=spec.table,
                      fresh=not spec.keep, usable_start=start, usable_end=end, created=created,
                      kept=kept, deleted=deleted)


def _kept(spec: LayoutSpec, disk: Disk) -> tuple[Partition, ...]:
    found = {"dos": "msdos"}.get(disk.partition_table or "", disk.partition_table)
    if found != spec.table:
        raise LayoutError(f"keeping partitions needs the disk's {spec.table} table, but {disk.path} has "
                          f"{'a ' + str(found) + ' table' if found else 'no partition table'}: keep none "
                          "(the table is made afresh) or give the table type it has")
    existing = "; ".join(_existing(p) + (f" uuid {p.uuid}" if p.uuid else "") for p in disk.partitions)
    existing = existing or "none"
    chosen: dict[int, Keep] = {}
    for k in spec.keep:
        matching = [p for p in disk.partitions if k.matches(p)]
        if len(matching) != 1:
            how = "matches no partition" if not matching else \
                f"matches {len(matching)} partitions ({', '.join(str(p.number) for p in matching)})"
            raise LayoutError(f"{k.describe()} {how} on {disk.path}; its partitions: {existing}")
        p = matching[0]
        if p.number in chosen:
            raise LayoutError(f"{chosen[p.number].describe()} and {k.describe()} both match partition "
                              f"{p.number}; keep it once")
        chosen[p.number] = k
    return tuple(p for p in disk.partitions if p.number in chosen)


def _check_kept(table: str, kept: tuple[Partition, ...], disk: Disk) -> None:
    sector = disk.logical_sector_size
    if table == "gpt":
        entries = -(-GPT_ENTRY_ARRAY // sector) * sector
        low, high = 2 * sector + entries, disk.size - entries - sector
        what = "the gpt headers and entries, or lies past the end of the disk"
    else:
        low, high = sector, min(disk.size, MSDOS_MAX_SECTORS * sector)
        what = "the MBR, or lies past what msdos can address or the end of the disk"
    for p in kept:
        if table == "msdos" and (p.number > MSDOS_MAX_PRIMARY or _mbr_byte(p) in MSDOS_EXTENDED):
            kind = "a logical partition" if p.number > MSDOS_MAX_PRIMARY else "an extended partition"
            raise LayoutError(f"partition {p.number} is {kind}: only primary partitions can be kept on msdos")
        if p.start < low or p.start + p.size > high:
            span = f"{exact(p.start)} to {exact(p.start + p.size)}"
            raise LayoutError(f"kept partition {_existing(p)} ({span}) "
                              f"overlaps {what}: on this {exact(disk.size)} disk partitions must lie between "
                              f"byte {low} and byte {high}; it cannot be kept")
    ordered = sorted(kept, key=lambda p: p.start)
    for a, b in itertools.pairwise(ordered):
        if b.start < a.start + a.size:
            raise LayoutError(f"kept partitions {a.number} ({exact(a.start)} to {exact(a.start + a.size)}) "
                              f"and {b.number} ({exact(b.start)} to {exact(b.start + b.size)}) overlap")


def _mbr_byte(p: Partition) -> int | None:
    try:
        return int(p.type_guid or "", 16)
    except ValueError:
        return None


def _numbers(spec: LayoutSpec, kept: tuple[Partition, ...]) -> list[int]:
    """The lowest free numbers, in the order listed: what libparted gives new partitions."""
    used = {p.number for p in kept}
    most = GPT_MAX_PARTITIONS if spec.table == "gpt" else MSDOS_MAX_PRIMARY
    free = [n for n in range(1, most + 1) if n not in used]
    if len(spec.create) > len(free):
        extra = " (logical partitions are not supported)" if spec.table == "msdos" else ""
        raise LayoutError(f"{spec.table} holds at most {most} partitions{extra}: this layout keeps "
                          f"{len(kept)} and creates {len(spec.create)}")
    return free[: len(spec.create)]


def _gaps(kept: tuple[Partition, ...], start: int, end: int) -> list[tuple[int, int]]:
    """The free space around the kept partitions, each gap shrunk to whole MiB."""
    gaps = []
    cursor = start
    for p in sorted(kept, key=lambda p: p.start):
        a, b = _up(cursor), _down(min(p.start, end))
        if b - a >= ALIGN:
            gaps.append((a, b))
        cursor = max(cursor, p.start + p.size)
    a = _up(cursor)
    if end - a >= ALIGN:
        gaps.append((a, end))
    return gaps


def _place(create: tuple[NewPartition, ...], sizes: list[int | None], fill_min: int,
           gaps: list[tuple[int, int]], kept: tuple[Partition, ...]) -> list[tuple[int, int]]:
    """(start, size) of each new partition: in the order listed, each at the lowest address after
    the previous one where it fits; then the fill partition grows over what its gap has left."""
    extents: list[tuple[int, int]] = []
    where: list[int] = []  # gap index of each partition
    gap = 0
    pos = gaps[0][0] if gaps else 0
    for p, n in zip(create, sizes, strict=True):
        want = fill_min if n is None else n
        while gap < len(gaps) and pos + want > gaps[gap][1]:
            gap += 1
            pos = gaps[gap][0] if gap < len(gaps) else 0
        if gap == len(gaps):
            free = "; ".join(f"{human(a)} to {human(b)} ({exact(b - a)})" for a, b in gaps) or "none"
            bounds = ", ".join(f"{k.number} at {human(k.start)} to {human(k.start + k.size)}" for k in kept)
            what = "fill, at least " + exact(want) if n is None else exact(want)
            after = (f"the end of create[{p.index - 1}] ({human(extents[-1][0] + extents[-1][1])})"
                     if extents else "the start of the free space")
            raise LayoutError(f"create[{p.index}] ({p.describe()}, {what}) fits in no free gap from {after} "
                              "on: new partitions are laid out in the order listed. "
                              f"The free gaps are {free}; the kept partitions {bounds} split the free space")
        extents.append((pos, want))
        where.append(gap)
        pos += want
    fill = next((i for i, n in enumerate(sizes) if n is None), None)
    if fill is not None:
        g = where[fill]
        last = max(i for i in range(len(extents)) if where[i] == g)
        slack = gaps[g][1] - (extents[last][0] + extents[last][1])
        extents[fill] = (extents[fill][0], extents[fill][1] + slack)
        for i in range(fill + 1, last + 1):
            extents[i] = (extents[i][0] + slack, extents[i][1])
    return extents


def _down(n: int) -> int:
    return n // ALIGN * ALIGN


def _up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
