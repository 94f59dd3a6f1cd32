from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import zstandard

from peagent.errors import ImageError
from peagent.image.build import BuildOptions, build_image
from peagent.image.format import BLOCK, FrameKind, block_hash, decode_blocks, decode_frames, parse_manifest


def rebuild(out: Path) -> bytes:
    """The image as a reader of the four files would see it."""
    m = parse_manifest((out / "manifest.json").read_bytes())
    blob = (out / m.blob.url).read_bytes()
    image = bytearray()
    for f in decode_frames((out / m.frames.url).read_bytes(), m):
        start, end = m.frame_extent(f.index)
        data = bytes(end - start) if f.kind == FrameKind.HOLE else \
            zstandard.ZstdDecompressor().decompress(blob[f.offset:f.offset + f.length])
        assert hashlib.sha256(data).digest() == f.sha256
        image += data
    return bytes(image)


def test_an_image_round_trips_with_holes_and_a_short_last_frame(tmp_path: Path) -> None:
    data = b"a" * (3 * BLOCK) + bytes(8 * BLOCK) + b"tail" * 300
    m = build_image(io.BytesIO(data), tmp_path, BuildOptions(name="x", version="1", frame_size=4 * BLOCK))
    assert rebuild(tmp_path) == data
    assert m.size == len(data) and m.sha256 == hashlib.sha256(data).hexdigest()
    kinds = [f.kind for f in decode_frames((tmp_path / "frames.bin").read_bytes(), m)]
    assert kinds == [FrameKind.FULL, FrameKind.HOLE, FrameKind.FULL]
    index = decode_blocks((tmp_path / "blocks.bin.zst").read_bytes(), m)
    assert len(index) == 12 and index[11] == block_hash(data[11 * BLOCK:])
    # The blob is plain concatenated zstd: `zstd -dc` yields the stored frames.
    stored = zstandard.ZstdDecompressor().stream_reader(io.BytesIO((tmp_path / "image.blob").read_bytes()),
                                                         read_across_frames=True).read()
    assert stored == data[:4 * BLOCK] + data[8 * BLOCK:]


def test_empty_source_and_bad_frame_size(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="the source is empty"):
        build_image(io.BytesIO(b""), tmp_path, BuildOptions(name="x", version="1"))
    with pytest.raises(ImageError, match="frame size 5000: expected a multiple of 4096"):
        build_image(io.BytesIO(b"x"), tmp_path, BuildOptions(name="x", version="1", frame_size=5000))


def test_build_from_reports_progress_with_rate_and_eta(tmp_path: Path) -> None:
    from peagent.image.build import build_from

    (tmp_path / "disk.img").write_bytes(b"x" * (3 << 20))
    snaps = []
    m = build_from(str(tmp_path / "disk.img"), str(tmp_path / "img"), BuildOptions(name="x", version="1"),
                   progress=snaps.append)
    assert m.source == "disk.img"
    assert snaps[-1].done == snaps[-1].total == 3 << 20 and snaps[-1].eta == 0
    assert "3.0/3.0 MiB (100%)" in snaps[-1].line("building")
