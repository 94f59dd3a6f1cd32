"""Making one entry of a tree inside a :class:`~peagent.files.confined.Confined` directory.

Three things decide whether an extracted tree is the tree that was archived:

* **Replacing.** Something may be at the entry's path already (a layer over a base, an archive
  naming a path twice). A new entry is made under a temporary name beside the old one and renamed
  over it (:func:`make`, :func:`install`): rename never follows a symlink at its target and
  replaces atomically, and a file that has other hard links keeps its old content under them,
  where truncating and rewriting it in place would change every name.
* **Order of metadata** (:func:`own`). chown clears the setuid and setgid bits and the file
  capabilities (``security.capability``), so the owner goes first, then the mode, then the
  extended attributes; setting the mtime comes last, since the others change the ctime only but
  writing data would move the mtime. Inherited ACLs are dropped where the archive has none: a
  file made in a directory with a default ACL receives one, which the archived file did not have.
  A call that would set what the file was made with already is left out (:func:`made_mode`):
  on a tree of small files each system call counts.
* **Holes** (:func:`write_sparse`). A sparse member's data is written at its offsets, skipping
  aligned all-zero 4 KiB blocks, so that what was a hole stays a hole. Only sparse members:
  a file archived without holes may need to have none (a swap file must be fully allocated).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import TypeVar

from peagent.files import acl
from peagent.files.confined import NO_ACL, Confined, lstat
from peagent.files.metadata import Meta

T = TypeVar("T")
HOLE = 4096  # aligned runs of zeros this long are left as holes in a sparse file
ZEROS = bytes(HOLE)


def make(target: Confined, fd: int, leaf: bytes, create: Callable[[bytes], T]) -> tuple[T, bytes | None]:
    """Makes an entry with ``create(name)`` at ``leaf`` of the directory ``fd``, or beside it under a
    temporary name when something is there already (``create`` must raise FileExistsError then).

    Returns what ``create`` returned (a descriptor, for a file) and the temporary name, or None.
    """
    try:
        return create(leaf), None
    except FileExistsError:
        pass
    while True:
        temp = target.temp_name()
        try:
            return create(temp), temp
        except FileExistsError:
            continue


def install(target: Confined, fd: int, parts: tuple[bytes, ...], temp: bytes | None) -> bool:
    """Renames what :func:`make` put at ``temp`` over the entry ``parts`` (the path of ``fd``'s
    entry), removing a directory there first; True if something was replaced."""
    if temp is None:
        return False
    there = lstat(fd, parts[-1])
    if there is not None and stat.S_ISDIR(there.st_mode):
        target.remove(fd, parts[:-1], parts[-1])
    os.rename(temp, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
    return there is not None


def umask() -> int | None:
    """The process's umask, read without changing it (os.umask can only set it, and it is shared
    by every thread); None when the kernel does not say (before Linux 4.7)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return None


def made_mode(mode: int, mask: int | None, inherited: bool) -> int | None:
    """The mode to make a new file with so that it has ``mode`` at once, and needs no chmod; None
    when it cannot: set-id and sticky bits must follow chown (which clears them), the umask would
    take bits away, a default ACL in the directory decides the mode instead."""
    if mask is None or inherited or mode & ~0o777 or mode & mask:
        return None
    return mode


def own(fd: int, meta: Meta, *, inherited: bool, owner: tuple[int, int] | None = None,
        mode: int | None = None) -> None:
    """Owner, mode, xattrs and times of an open file or directory; ``inherited``: it may hold ACLs
    from its parent's default ACL, to be dropped where ``meta`` has none. ``owner`` and ``mode``:
    what the file is known to have already (it was just made so), when known; what matches
    ``meta`` is not set again."""
    if owner != (meta.uid, meta.gid):
        os.fchown(fd, meta.uid, meta.gid)
    if inherited:
        for name in (acl.ACCESS, acl.DEFAULT):
            if name not in meta.names:
                _drop_xattr(fd, name)
    if mode != meta.mode:
        os.fchmod(fd, meta.mode)
    for name, value in meta.xattrs:
        os.setxattr(fd, name, value)
    os.utime(fd, ns=(meta.atime_ns, meta.mtime_ns))


def own_at(fd: int, name: bytes, meta: Meta, *, symlink: bool, inherited: bool) -> None:
    """The same for a symlink or a node just made at ``name`` in the directory ``fd``, by name: a
    FIFO or device is never opened (opening a FIFO blocks, opening a device talks to it)."""
    os.chown(name, meta.uid, meta.gid, dir_fd=fd, follow_symlinks=False)
    # The xattr calls take no dir_fd: the entry is named through the directory's descriptor in
    # /proc, which resolves to that very directory, with the last component not followed.
    path = b"/proc/self/fd/%d/%s" % (fd, name)
    if not symlink:
        if inherited and acl.ACCESS not in meta.names:
            _drop_xattr(path, acl.ACCESS)
        os.chmod(name, meta.mode, dir_fd=fd, follow_symlinks=False)
    for key, value in meta.xattrs:
        if not key.startswith("user."):  # the kernel keeps user.* on files and directories only
            os.setxattr(path, key, value, follow_symlinks=False)
    os.utime(name, ns=(meta.atime_ns, meta.mtime_ns), dir_fd=fd, follow_symlinks=False)


def _drop_xattr(target: int | bytes, name: str) -> None:
    try:
        if isinstance(target, int):
            os.removexattr(target, name)
        else:
            os.removexattr(target, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in NO_ACL:
            raise


def write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    """Writes all of ``data``, at the file position or at ``offset``, through short writes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[written:]
        if offset is not None:
            offset += written


def write_sparse(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Writes ``data`` at ``offset`` of a new file, leaving each aligned all-zero 4 KiB block a hole."""
    start = i = 0  # data[start:i] is still to be written
    while i < len(data):
        end = min(len(data), i + HOLE - (offset + i) % HOLE)
        if end - i == HOLE and data[i:end] == ZEROS:
            if start < i:
                write_all(fd, data[start:i], offset + start)
            start = end
        i = end
    if start < len(data):
        write_all(fd, data[start:], offset + start)
