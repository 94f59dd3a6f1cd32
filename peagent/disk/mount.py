"""Mounting a partition for the agent's own work, and always unmounting it again.

In-place imaging looks into the old OS (read-only, to learn which OS it is) and then works in its
filesystem (read-write: delete, apply, fstab). Each mount goes on a fresh directory under
``parent`` (in the PE: /run/peagent/mnt, in RAM) with ``nosuid,nodev``, so nothing on the old OS
is honoured as a device or a setuid program while the agent works there (making device nodes and
setting setuid bits still work: they are only not *used*). NTFS goes through
peagent.files.ntfs: ntfs-3g with the options that keep Windows metadata, and an unmount that
returns only once the driver has let the device go (wimlib's NTFS mode, next, needs it alone).
:func:`mounted` unmounts on the way out whatever happened inside; an unmount that fails is an
error, as a filesystem that is still mounted has not been flushed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from peagent.disk.tools import Runner, run_tool
from peagent.errors import FilesystemError
from peagent.files import ntfs

MOUNTABLE = ("ext4", "ext3", "ext2", "xfs", "btrfs", "ntfs", "vfat")


@contextlib.contextmanager
def mounted(device: str, fstype: str, *, readonly: bool, parent: Path | None = None,
            runner: Runner = run_tool) -> Iterator[Path]:
    """``device`` mounted on a new directory (yielded); unmounted and the directory removed after."""
    if fstype not in MOUNTABLE:
        raise FilesystemError(f"{device}: cannot mount a {fstype!r} filesystem (peagent mounts "
                              f"{', '.join(MOUNTABLE)})")
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    where = Path(tempfile.mkdtemp(prefix="peagent-mnt-", dir=parent))
    if fstype == "ntfs":
        try:
            with ntfs.mounted(device, where, readonly=readonly, runner=runner) as root:
                yield root
        finally:
            with contextlib.suppress(OSError):  # still a mount point if the unmount failed (that error wins)
                os.rmdir(where)
        return
    options = ",".join(["ro" if readonly else "rw", "nosuid", "nodev"])
    done = runner(["mount", "-t", fstype, "-o", options, device, str(where)], timeout=300)
    if not done.ok:
        os.rmdir(where)
        raise FilesystemError(f"cannot mount {device} ({fstype}, {'read-only' if readonly else 'read-write'}): "
                              f"{done.why()}")
    try:
        yield where
    except BaseException:
        _unmount(device, where, runner, failing=True)
        raise
    _unmount(device, where, runner, failing=False)


def _unmount(device: str, where: Path, runner: Runner, *, failing: bool) -> None:
    undone = runner(["umount", str(where)], timeout=600)  # writes back what is still cached
    if undone.ok:
        os.rmdir(where)
    elif not failing:  # else the error that brought us here is the one to report
        raise FilesystemError(f"cannot unmount {device} from {where}: {undone.why()}")
