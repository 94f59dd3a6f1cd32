"""Windows registry hives, read and edited offline through hivex.

The registry lives in files, "hives", under ``Windows/System32/config``: ``SYSTEM`` (hardware,
services, the computer name, TCP/IP), ``SOFTWARE`` (the installed Windows, its product key),
``SECURITY`` (the LSA policy: domain membership), ``SAM`` (local accounts). A hive is a tree of
keys; each key holds named, typed values (the unnamed "default" value has the name ``""``).
Windows compares key and value names without regard to case, and so does this module.

A live Windows has no ``CurrentControlSet`` in the file: that is a link the kernel makes at boot to
``ControlSetNNN``, where NNN is ``Select\\Current``; :meth:`Hive.control_set` follows it offline.

Values are bytes plus a type, decoded by :func:`decode`:

====================== ==================================================================
REG_SZ, REG_EXPAND_SZ  UTF-16LE text, NUL-terminated (the NUL and anything after it dropped;
                       an expand string's ``%SystemRoot%`` is left unexpanded)
REG_MULTI_SZ           UTF-16LE strings, each NUL-terminated, then an empty one: a list
REG_DWORD              32-bit little-endian integer (REG_DWORD_BIG_ENDIAN, REG_QWORD too)
anything else          the bytes (REG_BINARY, REG_NONE: LSA policy structures, product ids)
====================== ==================================================================

hivex (python3-hivex) does the file format. Its errors are RuntimeErrors carrying only errno's
text; here they become :class:`ImageError` (the hive is not one, or is corrupt) or
:class:`FilesystemError` (a write failed), naming the file. hivex does not replay the hive's
transaction logs (``SYSTEM.LOG1``/``LOG2``): changes a Windows made just before a hard power-off or
a hibernation ("fast start-up") may be missing from what is read.

:func:`windows_path` finds a file in a mounted Windows tree the way Windows names it: without
regard to case, and never through a symlink (ntfs-3g shows junctions such as ``Documents and
Settings`` as symlinks, and a symlink must never lead a write out of the tree).
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import hivex

from peagent.errors import FilesystemError, ImageError

REG_NONE, REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_DWORD_BIG_ENDIAN = 0, 1, 2, 3, 4, 5
REG_MULTI_SZ, REG_QWORD = 7, 11

HIVE_MIN_SIZE = 0x2000  # base block + one 4 KiB bin: hivex refuses anything smaller

Decoded = str | list[str] | int | bytes


def decode(kind: int, data: bytes) -> Decoded:
    """A value's bytes as Python: str, list of str, int or (for other types) the bytes themselves."""
    if kind in (REG_SZ, REG_EXPAND_SZ):
        return data.decode("utf-16-le", "replace").split("\0", 1)[0]
    if kind == REG_MULTI_SZ:
        return [s for s in data.decode("utf-16-le", "replace").split("\0") if s]
    if kind == REG_DWORD and len(data) >= 4:
        return int(struct.unpack_from("<I", data)[0])
    if kind == REG_DWORD_BIG_ENDIAN and len(data) >= 4:
        return int(struct.unpack_from(">I", data)[0])
    if kind == REG_QWORD and len(data) >= 8:
        return int(struct.unpack_from("<Q", data)[0])
    return data


def fold(name: str) -> str:
    """A key or value name as Windows compares it: each character upper-cased on its own (ß stays ß,
    where Python's casefold would make it ss)."""
    return "".join(u if len(u := c.upper()) == 1 else c for c in name)


def encode_string(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


@dataclass(frozen=True)
class RegValue:
    name: str
    kind: int
    data: bytes

    @property
    def value(self) -> Decoded:
        return decode(self.kind, self.data)


class _Handle(hivex.Hivex):  # type: ignore[misc]
    """hivex's handle, minus the noise its destructor prints when opening failed."""

    def __del__(self) -> None:
        if hasattr(self, "_o"):
            super().__del__()


class Hive:
    """One open hive file. Keys are given as backslash paths from the hive's root
    (``ControlSet001\\Control\\ComputerName``) or as the node numbers hivex hands out."""

    def __init__(self, path: Path, handle: hivex.Hivex, writable: bool) -> None:
        self.path = path
        self._h = handle
        self.writable = writable

    def __repr__(self) -> str:
        return f"Hive({str(self.path)!r}, writable={self.writable})"

    def _fail(self, doing: str, exc: Exception) -> ImageError:
        return ImageError(f"registry hive {self.path}: {doing} failed ({exc}); the hive is corrupt or not "
                          "a registry hive: check the Windows installation (chkdsk, or restore the file from "
                          "Windows/System32/config/RegBack)")

    def root(self) -> int:
        return int(self._h.root())

    def child(self, node: int, name: str) -> int | None:
        try:
            found = self._h.node_get_child(node, name)
            if found is not None:
                return int(found)
            # hivex folds ASCII case only; Windows folds all of Unicode
            for child in self._h.node_children(node):
                if fold(self._h.node_name(child)) == fold(name):
                    return int(child)
        except RuntimeError as exc:
            raise self._fail(f"reading key {name!r}", exc) from exc
        return None

    def key(self, path: str | int) -> int | None:
        """The node at ``path`` (case-insensitive), or None when a key on the way is missing."""
        if isinstance(path, int):
            return path
        node: int | None = self.root()
        for name in (p for p in path.split("\\") if p):
            assert node is not None
            node = self.child(node, name)
            if node is None:
                return None
        return node

    def subkeys(self, path: str | int) -> list[tuple[str, int]]:
        """The (name, node) of each subkey of ``path``; none when it is missing."""
        node = self.key(path)
        if node is None:
            return []
        try:
            return [(self._h.node_name(c), int(c)) for c in self._h.node_children(node)]
        except RuntimeError as exc:
            raise self._fail(f"listing {path!r}", exc) from exc

    def values(self, path: str | int) -> dict[str, RegValue]:
        """Every value of ``path``, keyed by its name as :func:`fold` has it; empty when the key is missing."""
        node = self.key(path)
        if node is None:
            return {}
        out = {}
        try:
            for v in self._h.node_values(node):
                name = self._h.value_key(v)
                kind, data = self._h.value_value(v)
                out[fold(name)] = RegValue(name, int(kind), bytes(data))
        except RuntimeError as exc:
            raise self._fail(f"reading the values of {path!r}", exc) from exc
        return out

    def raw(self, path: str | int, name: str) -> RegValue | None:
        return self.values(path).get(fold(name))

    def value(self, path: str | int, name: str) -> Decoded | None:
        """The value ``name`` of key ``path``, decoded; None when the key or the value is missing."""
        found = self.raw(path, name)
        return found.value if found is not None else None

    def string(self, path: str | int, name: str) -> str | None:
        """A string value, None when missing, empty, or of another type."""
        found = self.value(path, name)
        return found if isinstance(found, str) and found else None

    def dword(self, path: str | int, name: str) -> int | None:
        found = self.value(path, name)
        return found if isinstance(found, int) else None

    def control_set(self) -> str | None:
        """The control set a boot would use (SYSTEM only): ``ControlSet00N`` from ``Select\\Current``,
        else ``Select\\Default``, else the lowest one present; None when there is none."""
        sets = sorted(name for name, _ in self.subkeys("") if fold(name).startswith("CONTROLSET"))
        for which in ("Current", "Default"):
            number = self.dword("Select", which)
            if number is not None:
                wanted = f"ControlSet{number:03d}"
                for name in sets:
                    if fold(name) == fold(wanted):
                        return name
        return sets[0] if sets else None

    # writing --------------------------------------------------------------------------------------------------

    def make_key(self, path: str) -> int:
        """The node at ``path``, creating the keys that are missing."""
        if not self.writable:
            raise ValueError(f"registry hive {self.path} was opened read-only")
        node = self.root()
        for name in (p for p in path.split("\\") if p):
            found = self.child(node, name)
            if found is None:
                try:
                    found = int(self._h.node_add_child(node, name))
                except RuntimeError as exc:
                    raise self._fail(f"adding key {name!r}", exc) from exc
            node = found
        return node

    def _set(self, path: str, name: str, kind: int, data: bytes) -> None:
        node = self.make_key(path)
        try:
            self._h.node_set_value(node, {"key": name, "t": kind, "value": data})
        except RuntimeError as exc:
            raise self._fail(f"setting {path}\\{name}", exc) from exc

    def set_string(self, path: str, name: str, text: str, *, expand: bool = False) -> None:
        """Set a REG_SZ (or, with ``expand``, REG_EXPAND_SZ) value, creating the key if needed."""
        self._set(path, name, REG_EXPAND_SZ if expand else REG_SZ, encode_string(text))

    def set_dword(self, path: str, name: str, number: int) -> None:
        if not 0 <= number <= 0xFFFFFFFF:
            raise ValueError(f"a REG_DWORD holds 0..4294967295, not {number}")
        self._set(path, name, REG_DWORD, struct.pack("<I", number))

    def commit(self) -> None:
        """Write the changes back to the hive file."""
        try:
            self._h.commit(None)
        except RuntimeError as exc:
            raise FilesystemError(f"writing registry hive {self.path} failed ({exc}); the target filesystem "
                                  "may be full or read-only") from exc


def open_hive(path: Path, *, write: bool = False) -> Hive:
    """Open the hive file at ``path``: read-only, or (``write``) loaded for editing and :meth:`Hive.commit`.

    Raises ImageError when the file is not a hive or is corrupt, and FileNotFoundError when it is missing.
    """
    st = os.lstat(path)  # FileNotFoundError is the caller's "not there"
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"registry hive {path}: expected a regular file, found "
                         f"{'a symlink' if stat.S_ISLNK(st.st_mode) else 'something else'}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"regf" or st.st_size < HIVE_MIN_SIZE:
        raise ImageError(f"{path}: expected a Windows registry hive (starting 'regf', at least {HIVE_MIN_SIZE} "
                         f"bytes), found {st.st_size} bytes starting {head!r}; the file is damaged or not a hive")
    try:
        handle = _Handle(str(path), write=write)
    except RuntimeError as exc:
        raise ImageError(f"registry hive {path} is corrupt ({exc}); check the Windows installation") from exc
    return Hive(path, handle, write)


def windows_path(root: Path, rel: str, *, want: str = "file") -> Path | None:
    """``rel`` (``/``-separated) under ``root`` with each name matched without regard to case, as the path
    that exists; None when a part is missing, is a symlink, or the last is not a ``want`` ("file", "dir")."""
    here = root
    parts = [p for p in rel.split("/") if p]
    for i, name in enumerate(parts):
        try:
            entries = os.listdir(here)
        except OSError:
            return None
        exact = [n for n in entries if n == name]
        matches = exact or sorted(n for n in entries if fold(n) == fold(name))
        if not matches:
            return None
        here = here / matches[0]
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            return None
        last = i == len(parts) - 1
        wanted_file = last and want == "file"
        if not (stat.S_ISREG(mode) if wanted_file else stat.S_ISDIR(mode)):
            return None
    return here
