"""Finding a block of a differencing image: in its own blob, or down its chain of bases.

A differencing image's BASE and PARTIAL frames hold only some of their blocks (the packed ones,
for PARTIAL); every other block is "in the base", found by its short hash in the base's block
index, and the base may itself be a differencing image. :meth:`BaseChain.resolve` follows a block
down the chain to where its bytes are stored: a FULL frame of some level (at the block's place in
it), a packed block of a PARTIAL frame (at its rank among the packed ones), or nowhere because it
is all zeros. A block at the same position in the base is taken from there without a lookup;
other lookups go through a :class:`~peagent.image.blockmap.BlockFinder` per level, built once for
the hashes that level may be asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from peagent.errors import ManifestError
from peagent.image.blockmap import ZERO_KEY, BlockFinder, key_of, keys_of
from peagent.image.format import BLOCK, BLOCK_HASH_SIZE, FrameKind

if TYPE_CHECKING:
    from peagent.image.reuse import Tables


def packed_index(packed: int, b: int) -> int:
    """Position of block b among a PARTIAL frame's packed blocks."""
    return bin(packed & ((1 << b) - 1)).count("1")


class BaseChain:
    """Block-level lookups in an image and its bases; finders are built for what may be asked."""

    def __init__(self, chain: Sequence[Tables]) -> None:
        self.chain = chain
        self.finders: dict[int, BlockFinder] = {}

    def wanted_from_base(self, level: int) -> list[int]:
        """Short hashes of level's blocks that come from level+1 and are not at the same position there."""
        t = self.chain[level]
        base = self.chain[level + 1].blocks.hashes
        hashes = t.blocks.hashes
        bpf = t.manifest.frame_size // BLOCK
        wanted: list[int] = []
        keys = None
        for q, kind in enumerate(t.frames.kinds):
            if kind not in (FrameKind.BASE, FrameKind.PARTIAL):
                continue
            keys = keys if keys is not None else keys_of(hashes)
            packed = t.frames.packed[q] if kind == FrameKind.PARTIAL else 0
            for k in range(q * bpf, min((q + 1) * bpf, len(keys))):
                if packed >> (k - q * bpf) & 1 or keys[k] == ZERO_KEY:
                    continue
                s = k * BLOCK_HASH_SIZE
                if hashes[s:s + BLOCK_HASH_SIZE] != base[s:s + BLOCK_HASH_SIZE]:
                    wanted.append(keys[k])
        return wanted

    def finder(self, level: int) -> BlockFinder:
        """Finds blocks of level ``level`` (>= 1) asked for by level - 1."""
        if level not in self.finders:
            finder = BlockFinder(self.wanted_from_base(level - 1))
            finder.scan(self.chain[level].blocks.hashes)
            self.finders[level] = finder
        return self.finders[level]

    def resolve(self, level: int, k: int) -> tuple[int, int, int] | None:
        """Where block k of image ``level`` is stored: (level, frame, offset in its data); None: zeros."""
        while True:
            t = self.chain[level]
            bpf = t.manifest.frame_size // BLOCK
            q, b = divmod(k, bpf)
            kind = t.frames.kinds[q]
            if kind == FrameKind.HOLE:
                return None
            if kind == FrameKind.FULL:
                return level, q, b * BLOCK
            packed = t.frames.packed[q] if kind == FrameKind.PARTIAL else 0
            if packed >> b & 1:
                return level, q, packed_index(packed, b) * BLOCK
            short = t.blocks[k]
            key = key_of(short)
            if key == ZERO_KEY:
                return None
            if level + 1 >= len(self.chain):
                raise ManifestError(f"{_name(t)}: frame {q} takes blocks from a base image, but none is loaded")
            base = self.chain[level + 1].blocks
            if k < len(base) and base[k] == short:
                p = k
            else:
                p = self.finder(level + 1).find(key)
                if p < 0:
                    raise ManifestError(f"{_name(t)}: block {k} (frame {q}) is not in its base "
                                        f"{_name(self.chain[level + 1])}: the image was not built on this base")
            level, k = level + 1, p


def _name(t: Tables) -> str:
    return f"image {t.manifest.name} {t.manifest.version}"
