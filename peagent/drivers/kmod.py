"""What a Linux kernel module says about itself, read from the file without running modinfo.

A kernel module (``.ko``) is an ELF relocatable object. Among its sections, ``.modinfo`` holds
the module's metadata as NUL-separated ``key=value`` records, written by the ``MODULE_*`` macros
and by modpost (``include/linux/module.h``, ``scripts/mod/modpost.c``)::

    alias=pci:v00008086d0000100Esv*sd*bc*sc*i*\\0firmware=e100/d101m_ucode.bin\\0depends=\\0
    name=e1000\\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \\0

The records a driver store needs are:

* ``alias``: glob patterns over modalias strings (``/sys/bus/*/devices/*/modalias``). udev loads
  a module when one of its aliases matches a device's modalias; kmod matches with
  ``fnmatch(pattern, modalias, 0)`` (``libkmod/libkmod-index.c``), which :func:`matches` repeats
  with :func:`fnmatch.fnmatchcase` (case-sensitive, ``*``, ``?`` and ``[...]``, ``/`` not special);
* ``firmware``: the files under ``/lib/firmware`` the module may request;
* ``vermagic``: the kernel the module was built for; its first word is the kernel release
  (``uname -r``), and a kernel loads only modules whose vermagic matches its own;
* ``name`` (modpost adds it; older modules lack it, then the file name says it) and ``depends``
  (comma-separated names of the modules it needs loaded first).

Distributions may compress modules: ``.ko.xz`` (Debian, CONFIG_MODULE_COMPRESS_XZ), ``.ko.zst``
and ``.ko.gz``. The compression is recognised by its magic bytes, not the file name.

The ELF part is small enough to do by hand with :mod:`struct` (System V gABI, "Sections"): the
file header gives the offset, count and entry size of the section headers, and the index of the
section holding the section names (``e_shstrndx``); each section header gives its name's offset
in that table, and the section's offset and size in the file. Both ELF classes (32/64-bit) and
both byte orders are read, since the table of field offsets is all that differs; ``e_machine``
tells the architecture the module was built for.
"""

from __future__ import annotations

import fnmatch
import io
import lzma
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import zstandard

# No module is anywhere near this (the largest, amdgpu, is ~20 MiB); it bounds what a hostile
# compressed file can make us allocate.
MAX_MODULE = 256 << 20
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")

# e_machine values (gABI "Machine") as the names uname -m gives.
MACHINES = {3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 40: "arm", 62: "x86_64",
            183: "aarch64", 243: "riscv64", 258: "loongarch64"}


class ModuleError(ValueError):
    """The file is not a readable kernel module: not ELF, truncated, or without a .modinfo section."""


@dataclass(frozen=True)
class ModInfo:
    name: str
    aliases: tuple[str, ...]  # modalias glob patterns, in file order
    firmware: tuple[str, ...]  # paths relative to /lib/firmware
    depends: tuple[str, ...]
    vermagic: str
    release: str  # vermagic's first word: the kernel release the module loads into
    machine: str  # the ELF architecture as uname -m names it (x86_64, aarch64, ...)
    description: str = ""
    license: str = ""


def is_module_name(name: str) -> bool:
    return name.endswith(MODULE_SUFFIXES)


def matches(pattern: str, modalias: str) -> bool:
    """Whether a module alias pattern matches a device's modalias, as kmod decides it."""
    return fnmatch.fnmatchcase(modalias, pattern)


def read_module(path: Path) -> ModInfo:
    """The modinfo of a module file (compressed or not); ModuleError if it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModuleError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_module(data, str(path))


def parse_module(data: bytes, path: str) -> ModInfo:
    """The modinfo of a module's bytes; ``path`` names it in errors and gives the fallback name."""
    elf = decompress(data, path)
    records = modinfo_records(section(elf, ".modinfo", path))
    values: dict[str, list[str]] = {}
    for key, value in records:
        values.setdefault(key, []).append(value)

    def one(key: str) -> str:
        return values.get(key, [""])[0]

    vermagic = one("vermagic")
    base = path.rsplit("/", 1)[-1]
    base = base[: base.index(".ko")] if ".ko" in base else base
    # The kernel knows modules by their name with '-' written '_' (kmod's modname_normalize).
    name = (one("name") or base).replace("-", "_")
    depends = tuple(d for d in one("depends").split(",") if d)
    return ModInfo(name=name, aliases=tuple(values.get("alias", ())), firmware=tuple(values.get("firmware", ())),
                   depends=depends, vermagic=vermagic, release=vermagic.split()[0] if vermagic.split() else "",
                   machine=_machine(elf), description=one("description"), license=one("license"))


def decompress(data: bytes, path: str) -> bytes:
    """The ELF bytes of a module file, xz, zstd or gzip-compressed or not (told by magic bytes)."""
    try:
        if data.startswith(b"\xfd7zXZ\x00"):
            out = lzma.LZMADecompressor().decompress(data, max_length=MAX_MODULE + 1)
        elif data.startswith(b"\x28\xb5\x2f\xfd"):
            out = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(MAX_MODULE + 1)
        elif data.startswith(b"\x1f\x8b"):
            out = zlib.decompressobj(wbits=31).decompress(data, MAX_MODULE + 1)
        else:
            return data
    except (lzma.LZMAError, zstandard.ZstdError, zlib.error, EOFError) as exc:
        raise ModuleError(f"{path}: compressed data is damaged ({exc})") from None
    if len(out) > MAX_MODULE:
        raise ModuleError(f"{path}: decompresses to more than {MAX_MODULE >> 20} MiB; no module is that large")
    return out


# Field offsets of the ELF file header and the format of one section header, per ELF class
# (gABI "ELF Header" and "Section Header"): (e_shoff format, its offset, offset of e_shentsize,
# section header format, its size).
_CLASSES = {1: ("I", 0x20, 0x2E, "IIIIIIIIII", 40), 2: ("Q", 0x28, 0x3A, "IIQQQQIIQQ", 64)}
_SHN_XINDEX = 0xFFFF


def section(elf: bytes, wanted: str, path: str) -> bytes:
    """The contents of the section named ``wanted``; ModuleError if the ELF is broken or lacks it."""
    if len(elf) < 0x40 or elf[:4] != b"\x7fELF":
        raise ModuleError(f"{path}: not an ELF file (a kernel module is one); starts with {elf[:4]!r}")
    if elf[4] not in _CLASSES or elf[5] not in (1, 2):
        raise ModuleError(f"{path}: unknown ELF class {elf[4]} or byte order {elf[5]}")
    order = "<" if elf[5] == 1 else ">"
    off_fmt, off_at, ent_at, sh_fmt, sh_size = _CLASSES[elf[4]]
    (shoff,) = struct.unpack_from(order + off_fmt, elf, off_at)
    shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, ent_at)
    if shoff == 0 or shentsize < sh_size:
        raise ModuleError(f"{path}: the ELF file has no section headers")

    def header(i: int) -> tuple[int, ...]:
        at = shoff + i * shentsize
        if at + sh_size > len(elf):
            raise ModuleError(f"{path}: truncated: section header {i} at byte {at} is past the end ({len(elf)} bytes)")
        return struct.unpack_from(order + sh_fmt, elf, at)

    # More than 0xff00 sections: the real count and name-table index live in section 0 (gABI).
    first = header(0)
    shnum = shnum or first[5]
    shstrndx = first[6] if shstrndx == _SHN_XINDEX else shstrndx
    if shstrndx >= shnum:
        raise ModuleError(f"{path}: the section name table index {shstrndx} is out of range ({shnum} sections)")

    def contents(h: tuple[int, ...]) -> bytes:
        offset, size = h[4], h[5]
        if offset + size > len(elf):
            raise ModuleError(f"{path}: truncated: a section ends at byte {offset + size}, the file has {len(elf)}")
        return elf[offset:offset + size]

    names = contents(header(shstrndx))
    target = wanted.encode()
    for i in range(shnum):
        h = header(i)
        end = names.find(b"\0", h[0])
        if names[h[0]:end if end >= 0 else None] == target:
            return contents(h)
    raise ModuleError(f"{path}: no {wanted} section: an ELF object, but not a kernel module")


def modinfo_records(data: bytes) -> list[tuple[str, str]]:
    """The key=value records of a .modinfo section, in order (empty strings are alignment padding)."""
    records = []
    for raw in data.split(b"\0"):
        if b"=" in raw:
            key, _, value = raw.decode("utf-8", "replace").partition("=")
            records.append((key, value))
    return records


def _machine(elf: bytes) -> str:
    (number,) = struct.unpack_from("<H" if elf[5] == 1 else ">H", elf, 0x12)
    return MACHINES.get(number, f"elf-machine-{number}")
