"""Reading a tar stream member by member, in bounded memory, from a stream that cannot seek.

Python's tarfile reads streams (mode ``r|``) but was written for archives one trusts, and four of
its habits need fencing off for archives from elsewhere. :class:`TarStream` does so:

* **Compression.** tarfile's own ``r|*`` decompresses without an output limit, so a megabyte of
  bzip2 can become gigabytes in memory before a single header is looked at. A compressed stream
  (gzip, xz, bzip2, zstd, told by its magic bytes) goes through peagent.image.compression
  instead, which hands out bounded pieces and refuses a truncated or damaged stream.
* **Headers.** tarfile reads a member's headers whole: a pax header or a GNU long name that
  declares 4 GiB is one 4 GiB read, and chained extended headers recurse. tarfile is given a
  TarInfo subclass that counts what one member's headers read (pax records, long names, sparse
  maps: the header bytes of that entry) and refuses past ``max_header`` bytes, or past
  :data:`MAX_CHAIN` chained headers, before reading the excess.
* **Memory.** tarfile keeps every TarInfo it has read (``TarFile.members``): gigabytes for ten
  million entries. They are dropped as the stream goes.
* **Endings.** tarfile takes a damaged header in mid-stream, or a stream cut off between two
  members, for the end of the archive and stops quietly. Here only the end-of-archive marker (a
  zero block) ends a stream; anything else is an :class:`~peagent.errors.ImageError`.

A failure of the caller's stream itself (``stream.read`` raising OSError: a network error, say)
is carried out as :class:`StreamFailed`, so that the extractor can tell it from a failed write to
the target and let it through as it was raised.
"""

from __future__ import annotations

import copy
import tarfile
from collections.abc import Iterator
from typing import IO

from peagent.errors import ImageError, UnsafeArchiveError
from peagent.image import compression
from peagent.image.readers import Peekable, Readable

BLOCK = tarfile.BLOCKSIZE
BUFFER = 64 << 10  # tarfile's reads from the stream: larger makes its small header reads copy more (1 MiB: 1.7x slower)
MAX_CHAIN = 16  # headers before one member: pax, long name and long link need 3; 16 is generous


class StreamFailed(Exception):
    """The caller's stream raised ``error`` while being read."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Source:
    """The caller's stream, its OSErrors marked as its own."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except OSError as exc:
            raise StreamFailed(exc) from exc


class _Bounded:
    """What tarfile reads through while it parses one member's headers: at most ``limit`` bytes."""

    def __init__(self, raw: IO[bytes], limit: int, max_header: int) -> None:
        self.raw = raw
        self.limit = limit
        self.max_header = max_header
        self.start = raw.tell()
        self.used = 0
        self.chain = 0

    def read(self, size: int) -> bytes:
        if self.used + size > self.limit:  # checked before reading: a declared 4 GiB is never read
            raise UnsafeArchiveError(
                f"the headers of the tar entry at byte {self.start} of the stream take more than max_pax_header "
                f"({self.max_header} bytes): refused before reading them; nothing was written outside the target")
        self.used += size
        return self.raw.read(size)

    def tell(self) -> int:
        return self.raw.tell()

    def __getattr__(self, name: str) -> object:
        return getattr(self.raw, name)


class _Ending:
    """Why tarfile's last header read did not give a member (None: the end-of-archive marker)."""

    error: tarfile.HeaderError | None = None
    offset = 0


def _guarded(max_header: int, ending: _Ending) -> type[tarfile.TarInfo]:
    """A TarInfo class that bounds header reads (see the module's docstring) and records damaged endings."""
    # The pax, long-name and sparse parsing of tarfile reads ``tarfile.fileobj`` and recurses
    # through ``fromtarfile`` for the header that follows; both are documented extension points
    # of TarInfo (tarfile's "_proc_*" comment). The outermost call swaps in the bounded reader.
    limit = max_header + (MAX_CHAIN + 1) * BLOCK  # the 512-byte header blocks themselves are not counted

    class GuardedTarInfo(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
            raw = tf.fileobj
            assert raw is not None
            if isinstance(raw, _Bounded):  # the header after a pax header or a long name
                raw.chain += 1
                if raw.chain > MAX_CHAIN:
                    raise UnsafeArchiveError(
                        f"the tar entry at byte {raw.start} of the stream has more than {MAX_CHAIN} chained "
                        "extended headers: refused; nothing was written outside the target")
                return super().fromtarfile(tf)
            bounded = _Bounded(raw, limit, max_header)
            tf.fileobj = bounded
            try:
                return super().fromtarfile(tf)
            except tarfile.EOFHeaderError:
                raise
            except tarfile.HeaderError as exc:
                ending.error, ending.offset = exc, bounded.start
                raise
            finally:
                tf.fileobj = raw

    return GuardedTarInfo


class TarStream:
    """The members of a tar stream, in order, and the data of each while it is the current one."""

    def __init__(self, stream: Readable, *, max_header: int) -> None:
        source = Peekable(_Source(stream))
        kind = compression.choose(source.peek(compression.HEAD), "file image")
        self._ending = _Ending()
        try:
            self._tar = tarfile.open(  # noqa: SIM115 (closed by close(): it lives across the iteration)
                fileobj=compression.open_decompressed(source, kind), mode="r|", bufsize=BUFFER,
                tarinfo=_guarded(max_header, self._ending), encoding="utf-8", errors="surrogateescape")
        except tarfile.TarError as exc:  # a first header that is not one
            raise ImageError(f"the file image is not a tar stream: {exc}") from None
        self.last = ""  # the name of the last member read, for messages

    def __enter__(self) -> TarStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Lets tarfile go; the caller's stream stays open (it is the caller's)."""
        self._tar.close()

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            try:
                member = self._tar.next()
            except tarfile.TarError as exc:
                raise ImageError(f"the tar stream is damaged after the entry {self.last!r}: {exc}") from None
            self._tar.members.clear()  # tarfile would keep them all
            if member is None:
                self._check_end()
                return
            self.last = member.name
            yield member

    def _check_end(self) -> None:
        error = self._ending.error
        if error is None:
            return
        if isinstance(error, tarfile.EmptyHeaderError):
            why = "ends without the end-of-archive marker: it is truncated"
        else:
            why = f"has a damaged header ({error})"
        raise ImageError(f"the tar stream {why}, at byte {self._ending.offset}, after the entry {self.last!r}")

    def data(self, member: tarfile.TarInfo, stored: int) -> IO[bytes]:
        """A reader of the ``stored`` bytes of data of the current member, as they are in the stream.

        For a sparse member these are its data extents back to back, holes left out: the caller
        places them by ``member.sparse`` (tarfile's own reader would produce every hole's zeros).
        """
        view = copy.copy(member)
        view.type, view.sparse, view.size = tarfile.REGTYPE, None, stored
        reader = self._tar.extractfile(view)
        assert reader is not None
        return reader
