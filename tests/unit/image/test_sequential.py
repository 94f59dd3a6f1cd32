"""peagent.image.sequential: an image read back in order, verified, holes and a base's frames included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peagent.cli import main
from peagent.errors import VerifyError
from peagent.image.load import load_image
from peagent.image.sequential import ImageStream
from peagent.image.sign import trusted_keys

FRAME = 65536


def build(tmp_path: Path, data: bytes, name: str, *extra: str) -> Path:
    raw = tmp_path / f"{name}.raw"
    raw.write_bytes(data)
    out = tmp_path / name
    assert main(["image", "build", str(raw), "-o", str(out), "--name", name, "--version", "1", "--frame-size",
                 str(FRAME), "--key", str(tmp_path / "k" / "peagent.key"), *extra]) == 0
    return out


def read_all(image_dir: Path, keys: list, piece: int) -> bytes:
    out = bytearray()
    with ImageStream(load_image(str(image_dir), keys=keys)) as stream:
        while chunk := stream.read(piece):
            out += chunk
        assert stream.position == len(out)
    return bytes(out)


def test_an_image_and_its_differencing_image_read_back_exactly(tmp_path: Path) -> None:
    assert main(["keys", "-o", str(tmp_path / "k")]) == 0
    keys = trusted_keys(given=[(tmp_path / "k" / "peagent.pub").read_text()])
    a = os.urandom(5 * FRAME) + bytes(3 * FRAME) + os.urandom(FRAME + 1234)  # holes, a short last frame
    b = bytearray(a)
    b[FRAME:FRAME + 4096] = os.urandom(4096)  # one block changed: a packed frame over the base
    a_dir = build(tmp_path, a, "a")
    b_dir = build(tmp_path, bytes(b), "b", "--base", str(a_dir))
    assert read_all(a_dir, keys, 70_001) == a
    assert read_all(b_dir, keys, 1 << 20) == bytes(b)


def test_a_damaged_frame_is_never_handed_out(tmp_path: Path) -> None:
    assert main(["keys", "-o", str(tmp_path / "k")]) == 0
    keys = trusted_keys(given=[(tmp_path / "k" / "peagent.pub").read_text()])
    image = build(tmp_path, os.urandom(4 * FRAME), "a")
    blob = image / "image.blob"
    data = bytearray(blob.read_bytes())
    data[-10] ^= 1  # in the last frame
    blob.write_bytes(bytes(data))
    handed = bytearray()
    with pytest.raises(VerifyError, match=r"frame 3 of a 1 \(image bytes 196608-262143\)"), \
            ImageStream(load_image(str(image), keys=keys)) as stream:
        while chunk := stream.read(FRAME):
            handed += chunk
    assert len(handed) == 3 * FRAME  # the three good frames, not a byte of the bad one
