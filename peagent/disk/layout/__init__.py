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
made nor kept.

The package: ``tables`` holds the facts a layout is checked against (table limits, roles, libparted's
flags), ``spec`` reads and checks the task's object, ``plan`` decides where everything goes.
"""

from __future__ import annotations

from peagent.disk.layout.plan import LayoutPlan, PlannedPartition, human, plan_layout, usable_area
from peagent.disk.layout.spec import Keep, LayoutSpec, NewPartition, Size, parse_layout
from peagent.disk.layout.tables import FLAG_TYPES, GPT_ENTRY_ARRAY, LIBPARTED_FLAGS, ROLES, GiB, MiB

__all__ = [
    "FLAG_TYPES", "GPT_ENTRY_ARRAY", "LIBPARTED_FLAGS", "ROLES", "GiB", "Keep", "LayoutPlan", "LayoutSpec",
    "MiB", "NewPartition", "PlannedPartition", "Size", "human", "parse_layout", "plan_layout", "usable_area",
]
