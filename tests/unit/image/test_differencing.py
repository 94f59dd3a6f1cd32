from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import zstandard

from peagent.errors import UsageError
from peagent.image.assemble import BlobReader, ImageData, NeedsBaseError, RawBase
from peagent.image.build import BuildOptions, build_image
from peagent.image.differencing import base_url, classify_frame, open_base
from peagent.image.format import BLOCK, FrameKind, block_hash
from peagent.image.load import read_image
from tests.unit.image.crafted import CHANGED, FRAME, KINDS, NEW, A, B, N, Z, build, hashes, locator


def test_classify_frame_moved_duplicated_zero_changed_and_new() -> None:
    base = locator(A)
    frames = [NEW[i:i + FRAME] for i in range(0, len(NEW), FRAME)]
    classified = [classify_frame(f, hashes(f), base) for f in frames]
    assert [c.kind for c in classified] == KINDS
    partial = classified[3]
    assert partial.packed == 0b0100 and partial.payload == N[0]
    last = classified[5]
    assert last.packed == 0b110 and last.payload == bytes(CHANGED) + N[5][:100]
    assert classified[4].payload == frames[4]
    # Without a base every frame with data is stored whole; zeros are holes whatever the base holds.
    assert [classify_frame(f, hashes(f), None).kind for f in frames] == [
        FrameKind.FULL, FrameKind.FULL, FrameKind.HOLE, FrameKind.FULL, FrameKind.FULL, FrameKind.FULL]


def test_a_zero_block_is_stored_when_the_base_has_none() -> None:
    base = locator(b"".join(B))
    frame = B[0] + Z + B[1] + B[2]
    c = classify_frame(frame, hashes(frame), base)
    assert (c.kind, c.packed, c.payload) == (FrameKind.PARTIAL, 0b10, Z)


def test_the_differencing_image_stores_only_the_missing_blocks_and_names_its_base(tmp_path: Path) -> None:
    a, b = build(tmp_path)
    files = read_image(str(b))
    assert [f.kind for f in files.frames] == KINDS
    ref = files.manifest.base
    assert ref is not None
    assert (ref.name, ref.version, ref.url) == ("os", "1", "../a/manifest.json")
    assert ref.manifest_sha256 == read_image(str(a)).manifest_sha256
    stored = zstandard.ZstdDecompressor().stream_reader(io.BytesIO((b / "image.blob").read_bytes()),
                                                         read_across_frames=True).read()
    assert stored == N[0] + b"".join(N[1:5]) + bytes(CHANGED) + N[5][:100]
    # Its block index covers the whole new image, so it can be a base in turn.
    assert files.blocks.hashes == b"".join(hashes(NEW))
    assert json.loads((b / "manifest.json").read_text())["base"]["url"] == "../a/manifest.json"


def test_frames_are_assembled_from_the_base_image_or_a_raw_copy_of_it(tmp_path: Path) -> None:
    a, b = build(tmp_path)
    af, bf = read_image(str(a)), read_image(str(b))
    (tmp_path / "a.raw").write_bytes(A)
    with BlobReader(af.blob_location) as ablob, BlobReader(bf.blob_location) as bblob:
        over_image = ImageData(bf, bblob, ImageData(af, ablob))
        over_raw = ImageData(bf, bblob, RawBase(str(tmp_path / "a.raw"), af.blocks, len(A)))
        for data in (over_image, over_raw):
            assert b"".join(data.frame(i) for i in range(len(bf.frames))) == NEW
        alone = ImageData(bf, bblob)
        with pytest.raises(NeedsBaseError, match=r"frame 0 \(BASE, image offset 0\): needs the base image os 1"):
            alone.frame(0)
        assert alone.frame(4) == b"".join(N[1:5])  # FULL frames need nothing else


def test_base_url_relative_where_it_can_be_and_refused_where_it_cannot(tmp_path: Path) -> None:
    assert base_url("http://dp/images/os/1/manifest.json", "http://dp/images/os/2/") == "../1/manifest.json"
    assert base_url("http://dp/images/os/1/manifest.json", "http://other/os/2/") == \
        "http://dp/images/os/1/manifest.json"
    assert base_url("http://dp/images/os/1/manifest.json", str(tmp_path)) == "http://dp/images/os/1/manifest.json"
    assert base_url(str(tmp_path / "os/1/manifest.json"), str(tmp_path / "os/2")) == "../1/manifest.json"
    with pytest.raises(UsageError, match="--base-url"):
        base_url(str(tmp_path / "1/manifest.json"), "http://dp/os/2/")


def test_the_locator_finds_the_first_of_equal_blocks() -> None:
    loc = locator(B[3] + B[1] + B[1] + Z + B[3])
    assert len(loc) == 3
    assert loc.find(block_hash(B[1])) == 1 and loc.find(block_hash(B[3])) == 0
    assert loc.find(block_hash(N[0])) is None and block_hash(Z) in loc


def test_a_chain_of_differencing_images_verifies_through_every_base(tmp_path: Path) -> None:
    from peagent.image.verify import verify_image

    _, b = build(tmp_path)
    newer = NEW[:4 * FRAME] + N[6] + NEW[4 * FRAME + BLOCK:]  # one block of frame 4 changed again
    c = tmp_path / "c"
    build_image(io.BytesIO(newer), c, BuildOptions(name="os", version="3", frame_size=FRAME),
                base=open_base(str(b), str(c)))
    files = read_image(str(c))
    assert [f.kind for f in files.frames] == [FrameKind.BASE] * 2 + [FrameKind.HOLE, FrameKind.BASE,
                                                                      FrameKind.PARTIAL, FrameKind.BASE]
    report = verify_image(str(c))
    assert report.complete, report.render()
