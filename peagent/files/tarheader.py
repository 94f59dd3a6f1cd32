"""Reading tar headers: the 512-byte ustar/GNU header block, pax records, GNU sparse maps.

A tar stream is a sequence of 512-byte blocks (peagent.files.pax writes them; this module reads
them). Each entry starts with a header block: name, mode, numeric owner, size, mtime, type, link
target, device numbers, and a checksum over the block; its data follows, padded to a whole
block. Three extensions put more before an entry than a header block holds, each as a
pseudo-entry whose data is the extension:

* **pax** (POSIX.1-2001): type ``x`` carries records ``LEN key=value\\n`` for the next entry
  (a path of any length, sizes past 8 GiB, nanosecond times, xattrs, ACLs); type ``g`` the same
  for every entry that follows (a "global" header).
* **GNU long names**: type ``L`` holds the next entry's name, type ``K`` its link target.
* **GNU sparse files**: the old GNU header (type ``S``) carries a map of where the stored data
  goes, continued in extension blocks; pax sparse format 0.0 and 0.1 put the map in records,
  format 1.0 at the start of the entry's data.

Numbers are octal text, or big-endian binary ("base-256", GNU tar) when the first byte has its
top bit set. Everything here works on bytes already read; peagent.files.tarstream reads the
stream, follows extension chains and enforces the limits. Any malformed field is a
:class:`HeaderError` naming it: a damaged stream, never a guess.
"""

from __future__ import annotations

BLOCK = 512
ZEROS = bytes(BLOCK)

REGTYPE, AREGTYPE, CONTTYPE = b"0", b"\0", b"7"
LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = b"1", b"2", b"3", b"4", b"5", b"6"
PAX, PAX_GLOBAL, SOLARIS_PAX = b"x", b"g", b"X"
LONGNAME, LONGLINK, GNU_SPARSE = b"L", b"K", b"S"

EXTENSIONS = frozenset((PAX, PAX_GLOBAL, SOLARIS_PAX, LONGNAME, LONGLINK))  # pseudo-entries for the next entry
REGULAR = frozenset((REGTYPE, AREGTYPE, CONTTYPE, GNU_SPARSE))
# Types whose size field says nothing about data: none follows them (POSIX; tarfile and GNU tar
# read them so). Every other type, unknown ones included, is followed by ``size`` bytes of data.
NO_DATA = frozenset((LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE))

POSIX_MAGIC = b"ustar\x00"  # ustar and pax headers: the prefix field extends the name
ENCODING, ERRORS = "utf-8", "surrogateescape"  # names and values back to their exact bytes with encode()


class HeaderError(Exception):
    """A header block or an extension is malformed; the message says which field and how."""


class Member:
    """One entry of the stream: what its header and the extensions before it say.

    The attributes are those of tarfile.TarInfo that the extractor reads, so that code written
    against either reads the same. For a sparse file ``size`` is the file's size and ``sparse``
    its map: (offset, length) of each stored piece of data, in stream order.
    """

    __slots__ = ("devmajor", "devminor", "gid", "linkname", "mode", "mtime", "name", "offset", "pax_headers",
                 "size", "sparse", "type", "uid")

    def __init__(self, name: str, type: bytes, size: int = 0, mode: int = 0o644, uid: int = 0, gid: int = 0,
                 mtime: int = 0, linkname: str = "", offset: int = 0) -> None:
        self.name, self.type, self.size, self.mode = name, type, size, mode
        self.uid, self.gid, self.mtime, self.linkname = uid, gid, mtime, linkname
        self.devmajor = self.devminor = 0
        self.pax_headers: dict[str, str] = {}
        self.sparse: list[tuple[int, int]] | None = None
        self.offset = offset  # where its first header (or extension) starts in the stream

    def __repr__(self) -> str:
        return f"<Member {self.name!r} type {self.type!r} size {self.size}>"

    def isreg(self) -> bool:
        return self.type in REGULAR

    def isdir(self) -> bool:
        return self.type == DIRTYPE

    def issym(self) -> bool:
        return self.type == SYMTYPE

    def islnk(self) -> bool:
        return self.type == LNKTYPE

    def ischr(self) -> bool:
        return self.type == CHRTYPE

    def isblk(self) -> bool:
        return self.type == BLKTYPE

    def isfifo(self) -> bool:
        return self.type == FIFOTYPE


def number(field: bytes, what: str) -> int:
    """A numeric header field: octal text (NUL- or space-terminated), or base-256 binary."""
    digits = field.rstrip(b"\0 ").lstrip(b" ")
    if digits.isdigit():  # the usual "0000644\0": one test, then int() (which refuses an 8 or a 9)
        try:
            return int(digits, 8)
        except ValueError:
            pass
    elif field[0] & 0x80:
        # GNU base-256: the bits after the marker bit are a two's complement number (0xff... negative).
        head = (field[0] & 0x7F) | (0x80 if field[0] & 0x40 else 0)
        return int.from_bytes(bytes((head,)) + field[1:], "big", signed=True)
    else:
        end = field.find(0)  # text, then a NUL, then anything (some tars leave junk after the NUL)
        digits = (field if end < 0 else field[:end]).strip(b" ")
        if not digits:
            return 0
        if digits.isdigit():
            try:
                return int(digits, 8)
            except ValueError:
                pass
    raise HeaderError(f"its {what} field {bytes(field)!r} is not an octal number")


def text(field: bytes) -> bytes:
    """A string field: up to its first NUL."""
    end = field.find(0)
    return field if end < 0 else field[:end]


def checksum_ok(block: bytes) -> bool:
    """Whether the block's checksum field matches its bytes (the field itself counted as spaces).

    Some old tars summed signed chars; that sum is accepted too, as GNU tar and tarfile do.
    """
    try:
        stored = number(block[148:156], "checksum")
    except HeaderError:
        return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:])  # 256: the eight spaces
    if stored == unsigned:
        return True
    high = sum(1 for b in block[:148] if b & 0x80) + sum(1 for b in block[156:] if b & 0x80)
    return stored == unsigned - 256 * high


def check(block: bytes) -> tuple[bytes, int]:
    """The type and size of a (non-zero) header block, once its checksum is verified: all an
    extension needs (its other fields say nothing)."""
    if not checksum_ok(block):
        raise HeaderError("bad checksum")
    return block[156:157], number(block[124:136], "size")


def parse_header(block: bytes, kind: bytes, size: int, offset: int) -> Member:
    """The entry a header block describes (checked by :func:`check`), before extensions are applied."""
    name = text(block[:100])
    if block[257:263] == POSIX_MAGIC and block[345] != 0:  # ustar splits long names into prefix/name
        name = text(block[345:500]) + b"/" + name
    member = Member(name.decode(ENCODING, ERRORS), kind, size, number(block[100:108], "mode"),
                    number(block[108:116], "uid"), number(block[116:124], "gid"), number(block[136:148], "mtime"),
                    "", offset)
    # Link targets and device numbers are read only where they mean something (some tars leave
    # junk in them elsewhere, and a tree is mostly files).
    if kind in (LNKTYPE, SYMTYPE):
        member.linkname = text(block[157:257]).decode(ENCODING, ERRORS)
    elif kind in (CHRTYPE, BLKTYPE):
        member.devmajor = number(block[329:337], "devmajor")
        member.devminor = number(block[337:345], "devminor")
    if kind == AREGTYPE and member.name.endswith("/"):  # old (v7) tars: a directory is a file named "x/"
        member.type = DIRTYPE
    return member


def pax_records(data: bytes) -> list[tuple[str, bytes]]:
    """The records of a pax extended header's data, in order: (keyword, raw value).

    A record is ``LEN key=value\\n``, LEN counting the whole record, itself included. The data
    may end in NUL padding (some writers pad the records themselves), which ends the records.
    """
    records = []
    pos, end = 0, len(data)
    while pos < end and data[pos] != 0:
        space = data.find(b" ", pos, min(end, pos + 21))  # 20 digits: more than any length that fits
        if space <= pos or not data[pos:space].isdigit():
            raise HeaderError(f"pax record at byte {pos} of its header has no length")
        stop = pos + int(data[pos:space])
        if stop <= space + 2 or stop > end or data[stop - 1] != 0x0A:
            raise HeaderError(f"pax record at byte {pos} of its header is cut short or malformed (its length "
                              f"{int(data[pos:space])} does not end at a newline inside the {end}-byte header)")
        keyword, equals, value = data[space + 1:stop - 1].partition(b"=")
        if not keyword or not equals:
            raise HeaderError(f"pax record at byte {pos} of its header is not keyword=value")
        records.append((keyword.decode(ENCODING, ERRORS), value))
        pos = stop
    return records


def decimal(value: str, what: str) -> int:
    """A pax number (size, uid, gid, a sparse map entry): decimal digits only."""
    if not value.isdigit() or not value.isascii():
        raise HeaderError(f"its pax {what} {value!r} is not a decimal number")
    return int(value)


def pairs(numbers: list[int], what: str) -> list[tuple[int, int]]:
    if len(numbers) % 2:
        raise HeaderError(f"its {what} has an odd count of numbers")
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def old_gnu_sparse(block: bytes, start: int, count: int) -> tuple[list[tuple[int, int]], bool]:
    """The (offset, length) pairs of an old GNU sparse header (``count`` 24-byte pairs at ``start``),
    up to the first empty one, and whether an extension block follows (the byte after the pairs)."""
    found = []
    for i in range(count):
        at = start + 24 * i
        if block[at] == 0:  # an unused pair: the map goes on in the next block, if any
            break
        found.append((number(block[at:at + 12], "sparse offset"), number(block[at + 12:at + 24], "sparse length")))
    return found, block[start + 24 * count] != 0
