"""Tar archives crafted in memory for the extractor's tests, a stream that cannot seek, and a digest
of a directory tree (what two trees must agree on to be the same tree)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

MTIME = 1_700_000_000


class Pipe:
    """A stream with read() only, as a socket or a decompressor hands it over."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644, uid: int = 0,
          gid: int = 0, mtime: float = MTIME, link: str = "", pax: dict[str, str] | None = None,
          major: int = 0, minor: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.linkname, info.devmajor, info.devminor = link, major, minor
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.pax_headers = dict(pax or {})
    return info, data


def file(name: str, data: bytes = b"", **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, data=data, **kw)


def directory(name: str, mode: int = 0o755, **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.DIRTYPE, mode=mode, **kw)


def symlink(name: str, target: str, **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.SYMTYPE, link=target, mode=0o777, **kw)


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.LNKTYPE, link=target)


def archive(*entries: tuple[tarfile.TarInfo, bytes], compression: str = "") -> bytes:
    """A pax tar archive of ``entries``, compressed with ``gz``, ``xz`` or ``bz2`` if asked."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def listing(root: Path) -> dict[str, str]:
    """Every path under ``root`` (root itself left out): a file's content, a symlink's target, or 'dir'."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        elif path.is_file():
            found[rel] = path.read_bytes().decode(errors="replace")
        else:
            found[rel] = "special"
    return found


def tree_digest(root: Path) -> dict[str, tuple]:
    """What a tree is: per path, type, mode, owner, size, content hash, link target, device, xattrs,
    mtime, and which paths share an inode (as the first path of the group)."""
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], str] = {}
    paths = [root, *sorted(root.rglob("*"))]
    for path in paths:
        rel = str(path.relative_to(root))
        st = path.lstat()
        kind = stat.S_IFMT(st.st_mode)
        content = link = None
        if stat.S_ISREG(kind):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        if stat.S_ISLNK(kind):
            link = os.readlink(path)
        xattrs = tuple(sorted((name, os.getxattr(path, name, follow_symlinks=False))
                              for name in os.listxattr(path, follow_symlinks=False)))
        group = inodes.setdefault((st.st_dev, st.st_ino), rel) if not stat.S_ISDIR(kind) else rel
        out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size if content else None,
                    content, link, st.st_rdev, xattrs, st.st_mtime_ns, group)
    return out
