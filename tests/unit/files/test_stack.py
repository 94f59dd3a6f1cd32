"""peagent.files.stack and `peagent apply`: a base file image and a layer, verified and applied in order."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from peagent.cli import main
from peagent.errors import ImageError, UsageError, VerifyError
from peagent.files.stack import apply_images
from peagent.image.sign import trusted_keys
from tests.unit.files.test_layers import base_tree, copy
from tests.unit.files.test_tree import OLD, digest, link_groups, needs_root

pytestmark = needs_root


def build(tmp_path: Path, tree: Path, name: str, *extra: str) -> Path:
    keys = tmp_path / "k"
    if not keys.exists():
        assert main(["keys", "-o", str(keys)]) == 0
    out = tmp_path / "images" / name
    assert main(["image", "build", "--files", str(tree), "-o", str(out), "--name", name, "--version", "1",
                 "--key", str(keys / "peagent.key"), "--frame-size", "65536", *extra]) == 0
    return out


def trees(tmp_path: Path) -> tuple[Path, Path]:
    base = base_tree(tmp_path)
    new = copy(base, tmp_path / "new", tmp_path)
    (new / "etc/hostname").write_text("layered\n")
    os.utime(new / "etc/hostname", ns=(OLD, OLD))
    (new / "lib").unlink()  # merged /usr's symlink becomes a directory: never written through
    (new / "lib").mkdir()
    (new / "lib/libc.so").write_text("the new libc")
    shutil.rmtree(new / "data")
    (new / "opt/app").mkdir(parents=True)
    (new / "opt/app/big").write_bytes(os.urandom(300_000))  # several frames
    os.link(new / "opt/app/big", new / "opt/app/big-link")
    return base, new


def test_a_base_and_a_layer_applied_give_the_new_tree(tmp_path: Path) -> None:
    base, new = trees(tmp_path)
    base_image = build(tmp_path, base, "base")
    layer_image = build(tmp_path, new, "layer", "--base-tree", str(base))
    dest = tmp_path / "dest"
    dest.mkdir()
    assert main(["apply", str(base_image), str(layer_image), str(dest), "--allow-devices",
                 "--key", str(tmp_path / "k" / "peagent.pub")]) == 0
    assert digest(dest, dir_mtimes=False) == digest(new, dir_mtimes=False)
    assert link_groups(dest) == link_groups(new)
    assert (dest / "usr/lib/libc.so").read_text() == "the base's libc"


def test_a_corrupt_frame_stops_the_apply_with_a_verify_error(tmp_path: Path) -> None:
    base, _ = trees(tmp_path)
    image = build(tmp_path, base, "base")
    blob = image / "image.blob"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    keys = trusted_keys(given=[(tmp_path / "k" / "peagent.pub").read_text()])
    with pytest.raises(VerifyError, match=r"frame \d+ of base 1 .* does not match its sha256"):
        apply_images([str(image)], dest, keys=keys, allow_devices=True)
    assert main(["apply", str(image), str(dest), "--allow-devices", "--key", str(tmp_path / "k" / "peagent.pub")]) \
        == VerifyError.exit_status


def test_a_stack_that_does_not_fit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    base, new = trees(tmp_path)
    base_image = build(tmp_path, base, "base")
    other_base = build(tmp_path, new, "other")
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(1 << 20))
    assert main(["image", "build", str(raw), "-o", str(tmp_path / "images" / "disk"), "--name", "disk",
                 "--version", "1", "--key", str(tmp_path / "k" / "peagent.key")]) == 0
    keys = trusted_keys(given=[(tmp_path / "k" / "peagent.pub").read_text()])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ImageError, match="only the first image may be a base"):
        apply_images([str(base_image), str(other_base)], dest, keys=keys)
    with pytest.raises(ImageError, match="is a disk image: only file images"):
        apply_images([str(base_image), str(tmp_path / "images" / "disk")], dest, keys=keys)
    with pytest.raises(UsageError, match="missing: no such file or directory"):
        apply_images([str(base_image), str(tmp_path / "images" / "missing")], dest, keys=keys)
    assert list(dest.iterdir()) == []  # refused while loading: nothing was applied
