"""Which bytes of the blobs to ask for: the pieces a write needs, merged into range requests.

A write needs many pieces of a blob (its frames), in an order; one HTTP request per frame would
pay a round trip per 100 KB. :func:`coalesce` merges pieces that are adjacent in a blob (or nearly:
``max_gap``) into ranges of at most ``max_span`` bytes, one request each, and yields them in the
order of their first piece, so that a consumer walking the pieces in order always finds the range
of the next piece already handed out. Pieces of different blobs (a differencing image's own blob
and its base's) interleave: each blob has a range open at a time. Pure: no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

MAX_SPAN = 4 << 20  # bytes per request at most


@dataclass(frozen=True)
class Extent:
    """A piece of blob ``blob`` that the writer needs."""

    blob: int
    start: int
    length: int


@dataclass(frozen=True)
class Range:
    """One request: bytes [start, end) of a blob, and the extents it carries (sequence number,
    offset in the range, length)."""

    blob: int
    start: int
    end: int
    extents: tuple[tuple[int, int, int], ...] = ()

    @property
    def length(self) -> int:
        return self.end - self.start


def coalesce(extents: Iterable[Extent], max_span: int | Callable[[], int] = MAX_SPAN,
             max_gap: int = 0) -> Iterator[Range]:
    """Merge extents (numbered in the order given) into ranges, yielded in the order of their first
    extent, so that a consumer walking the extents in order finds each one's range already given.

    Each blob has one open range at a time; an extent extends it when it starts within ``max_gap``
    bytes after its end (or lies inside it) and the range stays within ``max_span`` (a number, or a
    function asked each time: the fetcher's :meth:`RangeFetcher.span_hint`)."""
    open_: dict[int, tuple[int, list]] = {}  # blob -> (first sequence number, [start, end, extents])
    closed: list[tuple[int, Range]] = []

    def close(blob: int) -> None:
        first, (start, end, parts) = open_.pop(blob)
        heapq.heappush(closed, (first, Range(blob, start, end, tuple(parts))))

    for seq, e in enumerate(extents):
        cur = open_.get(e.blob)
        if cur is not None:
            start, end, parts = cur[1]
            span = max_span() if callable(max_span) else max_span
            inside = start <= e.start and e.start + e.length <= end
            follows = end <= e.start <= end + max_gap and e.start + e.length - start <= span
            if inside or follows:
                cur[1][1] = max(end, e.start + e.length)
                parts.append((seq, e.start - start, e.length))
                continue
            close(e.blob)
        open_[e.blob] = (seq, [e.start, e.start + e.length, [(seq, 0, e.length)]])
        oldest_open = min(first for first, _ in open_.values())
        while closed and closed[0][0] < oldest_open:
            yield heapq.heappop(closed)[1]
    for blob in list(open_):
        close(blob)
    while closed:
        yield heapq.heappop(closed)[1]
