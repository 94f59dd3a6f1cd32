"""Peagent-format images made by hand, in memory or on disk: full and differencing.

The builder (peagent.image.build) makes full images from a stream. Tests of the transfer engine
also need differencing images (kinds BASE and PARTIAL, docs/image-format.md) and images small
enough for property tests; :func:`make_tables` makes both from bytes, the way the builder's
``--base`` does: a block whose short hash is in the base's block index comes from the base, the
others are packed. :func:`write_dir` writes the four files (signed when given a key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from peagent.image.format import (
    BLOCK,
    BaseRef,
    BlockIndex,
    FileRef,
    FrameKind,
    FrameTable,
    Manifest,
    block_hash,
    encode_blocks,
    encode_frames,
)


@dataclass
class Made:
    """An image's tables, blob and data, as the planner and the writer see them."""

    manifest: Manifest
    frames: FrameTable
    blocks: BlockIndex
    blob: bytes
    data: bytes
    stored: dict[int, bytes] = field(default_factory=dict)  # frame -> decompressed stored data


def make_tables(data: bytes, frame_size: int = 4 * BLOCK, *, base: Made | None = None, name: str = "img",
                version: str = "1", level: int = 1) -> Made:
    hashes = b"".join(block_hash(data[k:k + BLOCK]) for k in range(0, len(data), BLOCK))
    index = BlockIndex(hashes)
    in_base = set()
    if base is not None:
        in_base = {base.blocks[k] for k in range(len(base.blocks))}
    table = FrameTable(frame_size)
    blob = bytearray()
    stored: dict[int, bytes] = {}
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
    for j, start in enumerate(range(0, len(data), frame_size)):
        frame = data[start:start + frame_size]
        digest = hashlib.sha256(frame).digest()
        if frame.count(0) == len(frame):
            table.append(FrameKind.HOLE, 0, 0, 0, digest)
            continue
        nblocks = -(-len(frame) // BLOCK)
        packed = 0
        if base is not None:
            for b in range(nblocks):
                if index[start // BLOCK + b] not in in_base:
                    packed |= 1 << b
        if base is not None and packed == 0:
            table.append(FrameKind.BASE, 0, 0, 0, digest)
            continue
        if base is None or packed == (1 << nblocks) - 1:
            kind, payload, packed = FrameKind.FULL, frame, 0
        else:
            kind = FrameKind.PARTIAL
            payload = b"".join(frame[b * BLOCK:(b + 1) * BLOCK] for b in range(nblocks) if packed >> b & 1)
        z = compressor.compress(payload)
        table.append(kind, len(blob), len(z), packed, digest)
        stored[j] = payload
        blob += z
    frames_data = encode_frames(table)
    blocks_data = encode_blocks(index)
    base_ref = None
    if base is not None:
        base_ref = BaseRef(base.manifest.name, base.manifest.version, "../base/manifest.json",
                           hashlib.sha256(base.manifest.to_json()).hexdigest())
    manifest = Manifest(
        name=name, version=version, kind="disk", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        frame_size=frame_size,
        frames=FileRef("frames.bin", len(frames_data), hashlib.sha256(frames_data).hexdigest()),
        blocks=FileRef("blocks.bin.zst", len(blocks_data), hashlib.sha256(blocks_data).hexdigest()),
        blob=FileRef("image.blob", len(blob)), base=base_ref, tool="tests")
    return Made(manifest, table, index, bytes(blob), data, stored)


def with_base_url(made: Made, url: str) -> Made:
    """The same image naming its base at another URL (relative to its own manifest)."""
    assert made.manifest.base is not None
    base = BaseRef(made.manifest.base.name, made.manifest.base.version, url, made.manifest.base.manifest_sha256)
    from dataclasses import replace
    return replace(made, manifest=replace(made.manifest, base=base))


def write_dir(made: Made, out: Path, key: object | None = None) -> Path:
    """The image's four files (five when signed with an ed25519 private key) in ``out``."""
    from peagent.image.sign import sign_manifest

    out.mkdir(parents=True, exist_ok=True)
    manifest = made.manifest.to_json()
    (out / "manifest.json").write_bytes(manifest)
    (out / "frames.bin").write_bytes(encode_frames(made.frames))
    (out / "blocks.bin.zst").write_bytes(encode_blocks(made.blocks))
    (out / "image.blob").write_bytes(made.blob)
    if key is not None:
        (out / "manifest.json.sig").write_text(sign_manifest(manifest, key))  # type: ignore[arg-type]
    return out / "manifest.json"
