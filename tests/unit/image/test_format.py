from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peagent.errors import ManifestError
from peagent.image.format import (
    BLOCK,
    BaseRef,
    BlockIndex,
    FileRef,
    FrameKind,
    FrameTable,
    Manifest,
    block_hash,
    decode_blocks,
    decode_frames,
    encode_blocks,
    encode_frames,
    parse_manifest,
)

H = "ab" * 32


def manifest(size: int = 10 * BLOCK + 100, frame_size: int = 4 * BLOCK, frames: bytes = b"", blocks: bytes = b"",
             blob: int = 1000, base: BaseRef | None = None) -> Manifest:
    return Manifest(name="img", version="1", kind="disk", size=size, sha256=H, frame_size=frame_size,
                    frames=FileRef("frames.bin", len(frames), hashlib.sha256(frames).hexdigest()),
                    blocks=FileRef("blocks.bin.zst", len(blocks), hashlib.sha256(blocks).hexdigest()),
                    blob=FileRef("image.blob", blob), base=base)


def table(kinds: list[FrameKind], frame_size: int = 4 * BLOCK) -> FrameTable:
    t = FrameTable(frame_size)
    offset = 0
    for i, kind in enumerate(kinds):
        stored = kind in (FrameKind.FULL, FrameKind.PARTIAL)
        t.append(kind, offset if stored else 0, 100 if stored else 0, 0b101 if kind == FrameKind.PARTIAL else 0,
                 hashlib.sha256(bytes([i])).digest())
        offset += 100 if stored else 0
    return t


def test_manifest_round_trip_keeps_unknown_fields() -> None:
    m = manifest(base=BaseRef("img", "0", "../0/manifest.json", H))
    doc = json.loads(m.to_json())
    assert doc["format"] == "peagent-image" and doc["format_version"] == 1
    doc["future_field"] = {"x": 1}
    again = parse_manifest(json.dumps(doc).encode())
    assert replace(again, extra={}) == m
    assert json.loads(again.to_json())["future_field"] == {"x": 1}
    assert (m.frame_count, m.block_count, m.frame_extent(2)) == (3, 11, (8 * BLOCK, 10 * BLOCK + 100))


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "qcow2"}, "manifest: not a peagent image manifest (format must be 'peagent-image')"),
    ({"format_version": 2}, "manifest: format_version 2 is not supported by this agent, which reads version 1"),
    ({"size": "10"}, 'manifest field size: expected the image size in bytes, found "10"'),
    ({"size": 0}, "manifest field size: expected a positive number of bytes, found 0"),
    ({"kind": "vhd"}, 'manifest field kind: expected one of disk, partition, files, found "vhd"'),
    ({"frame_size": 5000}, "manifest field frame_size: expected a multiple of 4096 from 4096 to 262144, found 5000"),
    ({"frame_size": 512 << 10}, "manifest field frame_size: expected a multiple of 4096 from 4096 to 262144, "
                                "found 524288"),
    ({"sha256": "xyz"}, 'manifest field sha256: expected 64 hex digits, found "xyz"'),
    ({"frames": {"url": "f", "size": 1}}, "manifest field frames.sha256: expected 64 hex digits, found null"),
    ({"blob": None}, "manifest field blob: expected an object with url and size, found null"),
    ({"base": {"name": "b", "version": "1", "url": "u", "manifest_sha256": 5}},
     "manifest field manifest_sha256: expected 64 hex digits, found 5"),
])
def test_bad_manifests_name_the_field(change: dict, message: str) -> None:
    doc = json.loads(manifest().to_json())
    doc.update(change)
    with pytest.raises(ManifestError) as info:
        parse_manifest(json.dumps(doc).encode())
    assert str(info.value) == message


def test_not_json() -> None:
    with pytest.raises(ManifestError, match=r"manifest: not JSON"):
        parse_manifest(b"\xff{")


def test_frames_round_trip_and_are_checked_against_the_manifest() -> None:
    t = table([FrameKind.FULL, FrameKind.HOLE, FrameKind.FULL])
    data = encode_frames(t)
    decoded = decode_frames(data, manifest(frames=data))
    assert [(f.kind, f.offset, f.length) for f in decoded] == [(FrameKind.FULL, 0, 100), (FrameKind.HOLE, 0, 0),
                                                               (FrameKind.FULL, 100, 100)]
    assert decoded[2].sha256 == hashlib.sha256(bytes([2])).digest()
    with pytest.raises(ManifestError, match="frames: sha256 does not match the manifest"):
        decode_frames(data, manifest(frames=data[:-1] + b"x"))
    with pytest.raises(ManifestError, match=r"frames: frame 2 lies outside the blob \(100\+100 > 150\)"):
        decode_frames(data, manifest(frames=data, blob=150))
    with pytest.raises(ManifestError, match="frames: 3 frames of 16384 bytes, but the manifest describes 4 frames"):
        decode_frames(data, manifest(frames=data, size=13 * BLOCK))


def test_base_frames_need_a_base() -> None:
    data = encode_frames(table([FrameKind.FULL, FrameKind.BASE, FrameKind.PARTIAL]))
    with pytest.raises(ManifestError, match="frame 1 takes blocks from a base image, but the manifest names none"):
        decode_frames(data, manifest(frames=data))
    base = BaseRef("b", "1", "../b/manifest.json", H)
    assert decode_frames(data, manifest(frames=data, base=base))[2].packed == 0b101


def test_blocks_round_trip() -> None:
    hashes = b"".join(block_hash(bytes([i]) * BLOCK) for i in range(11))
    data = encode_blocks(BlockIndex(hashes))
    index = decode_blocks(data, manifest(blocks=data))
    assert len(index) == 11 and index[3] == block_hash(bytes([3]) * BLOCK)
    with pytest.raises(ManifestError, match=r"blocks: header .* does not match the manifest \(12 blocks"):
        decode_blocks(data, manifest(blocks=data, size=12 * BLOCK))


@given(st.lists(st.sampled_from(list(FrameKind)), min_size=1, max_size=50),
       st.sampled_from([BLOCK, 16 * BLOCK, 64 * BLOCK]))
def test_any_frame_table_round_trips(kinds: list[FrameKind], frame_size: int) -> None:
    t = table(kinds, frame_size)
    data = encode_frames(t)
    m = manifest(size=len(kinds) * frame_size, frame_size=frame_size, frames=data, blob=100 * len(kinds),
                 base=BaseRef("b", "1", "u", H))
    assert list(decode_frames(data, m)) == list(t)
