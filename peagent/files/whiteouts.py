"""OCI whiteouts: how a layer says what to delete from the layers below it.

A tar entry cannot say "delete". The OCI image spec has layers carry empty files with reserved
names instead:

* ``DIR/.wh.NAME`` deletes ``DIR/NAME``, a directory with all it holds;
* ``DIR/.wh..wh..opq`` (opaque) deletes all that ``DIR`` held below this layer;
* other names starting with ``.wh..wh.`` are reserved (AUFS's hard link bookkeeping) and refused.

Both act on the layers below only: what the same layer puts at those paths stays, whether its
entries come before or after the whiteout in the stream. So the extractor remembers the paths a
layer has written (``touched``, with every parent of each) and spares them. Kept paths (the
user's data in an in-place re-image: ``kept``) are spared too, with every directory on the way
to them, whatever the layer says.
"""

from __future__ import annotations

import os
import stat

from peagent.files.confined import Confined, lstat

PREFIX = b".wh."
OPAQUE = b".wh..wh..opq"

Path = tuple[bytes, ...]


def is_whiteout(leaf: bytes) -> bool:
    return leaf.startswith(PREFIX)


def check(leaf: bytes) -> None:
    """Raises ValueError for a reserved or malformed whiteout name."""
    name = leaf[len(PREFIX):]
    if leaf != OPAQUE and (leaf.startswith(PREFIX + PREFIX) or name in (b"", b".", b"..")):
        raise ValueError("it is a whiteout of a reserved or malformed name")


def apply(target: Confined, where: Path, leaf: bytes, touched: set[Path], kept: frozenset[Path] = frozenset()) -> int:
    """Applies the whiteout ``leaf`` in the directory ``where``; the number of entries removed
    (a directory with its contents counts once)."""
    if _within(where, kept):
        return 0
    fd = target.parent(where, create=False)
    if fd is None:
        return 0  # nothing there to delete
    if leaf == OPAQUE:
        return _clear(target, fd, where, touched, kept)
    name = leaf[len(PREFIX):]
    path = (*where, name)
    if path in touched or _within(path, kept) or _leads_to(path, kept):
        return 0
    return int(target.remove(fd, where, name))


def _within(path: Path, kept: frozenset[Path]) -> bool:
    return any(path[:len(k)] == k for k in kept)


def _leads_to(path: Path, kept: frozenset[Path]) -> bool:
    return any(k[:len(path)] == path for k in kept)


def _clear(target: Confined, fd: int, where: Path, touched: set[Path], kept: frozenset[Path]) -> int:
    """Empties the directory ``where`` (open as ``fd``) of all the layer did not put there."""
    removed = 0
    pending: list[tuple[int, Path]] = [(os.dup(fd), where)]
    try:
        while pending:
            here, path = pending.pop()
            try:
                for child in map(os.fsencode, os.listdir(here)):
                    if _within((*path, child), kept):
                        continue
                    if (*path, child) not in touched and not _leads_to((*path, child), kept):
                        removed += target.remove(here, path, child)
                        continue
                    st = lstat(here, child)
                    if st is not None and stat.S_ISDIR(st.st_mode):  # the layer's directory: maybe more below
                        sub = target.open_dir((*path, child))
                        if sub is not None:
                            pending.append((sub, (*path, child)))
            finally:
                os.close(here)
    finally:
        for opened, _ in pending:
            os.close(opened)
    return removed
