"""Making filesystems on new partitions with the real mkfs tools, labelled as the layout says.

=====  ===========================================  ============  ==============================
fs     command                                      Debian        notes
=====  ===========================================  ============  ==============================
vfat   ``mkfs.vfat -F 32 [-n LABEL] DEV``           dosfstools    always FAT32 (what an ESP is)
ext4   ``mkfs.ext4 -F -q [-L LABEL] DEV``           e2fsprogs
xfs    ``mkfs.xfs -f -q [-L LABEL] DEV``            xfsprogs      300 MiB at least
swap   ``mkswap [-L LABEL] DEV``                    util-linux
ntfs   ``mkfs.ntfs --fast --quiet [-L LABEL] DEV``  ntfs-3g       quick format: no zeroing pass
none   nothing: the partition is left for an image or the OS to fill
=====  ===========================================  ============  ==============================

The force flags (``-F``, ``-f``) are there because a new partition may still hold the signature of
what was there before; the partition itself is new, so there is nothing to protect. A tool missing
from the PE, or failing, is a :class:`~peagent.errors.FilesystemError` naming the tool and its Debian
package, or quoting the tool's own error. :func:`check_tools` finds missing tools up front:
``peagent.disk.partition.apply_layout`` calls it before writing the partition table, so a layout
that asks for xfs on a PE without xfsprogs is refused before the disk is touched.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from peagent.disk.layout import LayoutPlan
from peagent.disk.tools import NOT_INSTALLED, Runner, run_tool
from peagent.errors import FilesystemError

MKFS_TIMEOUT = 1800  # seconds: ext4, xfs and quick ntfs take seconds even on large disks

# fs: (the tool, its Debian package)
TOOLS = {
    "vfat": ("mkfs.vfat", "dosfstools"),
    "ext4": ("mkfs.ext4", "e2fsprogs"),
    "xfs": ("mkfs.xfs", "xfsprogs"),
    "swap": ("mkswap", "util-linux"),
    "ntfs": ("mkfs.ntfs", "ntfs-3g"),
}


def mkfs_command(device: str, fs: str, label: str | None = None) -> list[str]:
    """The command that makes ``fs`` on ``device``."""
    if fs not in TOOLS:
        raise FilesystemError(f"cannot make a {fs!r} filesystem: peagent makes {', '.join(TOOLS)} (or none)")
    tool = TOOLS[fs][0]
    named = [] if label is None else ["-n" if fs == "vfat" else "-L", label]
    options = {
        "vfat": ["-F", "32"],
        "ext4": ["-F", "-q"],
        "xfs": ["-f", "-q"],
        "swap": [],
        "ntfs": ["--fast", "--quiet"],
    }[fs]
    return [tool, *options, *named, device]


def missing_tools(filesystems: Iterable[str]) -> list[str]:
    """The mkfs tools these filesystems need that this system lacks, each with its Debian package."""
    missing = []
    for fs in dict.fromkeys(filesystems):  # once each, in order
        if fs in TOOLS and shutil.which(TOOLS[fs][0]) is None:
            missing.append(f"{TOOLS[fs][0]} for {fs} (Debian package {TOOLS[fs][1]})")
    return missing


def check_tools(filesystems: Iterable[str]) -> None:
    missing = missing_tools(filesystems)
    if missing:
        raise FilesystemError(f"this PE lacks {', '.join(missing)}: add the package to "
                              "buildroot/pe-packages.list, or ask the layout for another filesystem")


def make_filesystem(device: str, fs: str, label: str | None = None, runner: Runner = run_tool) -> None:
    """Make ``fs`` (labelled ``label``) on ``device``; ``none`` does nothing."""
    if fs == "none":
        return
    argv = mkfs_command(device, fs, label)
    result = runner(argv, timeout=MKFS_TIMEOUT)
    if result.returncode == NOT_INSTALLED:
        raise FilesystemError(f"cannot make {fs} on {device}: {argv[0]} is not installed in this PE "
                              f"(Debian package {TOOLS[fs][1]})")
    if not result.ok:
        raise FilesystemError(f"making {fs} on {device} failed: {result.why()}")


def make_filesystems(plan: LayoutPlan, device: str, runner: Runner = run_tool) -> None:
    """Make every new partition's filesystem, after ``apply_layout`` wrote the table."""
    from peagent.disk.partition import partition_path  # here: partition imports this module

    for c in plan.created:
        make_filesystem(partition_path(device, c.number), c.spec.fs, c.spec.label, runner)
