"""The disk being erased: what it is, holding it exclusively, the tools run on it, and the kernel.

:func:`_inspect` finds its size and the partitions the kernel lists (:func:`partitions_of`);
:func:`_claim` refuses it while anything uses it; :func:`_open_rw` opens it for writing, still
exclusively; :func:`_tool` runs a tool and turns its failure into an EraseError; after an erase
:func:`_drop_cache` and :func:`_reread` make the page cache, the kernel and udev forget what the
disk held. A regular file stands in for a disk in tests: it has no partitions and no kernel state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from peagent.disk.tools import NOT_INSTALLED, Runner, ToolResult
from peagent.errors import EraseError

REREAD_TRIES = 10

# <linux/fs.h>: _IO(0x12, n); these numbers are the same on every architecture Linux runs the PE on.
BLKRRPART = 0x125F
BLKFLSBUF = 0x1261

Progress = Callable[[int], None]  # called with the bytes done since the previous call


def _no_progress(n: int) -> None:
    pass


@dataclass(frozen=True)
class _Part:
    node: str
    start: int
    size: int


@dataclass
class _Disk:
    path: str
    size: int
    block: bool
    sys_dir: Path | None
    partitions: list[_Part] = field(default_factory=list)


def _inspect(device: str) -> _Disk:
    try:
        st = os.stat(device)
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise EraseError(f"cannot open {device}: {exc.strerror}") from None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    if stat.S_ISBLK(st.st_mode):
        sys_dir = Path("/sys/class/block", os.path.basename(os.path.realpath(device)))
        return _Disk(device, size, True, sys_dir, partitions_of(sys_dir))
    if stat.S_ISREG(st.st_mode):
        return _Disk(device, size, False, None)
    raise EraseError(f"{device} is neither a block device nor a file")


def partitions_of(sys_dir: Path) -> list[_Part]:
    """The partitions the kernel lists for a disk (its sysfs directory), in bytes."""
    parts = []
    for entry in sorted(sys_dir.iterdir()) if sys_dir.is_dir() else []:
        if (entry / "partition").is_file():
            start = int((entry / "start").read_text()) * 512  # sysfs counts 512-byte sectors
            size = int((entry / "size").read_text()) * 512
            parts.append(_Part(f"/dev/{entry.name}", start, size))
    return parts


def _claim(disk: _Disk) -> None:
    """Refuse a disk that anything uses: O_EXCL fails on a mounted, swapped-on or held device."""
    if not disk.block:
        return
    # Partitions first: with one mounted the whole disk is busy too, and the partition is the news.
    for path in [*(p.node for p in disk.partitions), disk.path]:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise EraseError(f"{path} is in use (mounted, swap, or held by LVM, MD or dm-crypt): "
                                 f"{disk.path} is not erased; unmount or stop what holds it") from None
            raise EraseError(f"cannot open {path}: {exc.strerror}") from None


@contextlib.contextmanager
def _open_rw(disk: _Disk) -> Iterator[int]:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if disk.block else 0)
    try:
        fd = os.open(disk.path, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise EraseError(f"{disk.path} became busy (something opened it exclusively)") from None
        raise EraseError(f"cannot open {disk.path} for writing: {exc.strerror}") from None
    try:
        yield fd
        os.fsync(fd)
    finally:
        os.close(fd)


def _tool(runner: Runner, argv: list[str], what: str, timeout: float | None = 300) -> ToolResult:
    result = runner(argv, timeout=timeout)
    if result.returncode == NOT_INSTALLED:
        raise EraseError(f"{what}: {argv[0]} is not installed in this PE")
    if not result.ok:
        raise EraseError(f"{what}: {result.why()}")
    return result


def _drop_cache(fd: int) -> None:
    # The page cache may still hold what the disk held before a tool erased it behind its back.
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, BLKFLSBUF)


def _reread(fd: int, disk: _Disk, runner: Runner, steps: list[str], notes: list[str]) -> None:
    """BLKRRPART, so that the kernel drops the old partitions and udev sees a blank disk."""
    if not disk.block:
        return
    for _ in range(REREAD_TRIES):
        try:
            fcntl.ioctl(fd, BLKRRPART)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # e.g. a loop device without partition scanning
                notes.append(f"the kernel does not scan partitions on {disk.path} (BLKRRPART refused)")
                return
            if exc.errno != errno.EBUSY:
                raise EraseError(f"re-reading the partition table of {disk.path}: {exc.strerror}") from None
            # A partition is open: usually udev probing it after our writes. Wait, then retry.
            _settle(runner)
            time.sleep(0.5)
            continue
        _settle(runner)
        steps.append(f"re-read the partition table of {disk.path} (BLKRRPART) and waited for udev")
        return
    raise EraseError(f"the kernel could not re-read the partition table of {disk.path}: a partition "
                     "stayed open (busy)")


def _settle(runner: Runner) -> None:
    runner(["udevadm", "settle", "--timeout=30"], timeout=60)  # absent or failing: nothing to wait for
