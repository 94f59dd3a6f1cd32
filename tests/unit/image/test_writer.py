"""The transfer engine on file targets, with DPs (peagent serve) on loopback.

Every test ends with the target compared byte for byte with the image, or with an error and the
target not reported done. Images are made with tests.support.imagekit (64 KiB frames)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from peagent.errors import ImageError, VerifyError
from peagent.image.format import BLOCK
from peagent.image.load import load_image
from peagent.image.writer import WriteOptions, write_manifest_image
from tests.support.dp import embedded_dp
from tests.support.imagekit import Made, make_tables, write_dir

FRAME = 64 << 10
MIB = 1 << 20


def texture(seed: int, size: int) -> bytes:
    """Random, text-like and zero stretches of 64 KiB: blocks that compress, and holes."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = rng.choice(("random", "text", "zero"))
        n = 64 << 10
        out += rng.randbytes(n) if kind == "random" else bytes(n) if kind == "zero" else \
            (b"lorem ipsum %d " % rng.randrange(1000)) * (n // 15) + b"x" * (n % 15 if n % 15 else 0)
    return bytes(out[:size])


def edit(data: bytes, seed: int) -> bytes:
    """A new version: a block inserted (what follows moves by 4 KiB), a region changed, one zeroed."""
    rng = random.Random(seed)
    out = bytearray(data)
    out[MIB:MIB] = rng.randbytes(BLOCK)
    del out[-BLOCK:]
    out[3 * MIB:3 * MIB + 40_000] = rng.randbytes(40_000)
    out[2 * MIB:2 * MIB + FRAME] = bytes(FRAME)
    return bytes(out)


A = texture(1, 4 * MIB)
B = edit(A, 2)


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "dp"
    root.mkdir()
    with embedded_dp(root) as server:
        yield root, server.url


def publish(root: Path, made: Made, name: str) -> str:
    write_dir(made, root / name)
    return hashlib.sha256((root / name / "manifest.json").read_bytes()).hexdigest()


def load(url: str, name: str, pin: str):
    return load_image(f"{name}/", dps=[url], pin=pin)


def write(image, target: Path, **options):
    return write_manifest_image(image, str(target), WriteOptions(**options))


def test_a_full_image_into_a_new_file(dp, tmp_path) -> None:
    root, url = dp
    a = make_tables(A, FRAME, name="a")
    image = load(url, "a", publish(root, a, "a"))
    target = tmp_path / "t.img"
    seen = []
    report = write(image, target, journal=tmp_path / "j")
    assert target.read_bytes() == A
    assert report.fetched == report.planned_fetch == len(a.blob)
    assert report.holes_skipped > 0
    assert report.written + report.holes_skipped == len(A) and report.hole_method == "skip"
    assert not (tmp_path / "j").exists()  # done: the journal is gone
    report = write_manifest_image(image, str(target), WriteOptions(), progress=seen.append)
    assert report.fetched == 0 and report.in_place + report.holes_zeroed == len(A)  # all there already
    assert sum(seen) == len(A) and target.read_bytes() == A


def test_a_reimage_fetches_only_what_the_new_version_does_not_share(dp, tmp_path) -> None:
    root, url = dp
    a, b = make_tables(A, FRAME, name="os", version="a"), make_tables(B, FRAME, name="os", version="b")
    image_a, image_b = load(url, "a", publish(root, a, "a")), load(url, "b", publish(root, b, "b"))
    target = tmp_path / "t.img"
    write(image_a, target)
    report = write(image_b, target, previous=image_a)
    assert target.read_bytes() == B
    # Frames of B whose blocks are nowhere in A: the inserted block, the changed region.
    blocks_a = {a.blocks[k] for k in range(len(a.blocks))}
    new_frames = {k * BLOCK // FRAME for k in range(len(b.blocks)) if b.blocks[k] not in blocks_a}
    assert report.fetched == sum(b.frames.lengths[j] for j in new_frames)
    assert report.reused_local > MIB and report.fallbacks == 0
    assert report.reuse == "previous image os a"


def test_a_scan_finds_moved_blocks_without_being_told(dp, tmp_path) -> None:
    root, url = dp
    a, b = make_tables(A, FRAME), make_tables(B, FRAME)
    publish(root, a, "a")
    image_b = load(url, "b", publish(root, b, "b"))
    target = tmp_path / "t.img"
    target.write_bytes(A)
    report = write(image_b, target, reuse="scan")
    assert target.read_bytes() == B
    assert report.reuse == "scan of the target" and report.fetched < len(b.blob) / 4


def test_a_wrong_previous_image_costs_fetches_never_a_wrong_byte(dp, tmp_path) -> None:
    root, url = dp
    a, b = make_tables(A, FRAME), make_tables(B, FRAME)
    image_a, image_b = load(url, "a", publish(root, a, "a")), load(url, "b", publish(root, b, "b"))
    target = tmp_path / "t.img"
    target.write_bytes(texture(7, len(A)))  # not A at all
    report = write(image_b, target, previous=image_a)
    assert target.read_bytes() == B and report.fallbacks > 0


def test_a_differencing_image_over_its_base_on_the_target(dp, tmp_path) -> None:
    root, url = dp
    base = make_tables(A, FRAME, name="os", version="1")
    new = make_tables(B, FRAME, base=base, name="os", version="2")
    publish(root, base, "base")
    image = load(url, "new", publish(root, new, "new"))
    target = tmp_path / "t.img"
    target.write_bytes(A)
    report = write(image, target)
    assert target.read_bytes() == B
    assert report.reuse == "base image os 1 found on the target"
    assert report.fetched <= len(new.blob)  # the packed blocks, nothing of the base's blob
    fresh = write(image, tmp_path / "fresh.img")  # no base on the target: its frames come from the DPs
    assert (tmp_path / "fresh.img").read_bytes() == B and fresh.fetched > len(new.blob)


def test_a_corrupt_frame_on_every_dp_is_an_error_and_not_done(dp, tmp_path) -> None:
    root, url = dp
    a = make_tables(A, FRAME)
    image = load(url, "a", publish(root, a, "a"))
    blob = root / "a" / "image.blob"
    data = bytearray(blob.read_bytes())
    j = next(j for j in range(len(a.frames)) if a.frames.lengths[j])
    data[a.frames.offsets[j] + a.frames.lengths[j] // 2] ^= 0x40
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(0, os.stat(blob).st_mtime_ns))  # the same ETag as before: a damaged copy, not a new one
    with pytest.raises(VerifyError, match=rf"frame {j} of img 1 \(image bytes {j * FRAME}-{(j + 1) * FRAME - 1}\) "
                                          r"does not match its sha256 as served by http://127.0.0.1:\d+: the image "
                                          r"on the DPs is damaged"):
        write(image, tmp_path / "t.img", journal=tmp_path / "j")
    assert (tmp_path / "j").exists()  # not done: a rerun continues


def test_a_corrupt_frame_on_one_dp_is_taken_from_another(dp, tmp_path) -> None:
    root, url = dp
    a = make_tables(A, FRAME)
    pin = publish(root, a, "a")
    good = tmp_path / "good"
    good.mkdir()
    write_dir(a, good / "a")
    with embedded_dp(good) as server:
        blob = root / "a" / "image.blob"
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 1
        blob.write_bytes(bytes(data))
        image = load_image("a/", dps=[url, server.url], pin=pin)
        report = write(image, tmp_path / "t.img", connections=1)
    assert (tmp_path / "t.img").read_bytes() == A and report.fallbacks == 1


def test_an_interrupted_write_continues_from_its_journal(dp, tmp_path) -> None:
    root, url = dp
    a = make_tables(A, FRAME)
    image = load(url, "a", publish(root, a, "a"))
    target, journal = tmp_path / "t.img", tmp_path / "run" / "j"
    done = [0]

    def crash(n: int) -> None:
        done[0] += n
        if done[0] > 2 * MIB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_manifest_image(image, str(target), WriteOptions(journal=journal), progress=crash)
    assert journal.exists()
    report = write(image, target, journal=journal)
    assert target.read_bytes() == A
    assert report.journaled > MIB and report.fetched < len(a.blob) - MIB / 2


def test_a_file_image_is_not_written_to_a_disk(dp, tmp_path) -> None:
    root, url = dp
    from dataclasses import replace
    files = make_tables(A[:FRAME], FRAME)
    files.manifest = replace(files.manifest, kind="files")
    image = load(url, "f", publish(root, files, "f"))
    with pytest.raises(ImageError, match="is a file image"):
        write(image, tmp_path / "t.img")
