"""Finding where a block is, by its short hash, without a Python object per block.

Reuse needs one question answered many times: "which 4 KiB block of this disk (or of that base
image) holds the block whose short hash is h?". A ``dict`` of a 10 GiB image's 2.6 million hashes
would take some 300 MB, and even sorting them as Python integers some 100 MB for a moment; the PE
has no room for that. :class:`BlockFinder` answers it with two flat arrays instead: an
open-addressing hash table (linear probing) holding only the hashes a plan *wants*, filled by one
pass over the index where they may be found. The short hashes are prefixes of sha256, so they are
uniformly spread already and the table needs no hash function of its own: the low bits of a hash
are its slot. 12 bytes per slot at a load of at most 3/4: 2.6 million wanted hashes take at most
48 MB, and usually a plan wants far fewer (blocks found at their own position are never looked up).

:class:`BlockLocator` is the same table wanting every block of one index: "does the base hold
this block, anywhere?" for a differencing build and ``peagent image diff``, "where in the base is
it?" for ``peagent image verify``.

A found block is a hint only: whatever is assembled from it is checked against its frame's sha256
before it is written (docs/image-format.md), so a collision of short hashes costs a fetch, never a
wrong byte.
"""

from __future__ import annotations

import contextlib
import sys
from array import array
from collections.abc import Callable, Collection

from peagent.image.format import BLOCK_HASH_SIZE, ZERO_BLOCK_HASH, BlockIndex

UNKNOWN = bytes(BLOCK_HASH_SIZE)  # a block whose content nobody knows (in a disk view)
_EMPTY_KEY = 0  # a free slot; the all-zero short hash (UNKNOWN) is never wanted
_NOWHERE = 0xFFFFFFFF
_SCAN_CHUNK = 1 << 20  # hashes converted to integers at a time (8 MiB)


def key_of(short_hash: bytes | memoryview) -> int:
    """The integer form of a short hash, the same as ``array('Q').frombytes`` gives."""
    return int.from_bytes(short_hash, sys.byteorder)


ZERO_KEY = key_of(ZERO_BLOCK_HASH)


def keys_of(hashes: bytes | bytearray | memoryview) -> array:
    """All short hashes of an index as integers (one C-level conversion)."""
    out = array("Q")
    out.frombytes(hashes)
    return out


class BlockFinder:
    """For each wanted short hash: one block number where it was found (the best by ``rank``)."""

    def __init__(self, wanted: Collection[int]) -> None:
        # Sized for every hash given, repeats included: finding the distinct ones first would take
        # a set of Python integers, the very thing this table is here to avoid.
        capacity = 8
        while capacity * 3 < len(wanted) * 4:
            capacity *= 2
        self._mask = mask = capacity - 1
        self._keys = keys = array("Q", bytes(8 * capacity))
        self._where = array("I", [_NOWHERE]) * capacity
        self.wanted = 0
        for key in wanted:
            if key in (_EMPTY_KEY, ZERO_KEY):
                continue
            slot = key & mask
            while keys[slot] and keys[slot] != key:
                slot = (slot + 1) & mask
            if not keys[slot]:
                keys[slot] = key
                self.wanted += 1
        self.found = 0

    def __bool__(self) -> bool:
        return self.wanted > 0

    def _slot(self, key: int) -> int:
        """The slot of ``key``, or -1 when it is not wanted."""
        keys, mask = self._keys, self._mask
        slot = key & mask
        while True:
            k = keys[slot]
            if k == key:
                return slot
            if k == _EMPTY_KEY:
                return -1
            slot = (slot + 1) & mask

    def scan(self, hashes: bytes | bytearray | memoryview, rank: Callable[[int], int] | None = None) -> None:
        """Record, for each wanted hash, where it occurs in ``hashes`` (block k at index k).

        Without ``rank`` the first occurrence wins; with it, the occurrence of the lowest rank
        (then the first of those)."""
        if not self.wanted:
            return
        view = memoryview(hashes)
        keys, where, mask = self._keys, self._where, self._mask
        per_chunk = _SCAN_CHUNK
        for base in range(0, len(view) // BLOCK_HASH_SIZE, per_chunk):
            chunk = keys_of(view[base * BLOCK_HASH_SIZE:(base + per_chunk) * BLOCK_HASH_SIZE])
            for i, key in enumerate(chunk):
                slot = key & mask
                while True:  # _slot() inlined: this loop runs once per block of an index
                    k = keys[slot]
                    if k == key:
                        block = base + i
                        old = where[slot]
                        if old == _NOWHERE:
                            where[slot] = block
                            self.found += 1
                        elif rank is not None and rank(block) < rank(old):
                            where[slot] = block
                        break
                    if k == _EMPTY_KEY:
                        break
                    slot = (slot + 1) & mask

    def find(self, key: int) -> int:
        """A block number holding ``key``, or -1."""
        slot = self._slot(key)
        if slot < 0:
            return -1
        block = self._where[slot]
        return -1 if block == _NOWHERE else block


class BlockLocator:
    """Every distinct block of an index, each with the position of the first block that has it."""

    def __init__(self, index: BlockIndex) -> None:
        keys = keys_of(index.hashes)
        self._finder = BlockFinder(keys)
        self._finder.scan(index.hashes)
        # The two hashes a finder never wants (zeros, and the free-slot marker) are looked up here.
        self._aside: dict[int, int] = {}
        for key in (ZERO_KEY, _EMPTY_KEY):
            with contextlib.suppress(ValueError):  # not in the index
                self._aside[key] = keys.index(key)

    def __len__(self) -> int:
        return self._finder.wanted + len(self._aside)

    def find(self, block_hash: bytes) -> int | None:
        """The position (block number) of the first block with this short hash, or None."""
        key = key_of(block_hash)
        if key in (ZERO_KEY, _EMPTY_KEY):
            return self._aside.get(key)
        position = self._finder.find(key)
        return position if position >= 0 else None

    def __contains__(self, block_hash: bytes) -> bool:
        return self.find(block_hash) is not None
