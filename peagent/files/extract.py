"""Applying a tar stream into a directory: a file image onto an empty filesystem, or a layer on top.

:func:`apply_tar` reads a pax tar stream (GNU tar ``--format=pax --xattrs --acls --selinux``,
or peagent's writer; plain, or gzip/xz/bzip2/zstd compressed) and applies each entry as it
arrives, into ``root``. What the tree needs to run is kept: regular files, directories,
symlinks, hard links, device nodes and FIFOs (when allowed); numeric owners, modes with the
setuid, setgid and sticky bits, mtimes to the nanosecond, extended attributes (``user.*``,
``trusted.*``, ``security.*``: SELinux labels, file capabilities) and POSIX ACLs; sparse files
stay sparse. Directories get their metadata in a final pass, after their contents, or writing
the contents would move their mtimes.

**Safety.** The stream is not trusted. Every path is reached from a descriptor of ``root``, one
component at a time, never following a symlink (peagent.files.confined), so no entry can write,
replace or delete anything outside ``root``; on top of that, names that are absolute, hold
``..`` or a NUL, or are empty, are refused as such. Refused as well, each with an
:class:`~peagent.errors.UnsafeArchiveError` naming the entry and what was wrong: an entry whose
parent in the target is a symlink (an archive that plants ``lib -> /etc`` and then writes
``lib/passwd``); a hard link to something not in the target, or to a symlink; device nodes and
FIFOs unless ``allow_devices``; whiteouts in a base image; and more file data, entries, name or
header bytes than :class:`Limits` allow, checked as the stream goes (a decompression bomb stops
at ``max_bytes``, before the file that would pass it is written).

Entries are applied as they stream, so an archive refused at its thousandth entry has applied
999 entries *inside* ``root`` (never outside). The caller (deploy) treats the target as
unfinished whenever apply_tar raises.

**Replacing.** What an entry finds at its path is replaced: a file, symlink, link or node is
made under a temporary name in the same directory and renamed over the old entry (so a hard link
elsewhere to the old file keeps the old content); a directory stays a directory and gets the
new metadata; a change of type removes the old entry first, a directory with all it holds.

**Layers** (``layer=True``) carry OCI whiteouts: ``.wh.NAME`` deletes NAME, and
``.wh..wh..opq`` in a directory deletes what the directory held before this layer. Both act
only on what lies below the layer: entries of the same layer stay, whatever their order in the
stream (which is why a layer's paths are remembered while it is applied). In a base image
(``layer=False``) a whiteout is refused.

**Kept paths** (``keep``, in-place imaging: ``home``, ``srv``, ...) hold the user's data, which
the image must not touch: an entry at or under a kept path that the target already holds is
skipped (the user's file wins, and its directory keeps its owner and mode); a whiteout spares
kept paths and everything on the way to them; an entry that would replace a directory on the way
to a kept path with something else is skipped with a warning. A kept path the target lacks is
filled from the image like any other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from peagent.errors import DeviceError, ImageError, UnsafeArchiveError
from peagent.files import whiteouts
from peagent.files.confined import Blocked, Confined, lstat
from peagent.files.entries import install, made_mode, make, own, own_at, umask, write_all, write_sparse
from peagent.files.metadata import Meta, MetaError, metadata
from peagent.files.tarheader import Member
from peagent.files.tarstream import DamagedStream, StreamFailed, TarStream
from peagent.image.readers import Readable

log = logging.getLogger(__name__)

NAME_MAX = 255  # bytes in one path component (Linux)
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1 << 40  # total file data in the stream (written, or skipped with a whiteout)
    max_entries: int = 10_000_000
    max_name: int = 4096  # bytes in a path (an entry's name, a link's target)
    max_pax_header: int = 1 << 20  # bytes of extended headers (pax, long names, sparse maps) for one entry


@dataclass
class ApplyReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0  # device nodes and FIFOs
    removed: int = 0  # entries deleted by whiteouts or replaced (a directory with its contents counts once)
    kept: int = 0  # entries of the image not applied because they fall in kept data (``keep``)
    bytes: int = 0  # file data written (the data of sparse members, not their holes)
    seconds: float = 0.0


def apply_tar(stream: Readable, root: Path, *, allow_devices: bool = False, layer: bool = False,
              limits: Limits = Limits(), keep: Collection[str] = (),
              progress: Callable[[int], None] = lambda n: None) -> ApplyReport:
    """Applies the tar stream ``stream`` (anything with ``read(n)``; never seeked) into ``root``.

    ``keep`` names paths relative to ``root`` (``"home"``, ``"var/lib/data"``) whose content
    stays as it is: see the module's docstring.

    ``progress`` is called with each piece of file data written, in bytes. Raises
    UnsafeArchiveError when the archive asks for something unsafe, ImageError (or VerifyError,
    from decompression) when it is damaged or truncated, DeviceError when the target cannot be
    written; an error of ``stream`` itself propagates as it was raised. After any of them the
    target holds what was applied so far: see the module's docstring.
    """
    started = time.monotonic()
    report = ApplyReport()
    try:
        target = Confined(root)
    except OSError as exc:
        raise DeviceError(f"the target directory {root} cannot be opened: {exc.strerror}") from None
    applier = _Applier(target, root, allow_devices, layer, limits, progress, report)
    applier.protect(keep)
    try:
        with TarStream(stream, max_header=limits.max_pax_header) as tar:
            for member in tar:
                applier.apply(tar, member)
        applier.finish()
    except StreamFailed as failed:
        raise failed.error from None
    finally:
        target.close()
        report.seconds = time.monotonic() - started
    log.debug("applied into %s: %s", root, report)
    return report


class _Applier:
    def __init__(self, target: Confined, root: Path, allow_devices: bool, layer: bool, limits: Limits,
                 progress: Callable[[int], None], report: ApplyReport) -> None:
        self.target, self.root, self.allow_devices, self.layer = target, root, allow_devices, layer
        self.limits, self.progress, self.report = limits, progress, report
        self.entries = 0
        self.data = 0  # bytes of file data met in the stream, for max_bytes
        self.dirs: dict[tuple[bytes, ...], tuple[Meta, bool]] = {}  # metadata, and whether made here
        self.touched: set[tuple[bytes, ...]] = set()  # a layer's own paths, which its whiteouts spare
        self.kept: frozenset[tuple[bytes, ...]] = frozenset()  # kept paths, which whiteouts spare
        self.held: frozenset[tuple[bytes, ...]] = frozenset()  # the kept paths the target holds: never touched
        self.member = ""
        self.short = min(NAME_MAX, limits.max_name)  # a name this long has no component over NAME_MAX
        # What a new file is made with, so that own() need not set it again: the mode (the
        # umask's part in it), and the owner when the directory's owner is the process's (a new
        # file's group is the directory's when it is set-group-ID, or the filesystem says so).
        self.umask = umask()
        self.ids = (os.geteuid(), os.getegid())
        self.owner_dir: tuple[bytes, ...] | None = None  # the directory whose owner was last looked at
        self.owner_known = False  # whether its files are made with owner self.ids

    def protect(self, keep: Collection[str]) -> None:
        """Remembers the kept paths, and which of them the target holds before anything is applied."""
        kept = set()
        for path in keep:
            parts = self.split(path, "kept path")
            if not parts:
                raise ImageError("a kept path names the target directory itself; keep the data's directories "
                                 "(home, srv, ...) instead")
            kept.add(parts)
        held = set()
        for parts in kept:
            try:
                fd = self.target.open_dir(parts[:-1])
            except Blocked:
                continue  # a symlink on the way: nothing under it is the user's data in this tree
            if fd is not None:
                try:
                    if lstat(fd, parts[-1]) is not None:
                        held.add(parts)
                finally:
                    os.close(fd)
        self.kept, self.held = frozenset(kept), frozenset(held)

    def spared(self, parts: tuple[bytes, ...], member: Member) -> bool:
        """Whether the entry is left out because it falls in kept data (counted, and logged when odd)."""
        if any(parts[:len(k)] == k for k in self.held):
            self.report.kept += 1
            return True
        linked = member.islnk() and any(self.split(member.linkname, "hard link target")[:len(k)] == k
                                        for k in self.held)
        replaces = not member.isdir() and any(k[:len(parts)] == parts for k in self.held)
        if linked or replaces:
            why = "is a hard link into" if linked else "would replace a directory holding"
            log.warning("tar entry %r %s kept data; left out", self.member, why)
            self.report.kept += 1
            return True
        return False

    def refuse(self, problem: str) -> UnsafeArchiveError:
        inside = ", but the entries before it were applied inside it" if self.entries > 1 else ""
        return UnsafeArchiveError(f"tar entry {self.member!r}: {problem}; refused: nothing was written outside "
                                  f"{self.root}{inside}")

    def apply(self, tar: TarStream, member: Member) -> None:
        self.member = member.name
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise self.refuse(f"the archive has more than max_entries ({self.limits.max_entries}) entries")
        parts = self.split(member.name, "name")
        whiteout = bool(parts) and whiteouts.is_whiteout(parts[-1])
        if self.held and parts and not whiteout and self.spared(parts, member):
            return
        try:
            if whiteout:
                self.whiteout(member, parts)
                return
            if not parts and not member.isdir():
                raise self.refuse("it names the target directory itself, which only a directory entry may")
            if member.isreg():  # the most frequent first
                self.file(tar, member, parts)
            elif member.isdir():
                self.directory(member, parts)
            elif member.issym():
                self.symlink(member, parts)
            elif member.islnk():
                self.hardlink(member, parts)
            elif member.ischr() or member.isblk() or member.isfifo():
                self.node(member, parts)
            else:
                raise self.refuse(f"its type {member.type!r} is not one peagent applies (file, directory, link, "
                                  "device, FIFO)")
        except Blocked as blocked:
            raise self.refuse(f"{blocked.where.decode(errors='replace')!r} in the target is {blocked.what}, and "
                              "nothing is written through one") from None
        except MetaError as exc:
            raise self.refuse(str(exc)) from None
        except DamagedStream as exc:
            raise ImageError(f"tar entry {self.member!r}: the stream is damaged or cut short: {exc}") from None
        except OSError as exc:
            raise DeviceError(f"applying tar entry {self.member!r} into {self.root} failed: {exc}") from None
        if not member.isreg():
            self.owner_dir = None  # a directory may have been made, replaced or removed: look again
        if self.layer:
            self.touched.update(parts[:i] for i in range(1, len(parts) + 1))

    def split(self, name: str, what: str) -> tuple[bytes, ...]:
        """The components of an entry's name (or a hard link's target), refused unless plainly relative."""
        raw = name.encode("utf-8", "surrogateescape")
        parts = (raw[2:] if raw.startswith(b"./") else raw).split(b"/")  # GNU tar starts every name with ./
        if (len(raw) <= self.short and b"" not in parts and b"." not in parts and b".." not in parts
                and b"\0" not in raw):  # the usual name: none of the checks below can fail
            return tuple(parts)
        if not raw:
            raise self.refuse(f"its {what} is empty")
        if b"\0" in raw:
            raise self.refuse(f"its {what} holds a NUL byte")
        if len(raw) > self.limits.max_name:
            raise self.refuse(f"its {what} is {len(raw)} bytes long, over max_name ({self.limits.max_name})")
        if raw.startswith(b"/"):
            raise self.refuse(f"its {what} {name!r} is an absolute path")
        parts = tuple(part for part in raw.split(b"/") if part not in (b"", b"."))
        if b".." in parts:
            raise self.refuse(f"its {what} {name!r} has a '..' component")
        if any(len(part) > NAME_MAX for part in parts):
            raise self.refuse(f"its {what} has a component longer than {NAME_MAX} bytes")
        return parts

    def place(self, parts: tuple[bytes, ...]) -> tuple[int, bytes]:
        """The parent directory's descriptor (made if missing) and the last component."""
        fd = self.target.parent(parts[:-1], create=True)
        assert fd is not None
        return fd, parts[-1]

    def count(self, size: int) -> None:
        if self.data + size > self.limits.max_bytes:
            raise self.refuse(f"its {size} bytes of data would take the archive past max_bytes "
                              f"({self.limits.max_bytes}), after {self.data}: a decompression bomb, or a limit "
                              "too small for this image; stopped before writing it")
        self.data += size

    def directory(self, member: Member, parts: tuple[bytes, ...]) -> None:
        meta = metadata(member)
        made = False
        if parts:
            fd, leaf = self.place(parts)
            try:  # the final pass sets its mode; until then only we write here
                os.mkdir(leaf, 0o700, dir_fd=fd)
                made = True
            except FileExistsError:
                st = lstat(fd, leaf)
                if st is not None and not stat.S_ISDIR(st.st_mode):  # replaced (a symlink is removed, never followed)
                    self.report.removed += self.target.remove(fd, parts[:-1], leaf)
                    os.mkdir(leaf, 0o700, dir_fd=fd)
                    made = True
        self.dirs[parts] = (meta, made or self.dirs.get(parts, (meta, False))[1])
        self.report.dirs += 1

    def file(self, tar: TarStream, member: Member, parts: tuple[bytes, ...]) -> None:
        extents = self.extents(member)
        stored = member.size if member.sparse is None else sum(length for _, length in extents)
        self.count(stored)
        meta = metadata(member)
        fd, leaf = self.place(parts)
        inherited = self.target.parent_has_default_acl()
        mode = made_mode(meta.mode, self.umask, inherited)
        owner = self.ids if self.owned_by_process(fd, parts[:-1]) else None
        out, temp = make(self.target, fd, leaf,
                         lambda name: os.open(name, CREATE, 0o600 if mode is None else mode, dir_fd=fd))
        try:
            if member.sparse is None:
                self.write(out, tar.data(stored))
            else:
                self.write_sparse(out, tar.data(stored), extents)
                os.ftruncate(out, member.size)  # a hole at the end is in no extent
            own(out, meta, inherited=inherited, owner=owner, mode=mode)
        except BaseException:
            os.close(out)
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=fd)
            raise
        os.close(out)
        replaced = temp is not None and install(self.target, fd, parts, temp)
        if replaced:
            self.owner_dir = None  # what was replaced may have been a directory
        self.report.removed += replaced
        self.report.files += 1

    def owned_by_process(self, fd: int, where: tuple[bytes, ...]) -> bool:
        """Whether a file made now in the directory ``fd`` (which is ``where``) is owned by the
        process's user and group: when the directory is, whichever rule gives the file its group."""
        if where != self.owner_dir:
            st = os.fstat(fd)
            self.owner_dir, self.owner_known = where, (st.st_uid, st.st_gid) == self.ids
        return self.owner_known

    def extents(self, member: Member) -> list[tuple[int, int]]:
        """Where the member's stored data goes in the file: (offset, length), in order, not overlapping."""
        if member.size < 0:
            raise self.refuse(f"its size {member.size} is negative")
        if member.sparse is None:
            return [(0, member.size)]
        extents = [(offset, length) for offset, length in member.sparse if length > 0]
        end = 0
        for offset, length in extents:
            if offset < end or offset + length > member.size:
                raise self.refuse(f"its sparse map is malformed (extent {offset}+{length} in a file of "
                                  f"{member.size} bytes)")
            end = offset + length
        return extents

    def write(self, fd: int, pieces: Iterable[memoryview]) -> None:
        """A file's data, as the stream hands it over (a small file: one piece, one write)."""
        for piece in pieces:
            n = len(piece)
            written = os.write(fd, piece)
            if written < n:  # a short write: the rest, however many more it takes
                write_all(fd, piece[written:])
            self.report.bytes += n
            self.progress(n)

    def write_sparse(self, fd: int, pieces: Iterable[memoryview], extents: list[tuple[int, int]]) -> None:
        """A sparse file's stored data, each piece cut where the extents say it goes."""
        places = iter(extents)
        offset = left = 0
        for piece in pieces:
            self.report.bytes += len(piece)
            self.progress(len(piece))
            while piece:
                while not left:
                    offset, left = next(places)  # the pieces add up to the extents: never past the last
                n = min(left, len(piece))
                write_sparse(fd, piece[:n], offset)
                offset, left, piece = offset + n, left - n, piece[n:]

    def symlink(self, member: Member, parts: tuple[bytes, ...]) -> None:
        target = member.linkname.encode("utf-8", "surrogateescape")
        if not target or b"\0" in target or len(target) > self.limits.max_name:
            raise self.refuse(f"its symlink target ({len(target)} bytes) is empty, holds a NUL or is over "
                              f"max_name ({self.limits.max_name})")
        meta = metadata(member)
        fd, leaf = self.place(parts)
        _, temp = make(self.target, fd, leaf, lambda name: os.symlink(target, name, dir_fd=fd))
        own_at(fd, temp or leaf, meta, symlink=True, inherited=False)
        self.report.removed += install(self.target, fd, parts, temp)
        self.report.symlinks += 1

    def hardlink(self, member: Member, parts: tuple[bytes, ...]) -> None:
        source = self.split(member.linkname, "hard link target")
        if not source:
            raise self.refuse("it is a hard link to the target directory itself")
        source_fd = self.target.open_dir(source[:-1])
        try:
            st = lstat(source_fd, source[-1]) if source_fd is not None else None
            if st is None or stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                what = "not in the target" if st is None else "a symlink" if stat.S_ISLNK(st.st_mode) else "a directory"
                raise self.refuse(f"it is a hard link to {member.linkname!r}, which is {what}")
            fd, leaf = self.place(parts)
            there = lstat(fd, leaf)
            if there is None or (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino):  # else: linked already
                _, temp = make(self.target, fd, leaf, lambda name: os.link(source[-1], name, src_dir_fd=source_fd,
                                                                    dst_dir_fd=fd, follow_symlinks=False))
                self.report.removed += install(self.target, fd, parts, temp)
        finally:
            if source_fd is not None:
                os.close(source_fd)
        self.report.hardlinks += 1

    def node(self, member: Member, parts: tuple[bytes, ...]) -> None:
        if not self.allow_devices:
            kind = "a FIFO" if member.isfifo() else "a device node"
            raise self.refuse(f"it is {kind}, and devices are not allowed in this image (allow_devices)")
        if not (0 <= member.devmajor < 1 << 32 and 0 <= member.devminor < 1 << 32):
            raise self.refuse(f"its device number {member.devmajor}:{member.devminor} is out of range")
        meta = metadata(member)
        kind = stat.S_IFIFO if member.isfifo() else stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        device = 0 if member.isfifo() else os.makedev(member.devmajor, member.devminor)
        fd, leaf = self.place(parts)
        _, temp = make(self.target, fd, leaf, lambda name: os.mknod(name, kind | 0o600, device, dir_fd=fd))
        own_at(fd, temp or leaf, meta, symlink=False,
               inherited=self.target.parent_has_default_acl())
        self.report.removed += install(self.target, fd, parts, temp)
        self.report.devices += 1

    def whiteout(self, member: Member, parts: tuple[bytes, ...]) -> None:
        if not self.layer:
            raise self.refuse("it is an OCI whiteout, which only a layer may carry (a base image must not)")
        self.owner_dir = None  # it may remove a directory
        if member.isreg():
            self.count(member.size)  # skipped, not written: still data a bomb could be made of
        try:
            whiteouts.check(parts[-1])
        except ValueError as exc:
            raise self.refuse(str(exc)) from None
        self.report.removed += whiteouts.apply(self.target, parts[:-1], parts[-1], self.touched, self.kept)

    def finish(self) -> None:
        """Directory metadata, after all contents (in reverse stream order), skipping those replaced since."""
        for parts, (meta, made) in reversed(self.dirs.items()):
            self.member = b"/".join(parts).decode(errors="replace") or "."
            try:
                fd = self.target.open_dir(parts)
            except Blocked:
                continue  # a later entry put a symlink there
            if fd is None:
                continue
            try:
                own(fd, meta, inherited=made)
            except OSError as exc:
                raise DeviceError(f"applying tar entry {self.member!r} into {self.root} failed: {exc}") from None
            finally:
                os.close(fd)


