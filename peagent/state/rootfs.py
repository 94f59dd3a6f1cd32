"""Reading and writing inside a mounted root filesystem as a chroot would, without ever leaving it.

The old OS's tree is untrusted and the new OS's tree is someone's image: either may hold a symlink
such as ``etc/localtime -> /usr/share/zoneinfo/Europe/Berlin`` or ``etc/os-release ->
../usr/lib/os-release``. Followed by the PE's kernel, an absolute target names the *PE's* file.
So paths are resolved here, one component at a time with ``lstat``: an absolute symlink target
starts again at ``root`` (what a chroot does), a relative one continues from the link's directory,
a ``..`` that would climb above ``root`` is refused (:class:`RootfsError`), and so is a chain of
more than :data:`MAX_HOPS` links (a loop). The resolved path holds no symlink, and the final open
adds ``O_NOFOLLOW``: the tree is mounted for us alone, so nothing swaps a component in between.

Only regular files are read, and only up to a limit: a config file bigger than
:data:`CONFIG_LIMIT` is not a config file we want to parse. Readers return None for "not there"
and, when given a ``notes`` list, append why something that *is* there was not read.

:func:`write_file` replaces a file atomically (temporary file in the same directory, fsync,
rename, fsync of the directory), so a crash leaves the old or the new content, never half; the
owner and group of a file it replaces are kept (``etc/shadow`` is ``root:shadow`` on Debian).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from peagent.errors import ImageError

MAX_HOPS = 20  # symlinks followed in one resolution; Linux allows 40, real trees need a handful
CONFIG_LIMIT = 1 << 20  # bytes: the largest config file worth parsing


class RootfsError(ImageError):
    """A path inside a root filesystem leads out of it, or through too many symlinks."""

    code = "image.rootfs_path"


def resolve(root: Path, relpath: str, *, follow_last: bool = True) -> Path:
    """``relpath`` inside ``root`` with every symlink resolved as in a chroot.

    Components that do not exist are kept as written (the answer may name a file still to be
    made); the last component is left as it is (even a symlink) when ``follow_last`` is False.
    """
    pending = [p for p in relpath.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    missing = False  # once a component is absent, the rest is taken literally
    while pending:
        name = pending.pop(0)
        if name == "..":
            if not done:
                raise RootfsError(f"{relpath!r} in {root} leads above the root of the tree; refusing to follow it")
            done.pop()
            continue
        if missing:
            done.append(name)
            continue
        here = root.joinpath(*done, name)
        try:
            st = os.lstat(here)
        except OSError:
            missing = True
            done.append(name)
            continue
        if stat.S_ISLNK(st.st_mode) and (pending or follow_last):
            hops += 1
            if hops > MAX_HOPS:
                raise RootfsError(f"{relpath!r} in {root} goes through more than {MAX_HOPS} symlinks (a loop?)")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []  # absolute: from the tree's root, as a chroot sees it
            pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
            continue
        done.append(name)
    return root.joinpath(*done)


def _safe_resolve(root: Path, relpath: str, notes: list[str] | None, *, follow_last: bool = True) -> Path | None:
    try:
        return resolve(root, relpath, follow_last=follow_last)
    except RootfsError as exc:
        if notes is not None:
            notes.append(f"{relpath}: not read: {exc}")
        return None


def read_bytes(root: Path, relpath: str, limit: int = CONFIG_LIMIT, notes: list[str] | None = None) -> bytes | None:
    """The regular file ``relpath`` if it is at most ``limit`` bytes; None otherwise (with a note why)."""
    path = _safe_resolve(root, relpath, notes)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            if notes is not None and not stat.S_ISDIR(st.st_mode):
                notes.append(f"{relpath}: not a regular file; ignored")
            return None
        if st.st_size > limit:
            if notes is not None:
                notes.append(f"{relpath}: {st.st_size} bytes, more than the {limit} a file of its kind may be; ignored")
            return None
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:  # it grew since fstat
            if notes is not None:
                notes.append(f"{relpath}: more than {limit} bytes; ignored")
            return None
        return data
    finally:
        os.close(fd)


def read_text(root: Path, relpath: str, limit: int = CONFIG_LIMIT, notes: list[str] | None = None) -> str | None:
    """:func:`read_bytes` decoded as UTF-8 (undecodable bytes replaced)."""
    data = read_bytes(root, relpath, limit, notes)
    return None if data is None else data.decode("utf-8", "replace")


def list_dir(root: Path, relpath: str, notes: list[str] | None = None) -> list[str]:
    """The sorted names in the directory ``relpath``; empty when it is not a directory."""
    path = _safe_resolve(root, relpath, notes)
    if path is None:
        return []
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return []
        return sorted(os.listdir(path))
    except OSError:
        return []


def kind(root: Path, relpath: str, *, follow_last: bool = True) -> str | None:
    """"file", "dir", "link" (only when not following), "other", or None when absent or unreachable."""
    try:
        st = os.lstat(resolve(root, relpath, follow_last=follow_last))
    except (OSError, RootfsError):
        return None
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "link" if stat.S_ISLNK(st.st_mode) else "other"


def readlink(root: Path, relpath: str) -> str | None:
    """The target of the symlink ``relpath`` (its parents resolved), or None if it is not one."""
    try:
        return os.readlink(resolve(root, relpath, follow_last=False))
    except (OSError, RootfsError):
        return None


def mode_of(root: Path, relpath: str) -> int | None:
    """The permission bits of the file ``relpath``, or None when it is not there."""
    try:
        return stat.S_IMODE(os.stat(resolve(root, relpath), follow_symlinks=False).st_mode)
    except (OSError, RootfsError):
        return None


def make_dirs(root: Path, relpath: str, mode: int = 0o755) -> Path:
    """The directory ``relpath`` inside ``root``, made (with ``mode``) where missing."""
    path = resolve(root, relpath)
    missing = []
    here = path
    while not os.path.lexists(here) and here != root:
        missing.append(here)
        here = here.parent
    for d in reversed(missing):
        os.mkdir(d, mode)
        os.chmod(d, mode)  # mkdir's mode is masked by the umask
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise RootfsError(f"{relpath!r} in {root} is not a directory; cannot write into it")
    return path


def write_file(root: Path, relpath: str, data: bytes, mode: int | None = 0o644) -> Path:
    """Replace (or create) the file ``relpath`` atomically; ``mode`` None keeps the old file's mode.

    The parent is resolved inside ``root`` (missing directories made 0755); a symlink in the last
    position is replaced, not written through.
    """
    parent_rel, _, name = relpath.strip("/").rpartition("/")
    parent = make_dirs(root, parent_rel) if parent_rel else root
    target = parent / name
    old = None
    with contextlib.suppress(FileNotFoundError):
        old = os.lstat(target)
    if old is not None and stat.S_ISDIR(old.st_mode):
        raise RootfsError(f"{relpath!r} in {root} is a directory; cannot write a file there")
    keep = old if old is not None and stat.S_ISREG(old.st_mode) else None
    if mode is None:
        mode = stat.S_IMODE(keep.st_mode) if keep is not None else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".peagent", dir=parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            if keep is not None:
                os.fchown(out.fileno(), keep.st_uid, keep.st_gid)
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(parent)
    return target


def symlink(root: Path, relpath: str, target: str) -> Path:
    """Make ``relpath`` a symlink to ``target`` (as written), replacing what is there atomically."""
    parent_rel, _, name = relpath.strip("/").rpartition("/")
    parent = make_dirs(root, parent_rel) if parent_rel else root
    tmp = parent / f".{name}.peagent-link"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.rename(tmp, parent / name)
    except OSError:
        os.unlink(tmp)
        raise
    _fsync_dir(parent)
    return parent / name


def remove(root: Path, relpath: str) -> bool:
    """Delete ``relpath`` (a file, a symlink itself, or a directory tree); True if something was there."""
    path = resolve(root, relpath, follow_last=False)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if path == root:
        raise RootfsError(f"refusing to remove the root of {root}")
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # rmtree does not follow symlinks inside the tree
    else:
        os.unlink(path)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems (vfat on old kernels) refuse a directory fsync
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
