"""Minimal kernel modules for tests: an ELF file with a .modinfo section, nothing else."""

from __future__ import annotations

import struct


def make_module(modinfo: bytes, *, elf_class: int = 2, big_endian: bool = False, machine: int = 62,
                with_modinfo: bool = True) -> bytes:
    """A minimal relocatable ELF: a NULL section, .text, .modinfo and .shstrtab, section headers last.

    The same layout as a real .ko (sections first, the header table at e_shoff), nothing else.
    """
    order = ">" if big_endian else "<"
    names = b"\0.text\0.modinfo\0.shstrtab\0" if with_modinfo else b"\0.text\0.rodata\0.shstrtab\0"
    header_size, sh_fmt = (64, "IIQQQQIIQQ") if elf_class == 2 else (52, "IIIIIIIIII")
    body = bytearray(header_size)
    sections = [(0, 0, 0, 0)]  # (name offset, type, offset, size)
    for name_offset, kind, data in ((1, 1, b"\x90" * 16), (7, 1, modinfo), (16, 3, names)):
        sections.append((name_offset, kind, len(body), len(data)))
        body += data
    body += b"\0" * (-len(body) % 8)
    shoff = len(body)
    for name_offset, kind, offset, size in sections:
        body += struct.pack(order + sh_fmt, name_offset, kind, 0, 0, offset, size, 0, 0, 1, 0)
    ident = b"\x7fELF" + bytes([elf_class, 2 if big_endian else 1, 1]) + b"\0" * 9
    if elf_class == 2:
        head = struct.pack(order + "HHIQQQIHHHHHH", 1, machine, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(sections), 3)
    else:
        head = struct.pack(order + "HHIIIIIHHHHHH", 1, machine, 1, 0, 0, shoff, 0, 52, 0, 0, 40, len(sections), 3)
    body[:header_size] = ident + head
    return bytes(body)
