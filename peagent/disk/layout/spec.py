"""The task's ``target.partitions``, read and checked field by field: :func:`parse_layout`.

A :class:`LayoutSpec` holds the table type, the partitions to keep (:class:`Keep`: by number,
label or UUID) and those to create (:class:`NewPartition`: type, :class:`Size`, filesystem, label,
name, flags). Everything that can be checked without the disk is checked here, so a
:class:`~peagent.errors.TaskError` names the field (``target.partitions.create[2].size``); what
depends on the disk (does it fit, which partitions exist) is :mod:`~peagent.disk.layout.plan`'s.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from fractions import Fraction

from peagent.disk.layout.tables import (
    _MSDOS_TYPE_VARIANT_FLAGS,
    ALIGN,
    FILESYSTEMS,
    FLAG_TYPES,
    GPT_MAX_PARTITIONS,
    LIBPARTED_FLAGS,
    MSDOS_EXTENDED,
    MSDOS_MAX_PRIMARY,
    ROLES,
    TABLES,
    GiB,
    MiB,
    Role,
    TiB,
)
from peagent.errors import TaskError, describe
from peagent.inventory import Partition
from peagent.schema import Fields

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MBR_TYPE = re.compile(r"(0x)?([0-9a-fA-F]{1,2})")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(MiB|GiB|TiB)")
_PERCENT = re.compile(r"(\d+)\s*%")
_DECIMAL_SIZE = re.compile(r"\d+(?:\.\d+)?\s*([kKMGT]i?B?|[kKMGT]B)")
_SIZE_EXPECTED = 'a size: "512MiB", "20GiB", "1TiB" (binary units), "25%" of the disk, or "fill"'
_UNITS = {"MiB": MiB, "GiB": GiB, "TiB": TiB}


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

    keep = tuple(parse_partition_ref(item, f"{field}.keep[{i}]", i) for i, item in enumerate(keeps))
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


def parse_partition_ref(obj: object, field: str, index: int) -> Keep:
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


def parse_bytes(text: str, field: str) -> int:
    """A size in binary units ("256MiB", "1GiB"), in bytes; TaskError naming ``field`` otherwise."""
    size = _size(text, field)
    if size.kind != "bytes":
        raise TaskError(field, 'a size in binary units, like "256MiB" or "1GiB"', describe(text))
    return size.value


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

