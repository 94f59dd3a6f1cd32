"""Crafted images for the differencing, inspect and verify tests: a base A and a new version NEW whose
frames are, over A: moved, duplicated, zeros, mostly A's with one new block, all new, and one
block changed by one bit followed by a short last block."""

from __future__ import annotations

import io
import random
from pathlib import Path

from peagent.image.blockmap import BlockLocator
from peagent.image.build import BuildOptions, build_image
from peagent.image.differencing import open_base
from peagent.image.format import BLOCK, BlockIndex, FrameKind, block_hash

rng = random.Random(7)
B = [rng.randbytes(BLOCK) for _ in range(8)]  # the base's blocks
N = [rng.randbytes(BLOCK) for _ in range(8)]  # new data
Z = bytes(BLOCK)
FRAME = 4 * BLOCK

# The base: two frames of data, one of zeros.
A = b"".join([B[0], B[1], B[2], B[3], B[4], B[5], B[6], B[7], Z, Z, Z, Z])
CHANGED = bytearray(B[2])
CHANGED[100] ^= 1
NEW = b"".join([
    B[4], B[5], B[6], B[7],  # moved: a frame of the base, elsewhere
    B[1], B[1], B[1], B[1],  # duplicated
    Z, Z, Z, Z,  # zeros
    B[0], Z, N[0], B[3],  # mostly the base's, one new block
    N[1], N[2], N[3], N[4],  # all new
    B[2], bytes(CHANGED),  # a block changed by one bit
]) + N[5][:100]  # and a short last block
KINDS = [FrameKind.BASE, FrameKind.BASE, FrameKind.HOLE, FrameKind.PARTIAL, FrameKind.FULL, FrameKind.PARTIAL]


def hashes(frame: bytes) -> list[bytes]:
    return [block_hash(frame[i:i + BLOCK]) for i in range(0, len(frame), BLOCK)]


def locator(data: bytes) -> BlockLocator:
    return BlockLocator(BlockIndex(b"".join(hashes(data))))


def build(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    build_image(io.BytesIO(A), a, BuildOptions(name="os", version="1", frame_size=FRAME))
    build_image(io.BytesIO(NEW), b, BuildOptions(name="os", version="2", frame_size=FRAME),
                base=open_base(str(a), str(b)))
    return a, b


