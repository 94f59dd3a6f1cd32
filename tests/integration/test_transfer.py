"""The transfer engine end to end: real images (peagent.image.build), ``peagent serve`` behind a
counting fault proxy (tests.support.faultproxy), loop devices over sparse files on the real disk.

What is counted is what the DP sent (the proxy's body bytes), not what the agent says it received:
a re-image from A to B costs what B does not share with A; a forced disconnect costs at most a
frame more than the image; a writer killed with SIGKILL mid-write is continued by a rerun that
fetches only what did not reach the disk (from its journal, or with the journal lost as after a
power loss, by the in-place check alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peagent.errors import DeviceError, ImageError, VerifyError
from peagent.image.build import BuildOptions, build_image
from peagent.image.format import BLOCK
from peagent.image.load import LoadedImage, load_image
from peagent.image.writer import WriteOptions, write_manifest_image
from tests.support.dp import embedded_dp
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import mixed_image

pytestmark = pytest.mark.root

MIB = 1 << 20
FRAME = 256 << 10
REPO = Path(__file__).resolve().parents[2]


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Makes loop devices over sparse files of the given size; detaches them all afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices)")
    backings: list[Path] = []

    def make(size: int) -> str:
        backing = tmp_path / f"disk{len(backings)}.img"
        with backing.open("wb") as f:
            f.truncate(size)
        backings.append(backing)
        return run("losetup", "--find", "--show", str(backing)).strip()

    yield make
    for backing in backings:
        for line in run("losetup", "--associated", str(backing)).splitlines():
            subprocess.run(["losetup", "--detach", line.split(":")[0]], check=False)


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "dp"
    root.mkdir()
    with embedded_dp(root) as server:
        yield root, server.url


def build(root: Path, name: str, data: bytes, **kw) -> str:
    """Build an image of ``data`` into the DP; returns its manifest's sha256 (the pin)."""
    build_image(_Stream(data), root / name, BuildOptions(name="os", version=name, frame_size=FRAME, level=3), **kw)
    return hashlib.sha256((root / name / "manifest.json").read_bytes()).hexdigest()


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        out = self.data[self.pos:self.pos + n if n >= 0 else None]
        self.pos += len(out)
        return out


def fill(device: str, size: int) -> None:
    with open(device, "r+b") as f:
        for _ in range(size // MIB):
            f.write(b"\xa5" * MIB)
        os.fsync(f.fileno())


def read_device(device: str, size: int) -> bytes:
    with open(device, "rb") as f:
        return f.read(size)


def new_version(data: bytes, seed: int) -> bytes:
    """B from A: a block inserted near the start (everything after moves by 4 KiB), a region rewritten."""
    rng = random.Random(seed)
    out = bytearray(data)
    out[2 * MIB:2 * MIB] = rng.randbytes(BLOCK)
    del out[-BLOCK:]
    out[20 * MIB:20 * MIB + 300_000] = rng.randbytes(300_000)
    return bytes(out)


def unshared_fetch(a: LoadedImage, b: LoadedImage) -> int:
    """Compressed bytes of B's frames holding a block found nowhere in A: what a re-image must fetch."""
    in_a = {a.blocks[k] for k in range(len(a.blocks))}
    frames = {k * BLOCK // FRAME for k in range(len(b.blocks)) if b.blocks[k] not in in_a}
    return sum(b.frames.lengths[j] for j in frames)


@pytest.fixture(scope="module")
def data_a(tmp_path_factory) -> bytes:
    return mixed_image(tmp_path_factory.mktemp("raw") / "a.raw", 48 * MIB, seed=5)


def test_an_image_onto_a_loop_device(dp, loop, data_a, tmp_path) -> None:
    root, url = dp
    pin = build(root, "a", data_a)
    device = loop(64 * MIB)
    fill(device, 64 * MIB)  # an old disk: nothing reads as zeros, the holes must be made so
    with FaultProxy(url) as proxy:
        image = load_image("a/", dps=[proxy.url], pin=pin)
        report = write_manifest_image(image, device, WriteOptions(journal=tmp_path / "run" / "a.journal"))
        proxy.wait_idle()
        served = proxy.body_bytes("/a/image.blob")
    assert read_device(device, len(data_a)) == data_a
    assert read_device(device, 64 * MIB)[len(data_a):] == b"\xa5" * (16 * MIB)  # past the image: untouched
    assert served == image.manifest.blob.size == report.fetched
    assert report.direct and report.hole_method == "discard" and report.holes_zeroed > 0
    assert not (tmp_path / "run" / "a.journal").exists()  # done: the journal is gone


def test_an_image_larger_than_the_device_is_refused_before_writing(dp, loop, data_a) -> None:
    root, url = dp
    pin = build(root, "a", data_a)
    device = loop(32 * MIB)
    fill(device, 32 * MIB)
    with pytest.raises(ImageError, match=rf"the image \({len(data_a)} bytes\) is larger than {device} "
                                         rf"\({32 * MIB} bytes\)"):
        write_manifest_image(load_image("a/", dps=[url], pin=pin), device)
    assert read_device(device, 32 * MIB) == b"\xa5" * (32 * MIB)


def test_a_mounted_device_is_refused(dp, loop, data_a, tmp_path) -> None:
    root, url = dp
    pin = build(root, "a", data_a)
    device = loop(64 * MIB)
    run("mkfs.ext4", "-q", device)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", device, str(mnt))
    try:
        with pytest.raises(DeviceError, match=rf"cannot open {device} for writing: .*busy.*mounted"):
            write_manifest_image(load_image("a/", dps=[url], pin=pin), device)
    finally:
        run("umount", str(mnt))


def test_a_reimage_fetches_only_what_b_does_not_share_with_a(dp, loop, data_a) -> None:
    root, url = dp
    data_b = new_version(data_a, 6)
    pins = {"a": build(root, "a", data_a), "b": build(root, "b", data_b)}
    device = loop(64 * MIB)
    with FaultProxy(url) as proxy:
        a = load_image("a/", dps=[proxy.url], pin=pins["a"])
        b = load_image("b/", dps=[proxy.url], pin=pins["b"])
        write_manifest_image(a, device)
        proxy.wait_idle()
        before = proxy.body_bytes("/b/image.blob")
        report = write_manifest_image(b, device, WriteOptions(previous=a))
        proxy.wait_idle()
        served = proxy.body_bytes("/b/image.blob") - before
    assert read_device(device, len(data_b)) == data_b
    assert served == report.fetched == unshared_fetch(a, b)
    assert served < b.manifest.blob.size / 10 and report.reused_local > 16 * MIB


def test_a_differencing_image_over_its_base_fetches_only_its_packed_blocks(dp, loop, data_a) -> None:
    from peagent.image.differencing import open_base

    root, url = dp
    data_b = new_version(data_a, 7)
    pin_a = build(root, "a", data_a)
    pin_b = build(root, "b", data_b, base=open_base(str(root / "a"), str(root / "b")))
    device = loop(64 * MIB)
    with FaultProxy(url) as proxy:
        write_manifest_image(load_image("a/", dps=[proxy.url], pin=pin_a), device)
        proxy.wait_idle()
        before = proxy.body_bytes()
        b = load_image("b/", dps=[proxy.url], pin=pin_b)
        assert b.base is not None and b.base.manifest_sha256 == pin_a
        report = write_manifest_image(b, device)
        proxy.wait_idle()
        blobs = proxy.body_bytes("/b/image.blob"), proxy.body_bytes() - before
    assert read_device(device, len(data_b)) == data_b
    assert report.reuse == "base image os a found on the target"
    assert blobs[0] <= b.manifest.blob.size and proxy.body_bytes("/a/image.blob") == b.base.manifest.blob.size


@pytest.mark.parametrize("fault", [Fault("drop", offset=5_000_000), Fault("truncate", offset=9_000_000),
                                   Fault("stall", offset=2_000_000, seconds=5)])
def test_a_forced_disconnect_costs_at_most_a_frame(dp, loop, data_a, fault) -> None:
    root, url = dp
    pin = build(root, "a", data_a)
    device = loop(64 * MIB)
    with FaultProxy(url, [fault]) as proxy:
        image = load_image("a/", dps=[proxy.url], pin=pin)
        report = write_manifest_image(image, device, WriteOptions(timeout=(2.0, 1.0)))
        proxy.wait_idle()
        extra = proxy.body_bytes("/a/image.blob") - image.manifest.blob.size
        assert proxy.fired, proxy.report()
    assert read_device(device, len(data_a)) == data_a
    assert report.retries >= 1 and 0 <= extra <= FRAME, proxy.report()


def test_a_frame_corrupt_on_every_dp_is_an_error(dp, loop, data_a, tmp_path) -> None:
    root, url = dp
    pin = build(root, "a", data_a)
    device = loop(64 * MIB)
    image = load_image("a/", dps=[url], pin=pin)
    j = max(range(len(image.frames)), key=lambda i: image.frames.lengths[i])
    flip = Fault("flip", offset=image.frames.offsets[j] + 100, path="/a/image.blob", times=None)
    with FaultProxy(url, [flip]) as proxy:
        image = load_image("a/", dps=[proxy.url], pin=pin)
        with pytest.raises(VerifyError, match=rf"frame {j} of os a .* does not match its sha256 as served by "
                                              r"http://127.0.0.1:\d+: the image on the DPs is damaged"):
            write_manifest_image(image, device, WriteOptions(journal=tmp_path / "bad.journal"))
    assert (tmp_path / "bad.journal").exists()  # not done: a rerun continues


WRITER = """
import sys
from pathlib import Path
from peagent.image.load import load_image
from peagent.image.writer import WriteOptions, write_manifest_image
url, pin, device, journal = sys.argv[1:5]
image = load_image("a/", dps=[url], pin=pin)
write_manifest_image(image, device, WriteOptions(journal=Path(journal), limit_rate=6 << 20))
print("finished")
"""


def frames_on_disk(image: LoadedImage, device: str) -> set[int]:
    data = read_device(device, image.manifest.size)
    m = image.manifest
    return {j for j in range(m.frame_count)
            if hashlib.sha256(data[slice(*m.frame_extent(j))]).digest() == image.frames.hashes[32 * j:32 * j + 32]}


@pytest.mark.parametrize("journal_kept", [True, False], ids=["crash", "power-loss"])
def test_a_killed_writer_is_continued_by_a_rerun(dp, loop, data_a, tmp_path, journal_kept) -> None:
    root, url = dp
    pin = build(root, "a", data_a)
    device = loop(64 * MIB)
    fill(device, 64 * MIB)
    journal = tmp_path / "run" / "write.journal"
    with FaultProxy(url) as proxy:
        child = subprocess.Popen([sys.executable, "-c", WRITER, proxy.url, pin, device, str(journal)],
                                 env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proxy.body_bytes("/a/image.blob") < 5 * MIB and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        proxy.wait_idle()
        first = proxy.body_bytes("/a/image.blob")
        image = load_image("a/", dps=[proxy.url], pin=pin)
        on_disk = frames_on_disk(image, device)
        missing = sum(image.frames.lengths[j] for j in range(image.manifest.frame_count) if j not in on_disk)
        if not journal_kept:
            journal.unlink()  # the PE's /run is RAM: a power loss takes the journal along
        report = write_manifest_image(image, device, WriteOptions(journal=journal))
        proxy.wait_idle()
        second = proxy.body_bytes("/a/image.blob") - first
    assert read_device(device, len(data_a)) == data_a
    blob = image.manifest.blob.size
    assert 0 < missing < blob and second == report.fetched
    assert second <= missing + 2 * FRAME, (first, second, missing, blob)  # only what did not reach the disk
    print(f"SIGKILL ({'journal kept' if journal_kept else 'journal lost'}): blob {blob}, first run {first}, "
          f"rerun {second}, total {first + second} = blob + {first + second - blob}; "
          f"frames on disk after the kill {len(on_disk)}, missing {missing}")
    with contextlib.suppress(FileNotFoundError):
        journal.unlink()
