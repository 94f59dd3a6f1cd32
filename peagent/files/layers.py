"""Layers: what changed between two trees, as a tar stream that turns the first into the second.

A file image can be deployed as a base tree plus layers, each layer a pax tar stream (written by
peagent.files.tree's writer) that carries only what differs from the tree below it. Deleting
cannot be said with a tar entry, so layers use the OCI image spec's whiteouts: empty files
whose names say what to remove.

:func:`write_layer` compares ``base`` and ``new`` path by path, in sorted order, and writes:

* every entry of ``new`` that ``base`` lacks, with everything below it;
* every entry present in both that **changed**: its type, mode (permissions, setuid, setgid,
  sticky), owner, mtime, xattrs or ACLs, symlink target or device numbers differ, or it is a
  regular file whose data differ (compared only when the sizes match, in 1 MiB pieces, stopping at
  the first difference), or the names it is hard-linked with differ (not counting names ``new``
  lacks: their whiteouts unlink them). A changed directory is written alone (its entry, not its
  contents): a directory's mtime changes with its contents, so most parents of a change are
  written too;
* ``DIR/.wh.NAME`` for a ``DIR/NAME`` of ``base`` that ``new`` lacks (one whiteout hides all that
  was below it);
* ``DIR/.wh..wh..opq``, the **opaque** marker, right after ``DIR``'s entry, when none of the names
  ``DIR`` held in ``base`` is left in ``new``: then all of ``DIR``'s contents are in the layer
  anyway, and one marker replaces a whiteout per name;
* for an entry whose type changed to or from a directory, ``.wh.NAME`` first, then the new entry
  (and when it became a directory, its opaque marker, then its contents). Without the whiteout, a
  tar extractor would refuse to put a file where a non-empty directory is, or, worse, would keep
  a symlink to a directory (``lib -> usr/lib``) and write the new directory's files through it.

Applying layers 1..N in order onto a base tree (what peagent.files.extract does, ``layer=True``):

1. A later layer wins per path: an entry in layer N replaces whatever the layers below have at
   that path.
2. A whiteout in layer N removes its path, and everything below it, from the layers below N only:
   an entry of the same name in layer N itself stays (a whiteout always comes before the entry it
   makes room for, so an applier that works in stream order can just delete when it meets one).
   Whiteouts are never extracted as files.
3. A directory in a later layer merges with the directory below it: its entry replaces the
   directory's mode, owner, mtime and xattrs, and what the lower layers put inside stays unless a
   whiteout removes it; with an opaque marker, everything the lower layers put inside is dropped,
   and only what layer N (and later layers) put there remains.
4. A hard link in a layer names a path written earlier in the same layer.

Both trees are walked with the same :class:`~peagent.files.tree.Exclusions`, on their own
filesystems only. A name that starts with ``.wh.`` cannot be carried in a layer (it would read as
a whiteout): such a file in ``new`` is refused.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO

from peagent.errors import ImageError
from peagent.files.tree import NO_EXCLUSIONS, PIECE, Exclusions, Node, TarWriter, Tree, TreeReport
from peagent.image.readers import read_exactly

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def write_layer(base: Path, new: Path, out: BinaryIO, *, exclusions: Exclusions = NO_EXCLUSIONS,
                progress: Callable[[int], None] = lambda n: None) -> TreeReport:
    """Write the layer that turns the tree ``base`` into the tree ``new`` to ``out`` (see the module's docstring).

    The report counts what the layer holds (``excluded`` counts ``new``'s entries matched by the exclusions);
    ``progress`` is called with the bytes of file data written.
    """
    report = TreeReport()
    _Diff(Tree(base, exclusions), Tree(new, exclusions, report), TarWriter(out, report, progress)).run()
    return report


class _Diff:
    def __init__(self, old: Tree, new: Tree, writer: TarWriter) -> None:
        self.old, self.new, self.writer = old, new, writer
        old_links, _ = _link_groups(old)
        self.new_links, kept = _link_groups(new, watch=old_links.keys())
        # Names the new tree lacks are whited out, which unlinks them: only the names kept count.
        self.old_links = {rel: group for rel, group in
                          ((rel, tuple(r for r in group if r in kept)) for rel, group in old_links.items())
                          if len(group) > 1}

    def run(self) -> None:
        if self._changed(self.old.root, self.new.root):
            self.writer.add(self.new.root)
        self._dir(self.old.root, self.new.root)
        self.writer.close()

    def _dir(self, old: Node, new: Node) -> None:
        """The contents of a directory that both trees have (its own entry is the caller's)."""
        olds = {_basename(n): n for n in self.old.children(old)}
        news = {_basename(n): n for n in self.new.children(new)}
        if olds and not olds.keys() & news.keys():
            self._opaque(new)
            for n in news.values():
                self._all(n)
            return
        for name in sorted(olds.keys() | news.keys()):
            if name not in news:
                self._whiteout(olds[name])
                continue
            n = news[name]
            o = olds.get(name)
            if o is None:
                self._all(n)
            elif _is_dir(o) and _is_dir(n):
                if self._changed(o, n):
                    self._add(n)
                self._dir(o, n)
            elif _is_dir(n):  # a file, symlink, ... became a directory
                self._whiteout(o)
                self._add(n)
                self._opaque(n)
                for child in self.new.children(n):
                    self._all(child)
            elif _is_dir(o):  # a directory became something else
                self._whiteout(o)
                self._add(n)
            elif self._changed(o, n):
                self._add(n)

    def _changed(self, o: Node, n: Node) -> bool:
        a, b = o.st, n.st
        if (a.st_mode, a.st_uid, a.st_gid, a.st_mtime_ns, o.size, o.target) != \
                (b.st_mode, b.st_uid, b.st_gid, b.st_mtime_ns, n.size, n.target):
            return True  # st_mode holds the type too
        if (stat.S_ISCHR(b.st_mode) or stat.S_ISBLK(b.st_mode)) and a.st_rdev != b.st_rdev:
            return True
        if o.records != n.records or self.old_links.get(o.rel) != self.new_links.get(n.rel):
            return True
        return n.size > 0 and not _same_data(o.path, n.path)

    def _all(self, top: Node) -> None:
        for node in self.new.walk(top):
            self._add(node)

    def _add(self, node: Node) -> None:
        if _basename(node).startswith(WHITEOUT):
            raise ImageError(f"{node.path}: a name starting with {WHITEOUT} cannot be carried in a layer, where it "
                             "reads as a whiteout (an OCI layer cannot hold such a file)")
        self.writer.add(node)

    def _whiteout(self, old: Node) -> None:
        head, _, tail = old.rel.rpartition("/")
        self.writer.marker(f"{head}/{WHITEOUT}{tail}" if head else WHITEOUT + tail)

    def _opaque(self, new: Node) -> None:
        self.writer.marker(f"{new.rel}/{OPAQUE}" if new.rel else OPAQUE)


def _link_groups(tree: Tree, watch: Collection[str] = ()) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """For each name of an inode with several names in the tree: all of them, in walk order; and which
    of the names in ``watch`` the tree has.

    Two trees whose files are equal but linked differently are different trees; and when one name of
    a linked inode goes into the layer, they all must (as a file, then links to it), or the layer
    would leave some names on the old inode.
    """
    names: dict[int, list[str]] = {}
    seen = set()
    # A walk of its own, with a report of its own: the tree's report counts what the layer walk sees.
    for node in Tree(Path(tree.root.path), tree.exclusions).walk():
        if node.rel in watch:
            seen.add(node.rel)
        if not _is_dir(node) and node.st.st_nlink > 1:
            names.setdefault(node.st.st_ino, []).append(node.rel)
    return {rel: tuple(group) for group in names.values() if len(group) > 1 for rel in group}, seen


def _same_data(a: str, b: str) -> bool:
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while True:
            x, y = read_exactly(fa, PIECE), read_exactly(fb, PIECE)
            if x != y:
                return False
            if not x:
                return True


def _basename(node: Node) -> str:
    return node.rel.rpartition("/")[2]


def _is_dir(node: Node) -> bool:
    return stat.S_ISDIR(node.st.st_mode)
