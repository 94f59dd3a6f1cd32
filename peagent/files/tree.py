"""A directory tree as a pax tar stream: what a file image (manifest kind ``files``) carries.

A tar stream is a sequence of entries, each a 512-byte ustar header (name, mode, numeric owner,
size, mtime, type, link target, device numbers) followed by the file's data padded to 512 bytes,
and two zero blocks at the end. The ustar fields are small (100-byte names, 8 GiB sizes, whole
seconds), so pax (POSIX.1-2001) puts an extended header, type ``x``, before an entry that needs
more: ``length key=value\\n`` records that override the fields (``path``, ``linkpath``, ``size``,
``uid``, ``gid``, ``mtime`` with nanoseconds) or add to them. GNU tar and star add their own
records, which GNU tar, Python's tarfile and peagent.files.extract read back:

* ``SCHILY.xattr.NAME``: an extended attribute, its value as raw bytes (``user.*``, ``trusted.*``,
  ``security.*``: SELinux labels, file capabilities);
* ``SCHILY.acl.access`` / ``SCHILY.acl.default``: a POSIX ACL in acl(5) text with numeric ids
  (peagent.files.acl), read from the ``system.posix_acl_*`` attributes, which are not stored raw;
* ``GNU.sparse.*`` (format 1.0): a sparse file's data regions only. The entry's data starts with a
  map (the region count, then each region's offset and length, decimal, one per line, padded to a
  block) followed by the regions' bytes; ``GNU.sparse.name`` and ``GNU.sparse.realsize`` give the
  real name and size (the ustar name is a placeholder, ``DIR/GNUSparseFile.0/NAME``).

:func:`write_tree` writes what a capture needs and nothing that varies between two runs over the
same tree: names sorted, the root first as ``./``, directories with a trailing ``/``, numeric
owners (no user or group names: they would be looked up in the capturing host's database, not the
tree's), no atime or ctime. The second and later names of a hard-linked inode become link entries
(type ``1``) naming the first. Sockets are skipped (they are recreated by whoever listens). It
stays on the root's filesystem (``tar --one-file-system``): a mount point is written as an empty
directory. Symlinks are never followed. File data is streamed in 1 MiB pieces, so memory stays
flat; ``out`` need not seek (a pipe into the image builder). :class:`Exclusions` leaves out what a
captured root filesystem must not carry (:data:`CAPTURE_LINUX`). :mod:`peagent.files.layers`
reuses the walk and the writer to write only the differences between two trees.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import translate
from pathlib import Path
from typing import BinaryIO

from peagent.errors import UsageError
from peagent.files import acl, pax

log = logging.getLogger(__name__)

PIECE = 1 << 20  # file data is read and written in pieces of this size
XATTR_NAMESPACES = ("user.", "trusted.", "security.")  # system.* (but the ACLs) describes the filesystem, not the file
_ACLS = {acl.ACCESS: "SCHILY.acl.access", acl.DEFAULT: "SCHILY.acl.default"}


@dataclass(frozen=True)
class Exclusions:
    """What a tree walk leaves out. Patterns are fnmatch-style, relative to the tree's root, '/'-separated
    (``var/cache/apt/archives/*.deb``); as in fnmatch, ``*`` also matches '/'. A matched directory's contents
    are never walked; with ``keep_dirs`` the directory itself is still written, empty (``proc`` in a root
    filesystem: the mount point must exist, its contents belong to the running system). A regular file
    matching ``emptied`` is written with no data (``etc/machine-id``)."""

    patterns: tuple[str, ...] = ()
    keep_dirs: bool = True
    emptied: tuple[str, ...] = ()

    def excludes(self, rel: str) -> bool:
        return _matches(self.patterns, rel)

    def empties(self, rel: str) -> bool:
        return _matches(self.emptied, rel)


@functools.lru_cache(maxsize=32)
def _regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # One regular expression for all the patterns: one match per path, however many patterns.
    return re.compile("|".join(translate(p) for p in patterns))


def _matches(patterns: tuple[str, ...], rel: str) -> bool:
    return bool(patterns) and _regex(patterns).match(rel) is not None


NO_EXCLUSIONS = Exclusions()
CAPTURE_LINUX = Exclusions(patterns=(
    # Kernel and runtime filesystems (procfs, sysfs, devtmpfs, the /run tmpfs) and temporary files:
    # mounted or filled by the running system. Their directories stay, with their modes (/tmp 1777).
    "proc", "sys", "dev", "run", "tmp", "var/tmp",
    "lost+found",  # fsck's, per filesystem; mkfs makes a new one
    "var/cache/apt/archives/*.deb",  # downloaded packages, already installed
    "var/lib/apt/lists/*",  # package indexes: `apt update` fetches them again (lists/partial stays, empty)
    "var/log/journal",  # this machine's journal, in a directory named after its machine-id (kept: persistent logs)
    # Machine identity, which every deployed machine must make its own:
    "var/lib/dbus/machine-id",  # D-Bus's copy of the machine-id (or a link to it); dbus falls back on /etc's
    "etc/ssh/ssh_host_*",  # SSH host keys: shared, one machine could pose as another; `ssh-keygen -A` remakes them
    "var/lib/systemd/random-seed",  # the entropy seed: identical seeds on every machine
    "var/lib/systemd/credential.secret",  # the key of this host's encrypted systemd credentials
    "swapfile", "swap.img",  # swap files (Debian's, Ubuntu's): old memory contents, recreated by the installer
), emptied=(
    "etc/machine-id",  # empty: systemd makes a new one at first boot (a missing file would break read-only roots)
))


@dataclass
class TreeReport:
    """What a tree or layer stream holds. ``bytes`` is file data stored (holes of sparse files are not);
    ``excluded`` counts entries matched by the exclusions (a matched directory counts once)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0  # character and block devices, and FIFOs
    whiteouts: int = 0  # layers only: .wh.NAME and opaque markers
    bytes: int = 0
    excluded: int = 0


@dataclass
class Node:
    """One entry of a tree, as lstat sees it."""

    rel: str  # relative to the root, '/'-separated; "" for the root itself
    path: str
    st: os.stat_result
    target: str = ""  # a symlink's
    emptied: bool = False  # a regular file written with no data (Exclusions.emptied)
    walk: bool = False  # a directory whose contents are walked: not excluded, same filesystem as the root

    @property
    def name(self) -> str:
        """The entry's name in the tar stream."""
        return "./" if not self.rel else self.rel + "/" if stat.S_ISDIR(self.st.st_mode) else self.rel

    @property
    def size(self) -> int:
        return self.st.st_size if stat.S_ISREG(self.st.st_mode) and not self.emptied else 0

    @functools.cached_property
    def records(self) -> dict[str, bytes]:
        """The pax records of its ACLs and xattrs (read once, when first asked for)."""
        return _read_xattrs(self.path)


def _read_xattrs(path: str) -> dict[str, bytes]:
    # ENOTSUP: a filesystem without xattrs; ENOENT, ENODATA: the file or attribute went since it was listed.
    gone = (errno.ENOTSUP, errno.ENOENT, errno.ENODATA)
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in gone:
            return {}
        raise
    records = {}
    for name in sorted(n for n in names if n in _ACLS or n.startswith(XATTR_NAMESPACES)):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in gone:
                continue
            raise
        if name in _ACLS:
            try:
                records[_ACLS[name]] = acl.decode(value).encode()
            except ValueError as err:  # the kernel checks ACLs it stores: only a broken filesystem gets here
                log.warning("%s: %s ACL left out: %s", path, name, err)
        else:
            records["SCHILY.xattr." + name] = value
    return records


class Tree:
    """A directory tree walked in sorted order, within the root's filesystem, without the exclusions."""

    def __init__(self, root: Path, exclusions: Exclusions = NO_EXCLUSIONS, report: TreeReport | None = None) -> None:
        try:
            st = os.stat(root)  # the root itself may be given through a symlink
        except OSError as exc:
            raise UsageError(f"cannot read the tree {root}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"the tree {root} is not a directory")
        self.exclusions = exclusions
        self.report = report if report is not None else TreeReport()
        self.root = Node("", str(root), st, walk=True)

    def children(self, node: Node) -> list[Node]:
        if not node.walk:
            return []
        found: list[Node] = []
        try:
            names = sorted(os.listdir(node.path))
        except FileNotFoundError:
            log.info("%s vanished while the tree was read; left out", node.path)
            return found
        for name in names:
            rel = f"{node.rel}/{name}" if node.rel else name
            path = os.path.join(node.path, name)
            try:
                st = os.lstat(path)
                target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            except FileNotFoundError:  # removed since listed: a live system's files come and go
                log.info("%s vanished while the tree was read; left out", path)
                continue
            if stat.S_ISSOCK(st.st_mode):
                log.debug("%s is a socket; left out", path)
                continue
            excluded = self.exclusions.excludes(rel)
            is_dir = stat.S_ISDIR(st.st_mode)
            if excluded:
                self.report.excluded += 1
                if not (is_dir and self.exclusions.keep_dirs):
                    continue
            found.append(Node(rel, path, st, target, stat.S_ISREG(st.st_mode) and self.exclusions.empties(rel),
                              is_dir and not excluded and st.st_dev == self.root.st.st_dev))
        return found

    def walk(self, top: Node | None = None) -> Iterator[Node]:
        """``top`` (default the root) and everything below it, depth first, in sorted order."""
        stack = [top or self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(self.children(node)))


class TarWriter:
    """Entries into a pax tar stream (see the module's docstring), counted in a :class:`TreeReport`."""

    def __init__(self, out: BinaryIO, report: TreeReport, progress: Callable[[int], None] = lambda n: None) -> None:
        self.out = out
        self.report = report
        self.progress = progress
        self._links: dict[tuple[int, int], str] = {}  # an inode with several names -> the first name written

    def add(self, node: Node) -> None:
        st = node.st
        fmt = stat.S_IFMT(st.st_mode)
        inode = (st.st_dev, st.st_ino)
        if fmt != stat.S_IFDIR and st.st_nlink > 1 and inode in self._links:
            self.entry(node.name, pax.HARDLINK, st, link=self._links[inode])
            self.report.hardlinks += 1
            return
        if fmt == stat.S_IFREG:
            if not self._file(node):
                return
        else:
            self.entry(node.name, pax.TYPES[fmt], st, link=node.target, records=node.records)
            if fmt == stat.S_IFDIR:
                self.report.dirs += 1
            elif fmt == stat.S_IFLNK:
                self.report.symlinks += 1
            else:
                self.report.devices += 1
        if fmt != stat.S_IFDIR and st.st_nlink > 1:
            self._links[inode] = node.name

    def marker(self, name: str, mtime_ns: int = 0) -> None:
        """An empty regular file that stands for something else: a layer's whiteout or opaque marker."""
        self.entry(name, b"0", pax.StatFields(stat.S_IFREG | 0o644, mtime_ns))
        self.report.whiteouts += 1

    def entry(self, name: str, kind: bytes, st: os.stat_result | pax.StatFields, *, size: int = 0, link: str = "",
              records: dict[str, bytes] | None = None, placeholder: bytes = b"") -> None:
        """A pax header (when needed: always for the mtime's nanoseconds) and a ustar header."""
        extended = {"mtime": pax.seconds(st.st_mtime_ns)}
        encoded, target = os.fsencode(name), os.fsencode(link)
        if not placeholder and (len(encoded) > 100 or not encoded.isascii()):
            extended["path"] = encoded
        if len(target) > 100 or not target.isascii():
            extended["linkpath"] = target
        for field, value, width in (("uid", st.st_uid, 8), ("gid", st.st_gid, 8), ("size", size, 12)):
            if value >= 8 ** (width - 1):  # too large for its octal field
                extended[field] = b"%d" % value
        extended.update(records or {})
        body = b"".join(pax.record(key, value) for key, value in extended.items())
        self._write(pax.header(b"././@PaxHeader", b"x", 0o644, 0, 0, len(body), 0) + pax.padded(body))
        device = stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
        self._write(pax.header(placeholder or encoded, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size,
                               st.st_mtime_ns // 1_000_000_000, target,
                               (os.major(st.st_rdev), os.minor(st.st_rdev)) if device else (0, 0)))

    def _file(self, node: Node) -> bool:
        if node.emptied:
            self.entry(node.name, b"0", node.st, records=node.records)
            self.report.files += 1
            return True
        try:
            fd = os.open(node.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            log.info("%s vanished while the tree was read; left out", node.path)
            return False
        try:
            size = node.size
            # Fewer blocks than bytes: holes. Ask where the data is; store only that (GNU sparse 1.0).
            regions = pax.data_regions(fd, size) if node.st.st_blocks * 512 < size else [(0, size)]
            if regions == [(0, size)]:
                self.entry(node.name, b"0", node.st, size=size, records=node.records)
            else:
                table = pax.padded(b"%d\n" % len(regions) + b"".join(b"%d\n%d\n" % region for region in regions))
                head, _, tail = node.rel.rpartition("/")
                placeholder = os.fsencode(f"{head}/GNUSparseFile.0/{tail}" if head else f"GNUSparseFile.0/{tail}")
                records = {"GNU.sparse.major": b"1", "GNU.sparse.minor": b"0",
                           "GNU.sparse.name": os.fsencode(node.name), "GNU.sparse.realsize": b"%d" % size,
                           **node.records}
                self.entry(node.name, b"0", node.st, size=len(table) + sum(n for _, n in regions), records=records,
                           placeholder=placeholder[:100])
                self._write(table)
            self._copy(fd, node.path, regions)
        finally:
            os.close(fd)
        self.report.files += 1
        return True

    def _copy(self, fd: int, path: str, regions: list[tuple[int, int]]) -> None:
        stored = 0
        for offset, length in regions:
            end = offset + length
            while offset < end:
                piece = os.pread(fd, min(PIECE, end - offset), offset)
                if not piece:  # the header already promised the bytes: keep the stream whole, as GNU tar does
                    log.warning("%s shrank while it was read; padded with zeros", path)
                    piece = bytes(min(PIECE, end - offset))
                self._write(piece)
                self.progress(len(piece))
                offset += len(piece)
                stored += len(piece)
        self.report.bytes += stored
        self._write(bytes(-stored % pax.BLOCK))

    def close(self) -> None:
        """The end of the archive: two zero blocks."""
        self._write(bytes(2 * pax.BLOCK))
        self.out.flush()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a raw file (a pipe opened unbuffered) may take less than it was given
            view = view[self.out.write(view):]


def write_tree(root: Path, out: BinaryIO, *, exclusions: Exclusions = NO_EXCLUSIONS,
               progress: Callable[[int], None] = lambda n: None) -> TreeReport:
    """Write the tree at ``root`` to ``out`` as a pax tar stream (see the module's docstring).

    ``progress`` is called with the number of bytes of file data written, piece by piece.
    """
    report = TreeReport()
    tree = Tree(root, exclusions, report)
    writer = TarWriter(out, report, progress)
    for node in tree.walk():
        writer.add(node)
    writer.close()
    return report
