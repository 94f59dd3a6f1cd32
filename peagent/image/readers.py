"""Byte streams as every image path reads them: the reader protocol and three small helpers.

A build reads its source, a stream write its image, a verify its blob: each through something with
a ``read(size)`` that may return fewer bytes than asked for (a pipe, a decompressor, a socket) and
returns ``b""`` only at the end (:class:`Readable`). :func:`read_exactly` gathers such short reads
into the piece the caller works in (a frame, a write block, a file's magic bytes).
:class:`Peekable` lets a stream's first bytes be looked at (to tell its format) without fetching
them twice, and :class:`Counter` counts (and may hash) the bytes that pass through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


def read_exactly(source: Readable, size: int) -> bytes:
    """Up to ``size`` bytes: short only at the end of the stream."""
    parts = []
    while size:
        chunk = source.read(size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)  # one part is returned as it is, not copied


class Peekable:
    """A reader whose first bytes can be looked at before they are read."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._head = b""

    def peek(self, size: int) -> bytes:
        if len(self._head) < size:
            self._head += read_exactly(self._source, size - len(self._head))
        return self._head[:size]

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = (self._head, b"") if size < 0 or size >= len(self._head) else \
                (self._head[:size], self._head[size:])
            return data
        return self._source.read(size)


@dataclass
class Counter:
    """A reader that counts (and optionally hashes) the bytes read through it."""

    source: Readable
    update: Callable[[bytes], None] | None = None
    count: int = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.count += len(data)
        if self.update is not None and data:
            self.update(data)
        return data
