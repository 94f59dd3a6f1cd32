from __future__ import annotations

import io
import json
from pathlib import Path

from peagent.image.build import BuildOptions, build_image
from peagent.image.format import BLOCK
from peagent.image.inspect import diff_images, inspect_image, public_keys
from peagent.image.sign import generate_keys, load_private_key
from tests.unit.image.crafted import FRAME, NEW, A, build


def test_inspect_counts_frames_by_kind_and_names_the_base(tmp_path: Path) -> None:
    _, b = build(tmp_path)
    info = inspect_image(str(b))
    assert (info.name, info.version, info.kind, info.size, info.frame_size) == ("os", "2", "disk", len(NEW), FRAME)
    counts = {k: (v.frames, v.image_bytes) for k, v in info.kinds.items()}
    assert counts == {"HOLE": (1, FRAME), "FULL": (1, FRAME), "BASE": (2, 2 * FRAME),
                      "PARTIAL": (2, FRAME + 2 * BLOCK + 100)}
    assert info.kinds["BASE"].stored_bytes == 0 < info.kinds["PARTIAL"].stored_bytes
    assert info.blob_size == sum(v.stored_bytes for v in info.kinds.values())
    assert info.base is not None and info.base.url == "../a/manifest.json"
    assert info.signature.detail == "not signed" and info.signature.verified is None
    text = info.render()
    assert "differencing image over os 1 at ../a/manifest.json" in text
    assert "PARTIAL        2 frames" in text and "signature: not signed" in text
    assert json.loads(json.dumps(info.to_dict()))["kinds"]["BASE"]["frames"] == 2


def test_inspect_reports_the_signature_checked_against_the_keys_given(tmp_path: Path) -> None:
    keys, other = generate_keys(tmp_path / "keys"), generate_keys(tmp_path / "other")
    build_image(io.BytesIO(A), tmp_path / "img", BuildOptions(name="os", version="1", frame_size=FRAME),
                key=load_private_key(tmp_path / "keys" / "peagent.key"))
    unchecked = inspect_image(str(tmp_path / "img")).signature
    assert (unchecked.signed, unchecked.key_id, unchecked.verified) == (True, keys.key_id, None)
    assert unchecked.detail == f"signed by key {keys.key_id} (not checked: no key given)"
    good = inspect_image(str(tmp_path / "img"), public_keys([str(tmp_path / "keys" / "peagent.pub")])).signature
    assert good.verified is True and good.detail == f"verified: signed by key {keys.key_id}"
    bad = inspect_image(str(tmp_path / "img"), public_keys([other.to_text()])).signature
    assert bad.verified is False and "which this agent does not trust" in bad.detail


def test_diff_sorts_frames_into_in_place_moved_holes_and_to_fetch(tmp_path: Path) -> None:
    a, _ = build(tmp_path)
    build_image(io.BytesIO(NEW), tmp_path / "full", BuildOptions(name="os", version="2", frame_size=FRAME))
    d = diff_images(str(a), str(tmp_path / "full"))
    # Frames 0 (moved) and 1 (duplicated) come from A's blocks; 2 is zeros; 3, 4 and 5 miss blocks.
    assert (d.in_place.frames, d.moved.frames, d.holes.frames, d.fetch.frames) == (0, 2, 1, 3)
    assert d.missing_blocks == 7 and d.floor_bytes == 6 * BLOCK + 100
    full = inspect_image(str(tmp_path / "full"))
    assert d.fetch.fetch_bytes == full.kinds["FULL"].stored_bytes - _stored(tmp_path / "full", (0, 1))
    assert {k: c.frames for k, c in d.differencing.items()} == {"HOLE": 1, "FULL": 1, "BASE": 2, "PARTIAL": 2}
    assert 0 < d.differencing_estimate < d.fetch.fetch_bytes
    assert "to fetch" in d.render() and json.dumps(d.to_dict())


def test_diff_of_an_image_with_itself_fetches_nothing(tmp_path: Path) -> None:
    a, _ = build(tmp_path)
    d = diff_images(str(a), str(a))
    assert (d.in_place.frames, d.moved.frames, d.holes.frames, d.fetch.frames) == (2, 0, 1, 0)
    assert d.floor_bytes == d.differencing_estimate == 0


def _stored(image: Path, frames: tuple[int, ...]) -> int:
    from peagent.image.load import read_image

    table = read_image(str(image)).frames
    return sum(table[i].length for i in frames)
