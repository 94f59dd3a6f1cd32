"""Building images from real sources: virtual disks through qemu-img, a loop device (also mounted),
and a rebuilt ext4 pair whose differencing image, applied over A, gives B byte for byte."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from peagent.errors import DeviceError
from peagent.image.build import BuildOptions, build_from
from peagent.image.inspect import diff_images, inspect_image
from peagent.image.verify import verify_image
from tests.support.apply import apply_image
from tests.support.ext4pair import PairSpec, make_pair, raw_floor
from tests.support.images import mixed_image

MIB = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize(("fmt", "options"), [("qcow2", []), ("vmdk", []), ("vdi", []), ("vhdx", []),
                                              ("vpc", ["-o", "force_size=on"])])
def test_a_virtual_disk_is_converted_by_qemu_img_and_gives_the_raw_image(tmp_path: Path, fmt: str,
                                                                         options: list[str]) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (Debian: qemu-utils)")
    raw = tmp_path / "disk.raw"
    data = mixed_image(raw, 8 * MIB, seed=11)
    disk = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, *options, str(raw), str(disk)], check=True)
    m = build_from(str(disk), str(tmp_path / "img"), BuildOptions(name="vd", version="1"))
    assert (m.size, m.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert m.source == disk.name
    # The temporary raw file went next to the output, and is gone.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".peagent-raw")] == []
    assert [p.name for p in (tmp_path / "img").iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices)")
    backing = tmp_path / "golden.img"
    data = mixed_image(backing, 24 * MIB, seed=12)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        yield dev, data
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.root
def test_a_block_device_is_captured_read_only(loop: tuple[str, bytes], tmp_path: Path) -> None:
    dev, data = loop
    m = build_from(dev, str(tmp_path / "img"), BuildOptions(name="golden", version="1"))
    assert (m.size, m.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert verify_image(str(tmp_path / "img")).complete


@pytest.mark.root
def test_a_mounted_device_is_refused_unless_allowed(loop: tuple[str, bytes], tmp_path: Path) -> None:
    dev, _ = loop
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro", dev, str(mnt)], check=True)
    try:
        with pytest.raises(DeviceError, match=rf"{dev} is in use \({dev} is mounted on {mnt}\).*--allow-mounted"):
            build_from(dev, str(tmp_path / "img"), BuildOptions(name="golden", version="1"))
        assert not (tmp_path / "img" / "manifest.json").exists()
        m = build_from(dev, str(tmp_path / "img"), BuildOptions(name="golden", version="1"), allow_mounted=True,
                       overwrite=True)
        assert m.sha256 == sha256_file(Path(dev))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_differencing_image_over_a_rebuilt_ext4_gives_b_when_applied_over_a(tmp_path: Path) -> None:
    if shutil.which("mke2fs") is None:
        pytest.skip("mke2fs is not installed (Debian: e2fsprogs)")
    pair = make_pair(tmp_path / "pair", PairSpec.small(seed=3))
    a_dir, b_dir = tmp_path / "dp/os/A", tmp_path / "dp/os/B"
    build_from(str(pair.a), str(a_dir), BuildOptions(name="os", version="A"))
    build_from(str(pair.b), str(b_dir), BuildOptions(name="os", version="B"), base=str(a_dir))

    target = tmp_path / "disk"
    shutil.copyfile(pair.a, target)  # the disk holds A
    apply_image(str(b_dir), target, base_raw=pair.a)
    assert sha256_file(target) == sha256_file(pair.b)

    assert verify_image(str(b_dir)).complete
    missing, floor = raw_floor(pair.a, pair.b)
    info = inspect_image(str(b_dir))
    assert info.kinds["BASE"].frames and info.kinds["PARTIAL"].frames
    stored = sum(p.stat().st_size for p in b_dir.iterdir())
    assert stored <= 1.2 * floor, (stored, floor)
    # The diff's floor, from the block indexes alone, is the one counted on the raw images.
    build_from(str(pair.b), str(tmp_path / "Bfull"), BuildOptions(name="os", version="B"))
    d = diff_images(str(a_dir), str(tmp_path / "Bfull"))
    assert (d.missing_blocks, d.floor_bytes) == (missing, floor)
