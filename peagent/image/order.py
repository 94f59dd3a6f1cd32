"""Ordering writes so that no frame overwrites blocks another frame still has to read.

When a new image is assembled in place from blocks of the old one, frame j may read blocks that
lie in frame r's region. If r were written first, j would read the new r, not the old blocks. So
every such read is an edge "j before r" (a frame that reads only its own region needs none: all
its blocks are read before it is written), and the actions are sorted topologically with Kahn's
algorithm, lowest frame first among those ready: an image without moved blocks is written front
to back, which is also what makes a resume after a power loss cheap to find (peagent.image.inplace).

Blocks can move in cycles (frames 1 and 2 swapped). A cycle has no valid order, so one of its
frames stops reading the disk: it is *converted* to its fallback, a fetch of the same data, the
one of the cycle whose extra fetch costs least. Its edges disappear and the sort goes on. Finding
a cycle is cheap: when no frame is ready, every frame left waits for a reader that is itself
waiting, so walking from frame to reader must loop.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable


def safe_order(n: int, reads: dict[int, set[int]], extra_cost: Callable[[int], int],
               convert: Callable[[int], None]) -> array:
    """Frames 0..n-1 in an order where each frame j comes before every frame in ``reads[j]`` (the
    regions it reads); ``convert(j)`` is called for frames whose reads had to go (cycles), chosen by
    the least ``extra_cost(j)``."""
    reads = {j: set(r) for j, r in reads.items() if r}
    readers: dict[int, list[int]] = {}
    indegree = array("I", bytes(4 * n))
    for j, regions in reads.items():
        for r in regions:
            readers.setdefault(r, []).append(j)
            indegree[r] += 1
    ready = [j for j in range(n) if indegree[j] == 0]
    heapq.heapify(ready)
    emitted = bytearray(n)
    order = array("I")

    def release(j: int) -> None:
        for r in reads.pop(j, ()):
            indegree[r] -= 1
            if indegree[r] == 0:
                heapq.heappush(ready, r)

    while len(order) < n:
        if not ready:
            victim = min(_cycle(emitted, readers, reads), key=lambda j: (extra_cost(j), j))
            convert(victim)
            release(victim)
            continue
        j = heapq.heappop(ready)
        order.append(j)
        emitted[j] = 1
        release(j)
    return order


def _cycle(emitted: bytearray, readers: dict[int, list[int]], reads: dict[int, set[int]]) -> list[int]:
    """A cycle among the frames still waiting: each waits for a reader, so walking readers loops."""
    x = next(j for j in range(len(emitted)) if not emitted[j])
    seen: dict[int, int] = {}
    path: list[int] = []
    while x not in seen:
        seen[x] = len(path)
        path.append(x)
        x = next(z for z in readers[x] if not emitted[z] and x in reads.get(z, ()))
    return path[seen[x]:]
