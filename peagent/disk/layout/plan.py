"""Where every partition goes on this disk: :func:`plan_layout`, from the spec and the inventory alone.

The usable area (:func:`usable_area`) lies between the table at the start and, on gpt, the backup
entries and header at the end. Kept partitions stay where they are and split it into free gaps;
new partitions go into those gaps in the order listed, each 1 MiB aligned, and ``fill`` grows over
what its gap has left. The result, a :class:`LayoutPlan`, is exact to the byte and the sector, and
prints itself (:meth:`LayoutPlan.render`); a layout that does not fit raises
:class:`~peagent.errors.LayoutError` naming the partition and the space there was.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from peagent.disk.layout.spec import Keep, LayoutSpec, NewPartition
from peagent.disk.layout.tables import (
    ALIGN,
    FS_MIN_SIZE,
    GPT_ENTRY_ARRAY,
    GPT_MAX_PARTITIONS,
    MSDOS_EXTENDED,
    MSDOS_MAX_PRIMARY,
    MSDOS_MAX_SECTORS,
    GiB,
    MiB,
    TiB,
)
from peagent.errors import LayoutError
from peagent.inventory import Disk, Partition


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
