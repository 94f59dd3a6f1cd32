from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
import zstandard

from peagent.errors import ImageError
from peagent.image.build import BuildOptions, build_image
from peagent.image.format import BLOCKS_MAGIC, FRAMES_MAGIC
from peagent.image.inspect import public_keys
from peagent.image.sign import generate_keys, load_private_key
from peagent.image.verify import verify_image
from tests.unit.image.crafted import FRAME, NEW, build


def rewrite(image: Path, name: str, data: bytes) -> None:
    """Replace one of the image's small files and re-hash it in the manifest, as a careless tool would."""
    (image / name).write_bytes(data)
    doc = json.loads((image / "manifest.json").read_text())
    key = {"frames.bin": "frames", "blocks.bin.zst": "blocks"}[name]
    doc[key].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (image / "manifest.json").write_text(json.dumps(doc))


def lines(report) -> list[str]:
    return [p.line() for p in report.problems]


def test_a_differencing_image_verifies_with_the_base_its_manifest_names(tmp_path: Path) -> None:
    a, b = build(tmp_path)
    done = []
    report = verify_image(str(b), progress=done.append)
    assert lines(report) == [] and report.complete
    assert report.verdict == "ok: all 6 frames verified"
    assert report.base == str(a / "manifest.json")
    assert sum(done) == len(NEW)
    report.raise_for_problems()


def test_without_the_base_the_check_is_incomplete_but_stored_blocks_are_checked(tmp_path: Path) -> None:
    a, b = build(tmp_path)
    shutil.move(a, tmp_path / "elsewhere")
    report = verify_image(str(b))
    assert report.ok and not report.complete and report.needs_base == 4
    assert "4 of 6 frames need the base image (give it with --base)" in report.verdict
    assert verify_image(str(b), base=str(tmp_path / "elsewhere")).complete
    # A damaged PARTIAL frame is found even so.
    blob = bytearray((b / "image.blob").read_bytes())
    blob[12] ^= 0xFF
    (b / "image.blob").write_bytes(blob)
    assert lines(verify_image(str(b)))[0].startswith("frame 3 (PARTIAL, offset 49152): ")


def test_a_base_that_is_not_the_one_named_is_a_problem(tmp_path: Path) -> None:
    _, b = build(tmp_path)
    build_image(io.BytesIO(b"other" * 10000), tmp_path / "other", BuildOptions(name="os", version="1"))
    report = verify_image(str(b), base=str(tmp_path / "other"))
    assert "this is not the image named" in lines(report)[0]


def test_a_damaged_frame_is_reported_with_its_index_kind_and_offset(tmp_path: Path) -> None:
    build_image(io.BytesIO(NEW), tmp_path / "img", BuildOptions(name="os", version="2", frame_size=FRAME))
    blob = bytearray((tmp_path / "img" / "image.blob").read_bytes())
    frames = [zstandard.ZstdCompressor(level=9, write_content_size=True).compress(NEW[i:i + FRAME])
              for i in (0, FRAME)]
    blob[len(frames[0]) + len(frames[1]) // 2] ^= 1  # inside frame 1
    (tmp_path / "img" / "image.blob").write_bytes(blob)
    report = verify_image(str(tmp_path / "img"))
    assert lines(report) == ["frame 1 (FULL, offset 16384): sha256 does not match the frame table"]
    assert report.verdict == "BAD: 1 problem(s)"
    with pytest.raises(ImageError, match=r"img/manifest.json does not verify: frame 1 \(FULL, offset 16384\)"):
        report.raise_for_problems()


def test_a_short_blob_and_a_block_index_that_lies(tmp_path: Path) -> None:
    img = tmp_path / "img"
    build_image(io.BytesIO(NEW), img, BuildOptions(name="os", version="2", frame_size=FRAME))
    size = (img / "image.blob").stat().st_size
    with (img / "image.blob").open("r+b") as f:
        f.truncate(size - 10)
    report = verify_image(str(img))
    assert lines(report)[0] == f"blob: {size - 10} bytes, the manifest says {size}"
    assert lines(report)[1].startswith("frame 5 (FULL, offset 81920): the blob ends before the frame's")

    build_image(io.BytesIO(NEW), img, BuildOptions(name="os", version="2", frame_size=FRAME))
    raw = bytearray(zstandard.ZstdDecompressor().decompress((img / "blocks.bin.zst").read_bytes()))
    assert raw.startswith(BLOCKS_MAGIC)
    raw[16 + 8 * 13] ^= 1  # block 13: frame 3
    rewrite(img, "blocks.bin.zst", zstandard.ZstdCompressor().compress(bytes(raw)))
    assert lines(verify_image(str(img))) == [
        "frame 3 (FULL, offset 49152): 1 block(s) differ from the block index (first: block 13)"]


def test_a_hole_whose_recorded_hash_is_not_that_of_zeros(tmp_path: Path) -> None:
    img = tmp_path / "img"
    build_image(io.BytesIO(NEW), img, BuildOptions(name="os", version="2", frame_size=FRAME))
    table = bytearray((img / "frames.bin").read_bytes())
    assert table.startswith(FRAMES_MAGIC)
    record = 16 + 53 * 2  # frame 2 is the hole
    assert table[record] == 0
    table[record + 21] ^= 1  # its sha256
    rewrite(img, "frames.bin", bytes(table))
    assert lines(verify_image(str(img))) == ["frame 2 (HOLE, offset 32768): sha256 does not match the frame table"]


def test_damaged_small_files_and_signatures(tmp_path: Path) -> None:
    img = tmp_path / "img"
    keys = generate_keys(tmp_path / "keys")
    build_image(io.BytesIO(NEW), img, BuildOptions(name="os", version="2", frame_size=FRAME),
                key=load_private_key(tmp_path / "keys" / "peagent.key"))
    trusted = public_keys([str(tmp_path / "keys" / "peagent.pub")])
    report = verify_image(str(img), trusted)
    assert report.complete and report.signature == f"verified: signed by key {keys.key_id}"
    stranger = public_keys([generate_keys(tmp_path / "k2").to_text()])
    assert "does not trust" in lines(verify_image(str(img), stranger))[0]
    assert lines(verify_image(str(img), pin="0" * 64))[0].startswith("signature: the manifest's sha256 is ")

    (img / "frames.bin").write_bytes((img / "frames.bin").read_bytes()[:-1] + b"\x00")
    report = verify_image(str(img), trusted)
    assert len(report.problems) == 1 and "frames: sha256 does not match the manifest" in lines(report)[0]


def test_frames_that_all_match_but_not_the_image_named(tmp_path: Path) -> None:
    img = tmp_path / "img"
    build_image(io.BytesIO(NEW), img, BuildOptions(name="os", version="2", frame_size=FRAME))
    doc = json.loads((img / "manifest.json").read_text())
    doc["sha256"] = "0" * 64
    (img / "manifest.json").write_text(json.dumps(doc))
    assert lines(verify_image(str(img)))[0].endswith(f"the manifest says {'0' * 64}")
