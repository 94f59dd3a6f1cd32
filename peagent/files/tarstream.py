"""Reading a tar stream member by member, in bounded memory, from a stream that cannot seek.

:class:`TarStream` parses the stream itself (the header formats: peagent.files.tarheader) rather
than through Python's tarfile, for two reasons. tarfile was written for archives one trusts, and
had to be fenced off from archives from elsewhere; and it reads a header in many small reads and
copies, which on a tree of small files cost more than writing the files. Here:

* **Reading.** The (decompressed) stream is read in pieces of :data:`PIECE` bytes; headers are
  sliced out of the piece at hand, and file data is handed to the caller as views of the pieces,
  never copied, never gathered whole: a file of any size streams through in bounded memory, and a
  small file is one slice and one write. (No reader thread: the image stream that feeds a file
  image already fetches, decompresses and verifies ahead in threads of its own, and one more
  thread here only made the applier wait for the GIL: measured slower.)
* **Compression.** A compressed stream (gzip, xz, bzip2, zstd, told by its magic bytes) goes
  through peagent.image.compression, which hands out bounded pieces and refuses a truncated or
  damaged stream (tarfile's own ``r|*`` decompresses without an output limit: a bomb).
* **Headers.** The extensions before one entry (pax records, GNU long names, sparse maps) may
  together take at most ``max_header`` bytes, and at most :data:`MAX_CHAIN` of them may come
  before one entry; both are checked from the sizes the headers declare, before anything is
  read, so a pax header that claims 4 GiB is refused, not read. Global pax headers (type ``g``)
  apply to every entry after them (``git archive`` writes one, with the commit id); what they hold
  together is bounded the same way.
* **Endings.** Only the end-of-archive marker (a zero block) ends a stream. A stream cut off
  between two entries or inside a header, and a damaged header anywhere, are
  :class:`~peagent.errors.ImageError`; a stream cut off inside the data the caller is reading, or
  a sparse map that claims more data than the entry holds, is :class:`DamagedStream`, which the
  caller reports with the entry's name. What was read past the
  marker (the rest of the piece at hand) must be zeros, as tar pads its output to a whole record:
  anything else is data the archive does not hold, an error rather than something left unseen.
  The stream after that piece is the caller's to check (peagent.files.stack reads it to its end).

A failure of the caller's stream itself (``stream.read`` raising OSError: a network error, say)
is carried out as :class:`StreamFailed`, so that the extractor can tell it from a failed write to
the target and let it through as it was raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from peagent.errors import ImageError, UnsafeArchiveError
from peagent.files.tarheader import (
    BLOCK,
    DIRTYPE,
    ENCODING,
    ERRORS,
    EXTENSIONS,
    GNU_SPARSE,
    LONGLINK,
    LONGNAME,
    NO_DATA,
    PAX_GLOBAL,
    REGULAR,
    ZEROS,
    HeaderError,
    Member,
    check,
    decimal,
    number,
    old_gnu_sparse,
    pairs,
    parse_header,
    pax_records,
    text,
)
from peagent.image import compression
from peagent.image.readers import Peekable, Readable

PIECE = 1 << 20  # bytes asked of the stream at a time; file data reaches the caller in views of these
MAX_CHAIN = 16  # extensions before one entry: pax, long name and long link need 3; 16 is generous


class StreamFailed(Exception):
    """The caller's stream raised ``error`` while being read."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class DamagedStream(Exception):
    """An entry's data is cut short, or does not fit what its headers say (the caller names the entry)."""


class _Source:
    """The caller's stream, its OSErrors marked as its own."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except OSError as exc:
            raise StreamFailed(exc) from exc


class TarStream:
    """The members of a tar stream, in order, and the data of each while it is the current one."""

    def __init__(self, stream: Readable, *, max_header: int) -> None:
        source = Peekable(_Source(stream))
        kind = compression.choose(source.peek(compression.HEAD), "file image")
        self._source = compression.open_decompressed(source, kind)
        self._ended = False  # the source returned b""
        self._max_header = max_header
        self._buf = b""  # the piece at hand, and a view of it to slice data from without copying
        self._view = memoryview(self._buf)
        self._pos = 0  # where in it the stream is
        self._base = 0  # the stream offset of _buf[0]
        self._left = 0  # bytes of the current member's data not yet read
        self._pad = 0  # and the padding after them, to the next header
        self._globals: dict[str, str] = {}  # records of global pax headers: for every member after them
        self._members = 0
        self.last = ""  # the name of the last member read, for messages

    def __enter__(self) -> TarStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Lets the buffered piece go; the caller's stream stays open (it is the caller's)."""
        self._buf, self._view, self._pos = b"", memoryview(b""), 0

    # --- the stream, piece by piece ----------------------------------------------------------------

    def _more(self) -> bool:
        """The next piece into the buffer (the rest of the current one must have been used); False at the end."""
        if self._ended:
            return False
        # Up to the next multiple of PIECE: after the few bytes peeked at the start, the reads line
        # up with the stream again (an image stream hands out whole frames more cheaply).
        piece = self._source.read(PIECE - (self._base + len(self._buf)) % PIECE)
        if not piece:
            self._ended = True
            return False
        self._base += len(self._buf)
        self._buf, self._view, self._pos = piece, memoryview(piece), 0
        return True

    def _take(self, size: int) -> bytes:
        """The next ``size`` bytes (fewer only at the end of the stream), as one bytes object."""
        end = self._pos + size
        if end <= len(self._buf):  # the usual case: within the piece at hand
            data = self._buf[self._pos:end]
            self._pos = end
            return data
        parts = [self._buf[self._pos:]]
        need = size - len(parts[0])
        self._pos = len(self._buf)
        while need and self._more():
            n = min(need, len(self._buf))
            parts.append(self._buf[:n])
            self._pos, need = n, need - n
        return b"".join(parts)

    def _skip(self, size: int) -> bool:
        """Passes over ``size`` bytes; False if the stream ends first."""
        while True:
            avail = len(self._buf) - self._pos
            if size <= avail:
                self._pos += size
                return True
            size -= avail
            self._pos = len(self._buf)
            if not self._more():
                return False

    @property
    def position(self) -> int:
        """Bytes of the (decompressed) stream used so far."""
        return self._base + self._pos

    # --- members -----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Member]:
        while True:
            if not self._skip(self._left + self._pad):  # what the caller did not read of the last member
                raise ImageError(f"the tar stream is damaged after the entry {self.last!r}: unexpected end of data")
            self._left = self._pad = 0
            start = self.position
            try:
                member = self._member(start)
            except HeaderError as exc:
                if self._members == 0:  # nothing of it was a tar stream
                    raise ImageError(f"the file image is not a tar stream: {exc}") from None
                raise ImageError(f"the tar stream has a damaged header ({exc}), at byte {start}, after the entry "
                                 f"{self.last!r}") from None
            if member is None:
                return
            self._members += 1
            self.last = member.name
            yield member

    def _member(self, start: int) -> Member | None:
        """The next member, its extensions applied, with the stream at its data; None at the end marker."""
        used = chain = 0  # bytes of extensions, and their number, before this member
        records: list[tuple[str, bytes]] = []
        longname = longlink = None
        while True:
            at = self._base + self._pos
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                if chain or block:
                    raise HeaderError("the stream ends inside a header: it is truncated")
                if self._members == 0:
                    raise HeaderError("empty file")
                raise ImageError(f"the tar stream ends without the end-of-archive marker: it is truncated, at byte "
                                 f"{at}, after the entry {self.last!r}")
            if block == ZEROS:
                if chain:
                    raise HeaderError("the end-of-archive marker follows an extended header")
                self._end(at)
                return None
            kind, size = check(block)
            if kind not in EXTENSIONS:
                break
            chain += 1
            if chain > MAX_CHAIN:
                raise UnsafeArchiveError(
                    f"the tar entry at byte {start} of the stream has more than {MAX_CHAIN} chained extended "
                    "headers: refused; nothing was written outside the target")
            used = self._allow(used, size, start)  # checked before reading: a declared 4 GiB is never read
            payload = self._take(size)
            if len(payload) < size or not self._skip(-size % BLOCK):
                raise HeaderError("the stream ends inside an extended header: it is truncated")
            if kind == LONGNAME:
                longname = text(payload)
            elif kind == LONGLINK:
                longlink = text(payload)
            elif kind == PAX_GLOBAL:
                self._global(pax_records(payload), start)
            else:  # x, or Solaris's X
                records += pax_records(payload)
        member = parse_header(block, kind, size, start)
        if longname is not None:
            member.name = longname.decode(ENCODING, ERRORS)
        if longlink is not None:
            member.linkname = longlink.decode(ENCODING, ERRORS)
        region = size  # bytes of data in the stream
        pax = {key: value.decode(ENCODING, ERRORS) for key, value in records}
        if self._globals:
            pax = {**self._globals, **pax}
        if pax:
            region = self._apply_pax(member, pax)
        kind = member.type  # a v7 directory ("name/", type AREGTYPE) is a directory from here on
        if kind in NO_DATA:
            region = 0
        elif region < 0:
            raise HeaderError(f"its size {region} is negative")
        map_bytes = 0
        if kind in REGULAR and (kind == GNU_SPARSE or "GNU.sparse.major" in pax or "GNU.sparse.map" in pax
                                or "GNU.sparse.size" in pax):
            map_bytes = self._sparse(member, pax, records, block, region, used, start)
        if kind == DIRTYPE:
            member.name = member.name.rstrip("/")
        self._left, self._pad = region - map_bytes, -region % BLOCK
        return member

    def _allow(self, used: int, size: int, start: int) -> int:
        """``used`` bytes of extensions so far plus ``size`` more, if max_header allows them."""
        if size < 0:
            raise HeaderError(f"an extended header's size {size} is negative")
        if used + size > self._max_header:
            raise UnsafeArchiveError(
                f"the headers of the tar entry at byte {start} of the stream take more than max_pax_header "
                f"({self._max_header} bytes): refused before reading them; nothing was written outside the target")
        return used + size

    def _global(self, records: list[tuple[str, bytes]], start: int) -> None:
        self._globals.update((key, value.decode(ENCODING, ERRORS)) for key, value in records)
        if sum(len(key) + len(value) for key, value in self._globals.items()) > self._max_header:
            raise UnsafeArchiveError(
                f"the global pax headers up to the tar entry at byte {start} of the stream hold more than "
                f"max_pax_header ({self._max_header} bytes): refused; nothing was written outside the target")

    @staticmethod
    def _apply_pax(member: Member, pax: dict[str, str]) -> int:
        """Applies the records tar readers agree on to ``member``; the size of its data in the stream."""
        member.pax_headers = pax
        if "path" in pax:
            member.name = pax["path"].rstrip("/")
        if "GNU.sparse.name" in pax:  # a sparse file's real name (the header has a made-up one)
            member.name = pax["GNU.sparse.name"]
        if "linkpath" in pax:
            member.linkname = pax["linkpath"]
        if "uid" in pax:
            member.uid = decimal(pax["uid"], "uid")
        if "gid" in pax:
            member.gid = decimal(pax["gid"], "gid")
        if "size" in pax:
            member.size = decimal(pax["size"], "size")
        return member.size

    def _sparse(self, member: Member, pax: dict[str, str], records: list[tuple[str, bytes]], block: bytes,
                region: int, used: int, start: int) -> int:
        """Sets the sparse map and the file's size of a sparse member (any of GNU tar's four ways);
        the bytes of its data that the map took (format 1.0 keeps the map there)."""
        map_bytes = 0
        if member.type == GNU_SPARSE:  # old GNU: 4 pairs in the header, then blocks of 21 while flagged
            found, extended = old_gnu_sparse(block, 386, 4)
            while extended:
                used = self._allow(used, BLOCK, start)
                more = self._take(BLOCK)
                if len(more) < BLOCK:
                    raise HeaderError("the stream ends inside a sparse header: it is truncated")
                pieces, extended = old_gnu_sparse(more, 0, 21)
                found += pieces
            member.sparse = found
            member.size = number(block[483:495], "realsize")
        elif "GNU.sparse.map" in pax:  # pax 0.1: "offset,length,offset,length..."
            member.sparse = pairs([decimal(n, "sparse map") for n in pax["GNU.sparse.map"].split(",")], "sparse map")
        elif "GNU.sparse.size" in pax:  # pax 0.0: offset and numbytes records, repeated in order
            numbers = [decimal(v.decode(ENCODING, ERRORS), "sparse map") for k, v in records
                       if k in ("GNU.sparse.offset", "GNU.sparse.numbytes")]
            member.sparse = pairs(numbers, "sparse map")
        elif pax.get("GNU.sparse.major") == "1" and pax.get("GNU.sparse.minor") == "0":
            member.sparse, map_bytes = self._sparse_map(region, used, start)
        else:  # its data would be read as the file's, map and all: a wrong file is worse than none
            raise HeaderError(f"its GNU sparse format {pax.get('GNU.sparse.major')}.{pax.get('GNU.sparse.minor')} "
                              "is not one peagent reads (0.0, 0.1, 1.0)")
        real = pax.get("GNU.sparse.realsize", pax.get("GNU.sparse.size"))
        if real is not None:
            member.size = decimal(real, "sparse size")
        return map_bytes

    def _sparse_map(self, region: int, used: int, start: int) -> tuple[list[tuple[int, int]], int]:
        """Pax sparse 1.0: the map at the start of the data, decimal numbers one a line (their count,
        then offset and length of each piece), padded to a whole block."""
        lines: list[bytes] = []
        rest = b""
        count = -1
        taken = 0
        while count < 0 or len(lines) < 1 + 2 * count:
            if taken + BLOCK > region:
                raise HeaderError("its sparse map runs past its data")
            used = self._allow(used, BLOCK, start)
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                raise HeaderError("the stream ends inside a sparse map: it is truncated")
            taken += BLOCK
            *done, rest = (rest + block).split(b"\n")
            lines += done
            if count < 0 and lines:
                count = decimal(lines[0].decode(ENCODING, ERRORS), "sparse map count")
        numbers = [decimal(line.decode(ENCODING, ERRORS), "sparse map") for line in lines[1:1 + 2 * count]]
        return pairs(numbers, "sparse map"), taken

    def _end(self, at: int) -> None:
        """At the end-of-archive marker: what was read past it must be padding (zeros)."""
        if self._buf.count(0, self._pos) != len(self._buf) - self._pos:
            raise ImageError(f"the tar stream has data after its end-of-archive marker (at byte {at}, after the "
                             f"entry {self.last!r}): it is not one whole archive")

    # --- data --------------------------------------------------------------------------------------

    def data(self, stored: int) -> Iterable[memoryview]:
        """The next ``stored`` bytes of data of the current member, as they are in the stream, in
        pieces: views of what was read, never copied, at most :data:`PIECE` bytes each.

        For a sparse member these are its data extents back to back, holes left out: the caller
        places them by ``member.sparse``.
        """
        if stored > self._left:
            raise DamagedStream(f"its headers declare {stored} bytes of data, but the entry holds {self._left}")
        end = self._pos + stored
        if end <= len(self._buf):  # all in the piece at hand: a small file, one view
            piece = self._view[self._pos:end]
            self._pos = end
            self._left -= stored
            return (piece,) if stored else ()
        return self._pieces(stored)

    def _pieces(self, stored: int) -> Iterator[memoryview]:
        while stored:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._more():
                    raise DamagedStream("unexpected end of data")
                continue
            n = min(avail, stored)
            piece = self._view[self._pos:self._pos + n]
            self._pos += n
            self._left -= n
            stored -= n
            yield piece
