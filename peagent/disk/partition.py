"""Writing a planned partition table to a disk: pyparted places every partition exactly where the
:class:`~peagent.disk.layout.LayoutPlan` says, then the kernel and udev are brought up to date.

The steps, and why each is there:

1. **Check first.** The tools (sfdisk, wipefs, and the mkfs tools the plan needs) must exist, and the
   device must be the disk the plan was made for: same size and logical sector size, and, when
   partitions are kept, the same table type and the same partitions at the same sectors. Any
   difference is refused before anything is written (a :class:`~peagent.errors.PartitionError`).
2. **Build the table in memory** with pyparted: ``freshDisk`` for a new table, or ``newDisk`` (the
   existing table) minus every partition that is not kept. Kept partitions are never touched: not
   moved, not resized, their entries rewritten as they were. Each new partition is added with
   ``Constraint(exactGeom=...)``, so libparted places it at the planned sectors or fails; it must
   also get the planned number. GPT names and flags are set here.
3. **Write the table** (``commitToDevice``).
4. **Set each new partition's type** with ``sfdisk --part-type``. pyparted 3.12 over libparted 3.5
   (Debian bookworm) cannot set a GPT type GUID or an MBR type byte directly: ``Partition.type_uuid``
   and ``ped_partition_set_type_uuid`` arrived with parted 3.6, and libparted 3.5 only sets the types
   its flags and filesystem names stand for, so the x86-64 root GUID or a type given as a GUID would
   be out of reach. sfdisk (util-linux, already in the PE; sgdisk would add gdisk for nothing)
   rewrites only the type field of that entry, and ``--no-tell-kernel`` keeps it from re-reading the
   table: the kernel learns the table once, in the next step, when it is final.
5. **Tell the kernel** (``commitToOS``: libparted's BLKPG updates, which leave unchanged kept
   partitions alone), wait for udev (``udevadm settle``) and for each new partition's device node,
   and check that the kernel's view (sysfs start and size) is the plan's.
6. **Wipe stale signatures** (``wipefs --all``) inside each new partition, so that the remains of a
   deleted filesystem that happened to start at the same sector do not show through (blkid would
   report them, and mkfs tools may refuse). Only the new partitions' own device nodes are touched.

Filesystems are made afterwards (``peagent.disk.filesystem.make_filesystems``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from peagent.disk.filesystem import check_tools
from peagent.disk.layout import LayoutPlan, human
from peagent.disk.tools import NOT_INSTALLED, Runner, run_tool
from peagent.errors import PartitionError

NODE_TIMEOUT = 30.0  # seconds to wait for the kernel and udev to show a new partition
SETTLE_TIMEOUT = 60

# Tools the partitioning step needs, with the Debian package that holds each.
TOOLS = {"sfdisk": "fdisk", "wipefs": "util-linux"}


def partition_path(device: str, number: int) -> str:
    """The device node of partition ``number``: sda -> sda3, nvme0n1 / loop0 / mmcblk0 -> ...p3."""
    node = os.path.realpath(device)
    return f"{node}p{number}" if node[-1].isdigit() else f"{node}{number}"


def apply_layout(plan: LayoutPlan, device: str, runner: Runner = run_tool) -> None:
    """Write the plan's partition table to ``device`` (see the module docstring for the steps)."""
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise PartitionError(f"cannot partition {device}: this PE lacks {', '.join(missing)}")
    check_tools(c.spec.fs for c in plan.created)  # the mkfs tools too: refuse before writing

    import _ped
    import parted  # imported here so that planning and its tests need no libparted

    errors = tuple(getattr(_ped, n) for n in dir(_ped) if n.endswith("Exception"))
    try:
        # libparted caches devices by path, with the size they had when first seen: a disk that was
        # resized (or a loop device re-attached to another file) would keep its old size.
        parted.getDevice(device).removeFromCache()
        dev = parted.getDevice(device)
        _check_device(plan, device, dev.sectorSize, dev.length)
        disk = parted.freshDisk(dev, plan.table) if plan.fresh else _existing_table(plan, device, parted, dev)
        flags = {name: number for number, name in parted.partitionFlag.items()}
        for c in plan.created:
            geometry = parted.Geometry(dev, start=c.first_sector, length=c.sectors)
            part = parted.Partition(disk=disk, type=parted.PARTITION_NORMAL, geometry=geometry)
            disk.addPartition(part, parted.Constraint(exactGeom=geometry))
            got = (part.number, part.geometry.start, part.geometry.length)
            if got != (c.number, c.first_sector, c.sectors):
                raise PartitionError(f"libparted placed partition {c.number} ({c.spec.describe()}) as number "
                                     f"{got[0]} at sectors {got[1]}+{got[2]}, not as planned at "
                                     f"{c.first_sector}+{c.sectors}; nothing was written")
            if c.spec.name is not None:
                part.set_name(c.spec.name)
            for flag in c.spec.flags:
                part.setFlag(flags[flag])
        disk.commitToDevice()
    except errors as exc:
        raise PartitionError(f"libparted could not write the {plan.table} table on {device}: {exc}") from exc

    for c in plan.created:
        # sfdisk takes MBR type bytes as bare hex ("83"), GPT types as GUIDs.
        code = c.spec.type_id[2:] if plan.table == "msdos" else c.spec.type_id
        result = runner(["sfdisk", "--no-tell-kernel", "--quiet", "--part-type", device, str(c.number), code])
        if not result.ok:
            raise PartitionError(f"the table is written on {device}, but setting partition {c.number}'s type "
                                 f"to {c.spec.type_id} failed: {result.why()}")

    try:
        disk.commitToOS()
    except errors as exc:
        raise PartitionError(f"the table is written on {device}, but the kernel could not be told about it "
                             f"(is a partition of it in use?): {exc}") from exc
    _settle(runner)
    sysfs = Path("/sys/class/block")
    for c in plan.created:
        node = partition_path(device, c.number)
        _wait_for(node)
        kernel = sysfs / os.path.basename(node)
        start, size = _read_int(kernel / "start"), _read_int(kernel / "size")
        if (start * 512, size * 512) != (c.start, c.size):  # sysfs counts 512-byte units
            raise PartitionError(f"the kernel sees {node} at {human(start * 512)} ({size * 512} bytes long), "
                                 f"not as planned at {human(c.start)} ({c.size} bytes)")
        result = runner(["wipefs", "--all", "--quiet", node])
        if not result.ok:
            raise PartitionError(f"wiping old signatures in {node} failed: {result.why()}")


def _check_device(plan: LayoutPlan, device: str, sector_size: int, sectors: int) -> None:
    if (sector_size, sectors * sector_size) != (plan.sector_size, plan.disk_size):
        raise PartitionError(
            f"{device} is not the disk the layout was planned for: it has {sectors * sector_size} bytes in "
            f"{sector_size}-byte sectors, the plan {plan.disk_size} bytes in {plan.sector_size}-byte sectors "
            f"({plan.disk_path}); nothing was written")


def _existing_table(plan: LayoutPlan, device: str, parted: Any, dev: Any) -> Any:
    """The disk's table as it is, minus the partitions the plan deletes; refuses if it changed."""
    disk = parted.newDisk(dev)
    if disk.type != plan.table:
        raise PartitionError(f"{device} now has a {disk.type} table, but the plan keeps partitions of a "
                             f"{plan.table} table; nothing was written")
    sector = plan.sector_size
    found = {p.number: (p.geometry.start * sector, p.geometry.length * sector) for p in disk.partitions}
    planned = {p.number: (p.start, p.size) for p in plan.kept + plan.deleted}
    kept = {p.number for p in plan.kept}

    def differs(n: int) -> bool:
        if n not in found or n not in planned:
            return True
        # The kernel (so the inventory) shows an extended partition as 1 KiB long: for partitions
        # about to be deleted, where they start is enough to know them.
        return found[n] != planned[n] if n in kept else found[n][0] != planned[n][0]

    changed = sorted(n for n in set(found) | set(planned) if differs(n))
    if changed:
        raise PartitionError(f"the partitions of {device} changed since the layout was planned (partitions "
                             f"{', '.join(map(str, changed))} differ): nothing was written; plan again")
    # Highest numbers first: logical partitions go before the extended one that holds them.
    for p in sorted(disk.partitions, key=lambda p: p.number, reverse=True):
        if p.number not in kept:
            disk.deletePartition(p)
    return disk


def _settle(runner: Runner) -> None:
    # Without udev (some containers) the kernel's devtmpfs still makes the nodes: settle is then moot.
    result = runner(["udevadm", "settle", f"--timeout={SETTLE_TIMEOUT}"], timeout=SETTLE_TIMEOUT + 10)
    if not result.ok and result.returncode != NOT_INSTALLED:
        raise PartitionError(f"waiting for udev after partitioning failed: {result.why()}")


def _wait_for(node: str) -> None:
    deadline = time.monotonic() + NODE_TIMEOUT
    while not os.path.exists(node):
        if time.monotonic() > deadline:
            raise PartitionError(f"{node} did not appear within {NODE_TIMEOUT:.0f} s after writing the table")
        time.sleep(0.1)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return -1
