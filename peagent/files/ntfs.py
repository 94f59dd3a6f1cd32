"""NTFS volumes from the PE: ntfs-3g mounts, and the checks before wimlib writes a volume directly.

Linux reaches an NTFS volume in two ways, both from the ntfs-3g project (Debian package ``ntfs-3g``):

* The **ntfs-3g FUSE driver** mounts it as a directory (:func:`mounted`). Ordinary file operations then
  work, and a rename or a delete keeps the Windows metadata of what it does not touch: a renamed file
  keeps its security descriptor, named streams, attributes, object id and reparse point (a rename
  rewrites a directory entry, not the file). What the driver *creates* gets its defaults instead: a
  security descriptor granting Everyone full control, no short (8.3) name, and a symlink stored as an
  Interix special file that Windows does not follow. Renaming also drops the short name of the renamed
  entry (the driver writes the new name in the POSIX namespace only); :func:`rename` sets it again.
  The metadata is reachable as extended attributes: ``system.ntfs_acl`` (the security descriptor),
  ``system.ntfs_dos_name``, ``system.ntfs_reparse_data``, ``system.ntfs_object_id``,
  ``system.ntfs_attrib``, and each named stream as ``user.NAME`` (``streams_interface=xattr``).
* **libntfs-3g** on the unmounted device, which is what wimlib's NTFS mode does
  (peagent.files.wim, ``wimapply WIM 1 /dev/sda3``): it writes every piece of Windows metadata the
  image holds, but only onto a volume whose root holds none of the image's top-level names (a clash
  stops it half way with "File exists"), and it does not check that nobody else has the volume open.

A volume open by two writers is corrupted, so :func:`check_unused` refuses a device that anyone holds
open exclusively (the ntfs-3g driver does, for as long as it runs; so does the kernel for a mount),
naming its mount points; :func:`unmount` waits until the driver has really let go of the device, and
:func:`check_fresh` lists the clashing names before wimlib writes anything. docs/wim.md has the measured
trade-off between the two ways and which one in-place imaging uses.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from peagent.disk.tools import NOT_INSTALLED, Runner, run_tool
from peagent.errors import FilesystemError

PACKAGE = "ntfs-3g"  # the Debian package of ntfs-3g, ntfs-3g.probe, ntfsls
UMOUNT_SETTLE = 10.0  # seconds to wait for the driver to close the device after umount

# ntfs-3g's and ntfs-3g.probe's exit statuses (ntfs-3g.probe(8)), with what to do about each.
MOUNT_FAILURES: dict[int, str] = {
    12: "it holds no valid NTFS filesystem",
    13: "its NTFS is inconsistent (or a disk or driver fault): run chkdsk /f on it from Windows",
    14: "Windows is hibernated on it (or shut down with Fast Startup): boot Windows and shut it down fully "
        "(shutdown /s /t 0), or let the task discard the hibernation file",
    15: "it was not cleanly unmounted: boot Windows and shut it down, or run chkdsk /f on it",
    16: "it is already open (mounted, or in use by another program)",
    17: "it is part of a SoftRAID/FakeRAID set that is not set up",
    19: "not enough privilege (peagent must run as root)",
}


def mount_options(*, readonly: bool = False, remove_hiberfile: bool = False) -> str:
    """ntfs-3g's ``-o`` options.

    ``streams_interface=xattr`` (the default, spelt out) shows named streams as ``user.*`` extended
    attributes; ``windows_names`` refuses to create a name Windows could not open (``a:b``, ``CON``,
    a trailing dot); no ``permissions`` or user mapping, so a chmod or chown cannot rewrite a kept
    file's security descriptor.
    """
    options = ["ro" if readonly else "rw", "streams_interface=xattr", "windows_names"]
    if remove_hiberfile:
        options.append("remove_hiberfile")  # discards a hibernated Windows session: the task must ask
    return ",".join(options)


def mount_command(device: str, mountpoint: Path, *, readonly: bool = False,
                  remove_hiberfile: bool = False) -> list[str]:
    return ["ntfs-3g", "-o", mount_options(readonly=readonly, remove_hiberfile=remove_hiberfile), device,
            str(mountpoint)]


def _failure(device: str, result_code: int, why: str) -> str:
    reason = MOUNT_FAILURES.get(result_code)
    return f"{device}: {reason} ({why})" if reason else f"{device}: {why}"


def mount(device: str, mountpoint: Path, *, readonly: bool = False, remove_hiberfile: bool = False,
          runner: Runner = run_tool) -> None:
    """Mount ``device`` on the existing directory ``mountpoint`` with the ntfs-3g driver."""
    check_unused(device)
    argv = mount_command(device, mountpoint, readonly=readonly, remove_hiberfile=remove_hiberfile)
    result = runner(argv, timeout=120)
    if result.returncode == NOT_INSTALLED:
        raise FilesystemError(f"cannot mount the NTFS volume {device}: ntfs-3g is not installed in this PE "
                              f"(Debian package {PACKAGE})")
    if not result.ok:
        raise FilesystemError("cannot mount the NTFS volume " + _failure(device, result.returncode, result.why()))


def unmount(mountpoint: Path, device: str, *, runner: Runner = run_tool, settle: float = UMOUNT_SETTLE) -> None:
    """Unmount ``mountpoint`` and wait until the driver has closed ``device``: only then may another
    writer (wimlib's NTFS mode) open the volume."""
    result = runner(["umount", str(mountpoint)], timeout=300)
    if not result.ok:
        raise FilesystemError(f"cannot unmount {mountpoint} ({device}): {result.why()}; close what uses it "
                              f"(fuser -vm {mountpoint}) and unmount it")
    deadline = time.monotonic() + settle
    while in_use(device):
        if time.monotonic() > deadline:
            raise FilesystemError(f"{device} is still open {settle:.0f} s after unmounting {mountpoint}: the "
                                  "ntfs-3g driver did not exit; nothing may write the volume until it does")
        time.sleep(0.1)


@contextmanager
def mounted(device: str, mountpoint: Path, *, readonly: bool = False, remove_hiberfile: bool = False,
            runner: Runner = run_tool) -> Iterator[Path]:
    """``with mounted(dev, dir) as root:`` the volume's root while the block runs, unmounted after it."""
    mount(device, mountpoint, readonly=readonly, remove_hiberfile=remove_hiberfile, runner=runner)
    try:
        yield mountpoint
    finally:
        unmount(mountpoint, device, runner=runner)


# --- who holds the device --------------------------------------------------------------------------


def in_use(device: str) -> bool:
    """Whether something holds ``device`` open exclusively: a mount, the ntfs-3g driver, a RAID, ..."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return True
        raise FilesystemError(f"cannot open {device}: {exc.strerror}") from exc
    os.close(fd)
    return False


def _unescape(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountpoints_of(major: int, minor: int, mountinfo: str) -> list[str]:
    """The mount points of the device ``major:minor`` in a /proc/self/mountinfo text."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] == f"{major}:{minor}":
            found.append(_unescape(fields[4]))
    return found


def check_unused(device: str) -> None:
    """FilesystemError unless ``device`` is a block device that nothing holds open exclusively."""
    try:
        st = os.stat(device)
    except OSError as exc:
        raise FilesystemError(f"{device}: {exc.strerror}") from exc
    if not stat.S_ISBLK(st.st_mode):
        raise FilesystemError(f"{device} is not a block device: an NTFS volume is written on its partition "
                              "(say /dev/sda3), never through a directory")
    if not in_use(device):
        return
    where = mountpoints_of(os.major(st.st_rdev), os.minor(st.st_rdev), Path("/proc/self/mountinfo").read_text())
    held = f"mounted on {', '.join(where)}" if where else "held open by another program (a mount elsewhere, a RAID)"
    raise FilesystemError(f"{device} is {held}: unmount it first; two writers on one NTFS volume corrupt it")


def probe(device: str, runner: Runner = run_tool) -> None:
    """FilesystemError unless ``device`` holds an NTFS volume that may be written: not hibernated, clean."""
    result = runner(["ntfs-3g.probe", "--readwrite", device], timeout=60)
    if result.returncode == NOT_INSTALLED:
        raise FilesystemError(f"cannot check the NTFS volume {device}: ntfs-3g.probe is not installed in this "
                              f"PE (Debian package {PACKAGE})")
    if not result.ok:
        raise FilesystemError("the NTFS volume cannot be written: " + _failure(device, result.returncode,
                                                                               result.why()))


# --- what is on the volume ---------------------------------------------------------------------------


def root_names(device: str, runner: Runner = run_tool) -> list[str]:
    """The names in the root directory of the unmounted NTFS volume on ``device`` (not the $-metafiles)."""
    result = runner(["ntfsls", "--all", device], timeout=120)
    if result.returncode == NOT_INSTALLED:
        raise FilesystemError(f"cannot list {device}: ntfsls is not installed in this PE (Debian package "
                              f"{PACKAGE})")
    if not result.ok:
        raise FilesystemError(f"cannot list the root of the NTFS volume {device}: {result.why()}")
    return [line for line in result.stdout.splitlines() if line]


def clashes(existing: Iterable[str], incoming: Iterable[str]) -> list[str]:
    """The ``existing`` names that one of the ``incoming`` names would collide with.

    Windows names compare without case ("users" is "Users"), so the comparison does too: a clash the
    volume would not see costs a refusal, one it would see costs a half-applied volume.
    """
    wanted = {name.casefold() for name in incoming}
    return sorted(name for name in existing if name.casefold() in wanted)


def check_fresh(device: str, incoming: Iterable[str], runner: Runner = run_tool) -> None:
    """FilesystemError naming the root entries of ``device`` that an image with the top-level names
    ``incoming`` would collide with (wimlib's NTFS mode creates every name and stops at the first
    that exists, leaving the volume half written)."""
    found = clashes(root_names(device, runner), incoming)
    if found:
        shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
        raise FilesystemError(f"the NTFS volume {device} already holds {shown}, which the image also has at its "
                              "root: wimlib's NTFS mode only creates names, so it would stop there half way. "
                              "Delete them, or move what must be kept into a directory the image does not "
                              "have, before applying")


# --- renames that keep the short name ------------------------------------------------------------------


def short_name(path: Path) -> str | None:
    """The DOS 8.3 name of ``path`` on an ntfs-3g mount, or None (a name that is already 8.3 has none)."""
    try:
        return os.getxattr(path, "system.ntfs_dos_name", follow_symlinks=False).decode()
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise FilesystemError(f"cannot read the short name of {path}: {exc.strerror}") from exc


def rename(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` on one ntfs-3g mount, keeping its short name.

    Everything else of the entry (security descriptor, streams, attributes, object id, reparse point,
    and the short names of whatever a directory holds) survives a rename as it is; only the entry's
    own short name does not, and some programs still open files by it.
    """
    dos = short_name(src)
    try:
        os.rename(src, dst)
    except OSError as exc:
        raise FilesystemError(f"cannot move {src} to {dst}: {exc.strerror}") from exc
    if dos is None:
        return
    try:
        os.setxattr(dst, "system.ntfs_dos_name", dos.encode(), follow_symlinks=False)
    except OSError as exc:
        raise FilesystemError(f"moved {src} to {dst}, but could not give it back its short name {dos}: "
                              f"{exc.strerror} (another entry of {dst.parent} may have it)") from exc
