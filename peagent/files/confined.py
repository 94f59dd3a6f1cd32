"""A directory tree reached only through file descriptors, so that no name can lead out of it.

Checking names as strings (no leading ``/``, no ``..``) does not keep writes inside a directory:
a symlink already in the tree, or planted by an earlier entry of the same archive, turns
``lib/x`` into ``/etc/x``. Here every path starts from a descriptor of the root and is walked one
component at a time with ``open(name, O_DIRECTORY | O_NOFOLLOW, dir_fd=parent)``; the last
component is acted on relative to its parent's descriptor with the ``*at`` calls, none of which
follows a symlink in that position (``O_NOFOLLOW``, ``AT_SYMLINK_NOFOLLOW``; rename, unlink,
mkdir, mknod, symlink and link without ``AT_SYMLINK_FOLLOW`` never do). A symlink met on the
way is refused (:class:`Blocked`), even one that points inside the tree: one rule, easy to check.

Tar streams come directory by directory, so the descriptor of the last parent is kept, and a
walk into a subdirectory of it starts from there. :meth:`Confined.remove` lets it go when it
removes that directory or one above it, so a kept descriptor never stands for a directory that
is gone (writing into it would lose the entries, silently).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from peagent.files import acl

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NO_ACL = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)  # none there, or none possible here


class Blocked(Exception):  # a finding, turned into UnsafeArchiveError by the caller
    """A component of a path is a symlink or not a directory: ``where`` is the path up to it."""

    def __init__(self, where: bytes, what: str) -> None:
        super().__init__(f"{where!r} is {what}")
        self.where = where
        self.what = what


class Confined:
    """The tree under ``root``; paths are tuples of components (bytes), already free of ``..``."""

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._key: tuple[bytes, ...] = ()
        self._fd = self.root_fd
        self._default_acl: bool | None = None  # whether the kept parent has a default ACL, once asked
        self._temps = 0

    def close(self) -> None:
        self.forget()
        os.close(self.root_fd)

    def forget(self) -> None:
        """Drops the kept parent: something was removed that it might have been, or been under."""
        if self._fd != self.root_fd:
            os.close(self._fd)
        self._key, self._fd, self._default_acl = (), self.root_fd, None

    def parent(self, parts: tuple[bytes, ...], *, create: bool) -> int | None:
        """The directory ``parts`` (an entry's parent), borrowed until the next call: never close it.

        Missing directories are made (mode 0755) when ``create``, else the answer is None.
        """
        if parts == self._key:
            return self._fd
        if not parts:
            self.forget()
            return self.root_fd
        depth = len(self._key)
        if self._key and parts[:depth] == self._key:  # a subdirectory of the kept one
            fd = self._walk(self._fd, parts, depth, create)
        else:
            fd = self._walk(self.root_fd, parts, 0, create)
        if fd is None:
            return None
        self.forget()
        self._key, self._fd = parts, fd
        return fd

    def open_dir(self, parts: tuple[bytes, ...]) -> int | None:
        """A descriptor of the directory ``parts`` for the caller to close; None when it is not there."""
        return self._walk(self.root_fd, parts, 0, create=False)

    def _walk(self, start: int, parts: tuple[bytes, ...], done: int, create: bool) -> int | None:
        """Opens parts[done:] from ``start`` (the directory parts[:done], borrowed); the result is the caller's."""
        fd = start
        for i in range(done, len(parts)):
            try:
                step = self._step(fd, parts[i], create, parts[:i + 1])
            finally:
                if fd != start:
                    os.close(fd)
            if step is None:
                return None
            fd = step
        return os.dup(start) if fd == start else fd

    def _step(self, fd: int, name: bytes, create: bool, where: tuple[bytes, ...]) -> int | None:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                raise Blocked(b"/".join(where), "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory") \
                    from None
            raise
        os.mkdir(name, 0o700, dir_fd=fd)
        made = os.open(name, DIR_FLAGS, dir_fd=fd)
        os.fchmod(made, 0o755)  # a directory the archive did not list: what tar makes, whatever the umask
        return made

    def parent_has_default_acl(self) -> bool:
        """Whether the kept parent has a default ACL, which everything made in it inherits."""
        if self._default_acl is None:
            try:
                os.getxattr(self._fd, acl.DEFAULT)
                self._default_acl = True
            except OSError as exc:
                if exc.errno not in NO_ACL:
                    raise
                self._default_acl = False
        return self._default_acl

    def temp_name(self) -> bytes:
        """A name for something made beside what it will replace (callers retry on EEXIST)."""
        self._temps += 1
        return b".peagent-%d-%d.tmp" % (os.getpid(), self._temps)

    def remove(self, fd: int, where: tuple[bytes, ...], name: bytes) -> bool:
        """Removes ``name`` from the directory ``fd`` (which is ``where``), a directory with its
        contents; False if nothing was there.

        shutil.rmtree with ``dir_fd`` walks by descriptors and never follows a symlink (it removes the
        link), so removing a tree that holds symlinks cannot take anything outside with it.
        """
        st = lstat(fd, name)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            removed = (*where, name)
            if self._key[:len(removed)] == removed:  # the kept directory is going: let it go first
                self.forget()
            shutil.rmtree(name, dir_fd=fd)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
        return True


def lstat(fd: int, name: bytes) -> os.stat_result | None:
    """What is at ``name`` in the directory ``fd`` (not following a symlink), or None."""
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
