"""Third-party images streamed onto real block devices (loop devices over sparse files) from a flaky server.

Every compression is written through connections that drop in the middle, onto a device full of
garbage, and read back whole. Bmap images check the hole policy on a device: zeroed with
BLKZEROOUT when nothing is known, discarded when the device guarantees zeros after a discard
(a loop device punches holes in its backing file), skipped after a zeroing erase, kept when asked.
A writer killed in the middle is rerun in a new process, which writes only what is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from peagent.disk.capabilities import EraseCaps
from peagent.errors import ImageError, VerifyError
from peagent.fetch import RangeReader
from peagent.image.bmap import parse_bmap
from peagent.image.checksums import Digest
from peagent.image.stream import StreamJob, write_stream
from peagent.image.thirdparty import StreamSource, write_url
from tests.support.bmaps import write_sparse
from tests.support.flaky import FlakyServer
from tests.support.images import mixed_image, sha256
from tests.unit.image.test_compression import compress

pytestmark = pytest.mark.root

MIB = 1 << 20
GARBAGE = bytes(range(1, 256)) * (MIB // 255) + b"\x01" * (MIB % 255)  # 1 MiB, never zero
SUFFIX = {"none": ".img", "gzip": ".img.gz", "xz": ".img.xz", "bzip2": ".img.bz2", "zstd": ".img.zst"}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> bytes:
    return mixed_image(tmp_path_factory.mktemp("img") / "disk.img", 24 * MIB, seed=5)


def multi(kind: str, data: bytes, parts: int = 3) -> bytes:
    """Several members or frames, as parallel compressors write them."""
    step = -(-len(data) // parts)
    return b"".join(compress(kind, data[i:i + step]) for i in range(0, len(data), step))


def garbage_device(loop, size: int) -> str:
    dev = loop(size)
    with open(dev, "r+b") as f:
        for _ in range(size // MIB):
            f.write(GARBAGE)
    return dev


def read(dev: str, length: int, offset: int = 0) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.mark.parametrize("kind", list(SUFFIX))
def test_every_compression_survives_dropped_connections(loop, image, kind) -> None:
    blob = multi(kind, image)
    dev = garbage_device(loop, 32 * MIB)
    path = "/disk" + SUFFIX[kind]
    # Each fault counts the bytes of its own answer, which starts where the one before stopped.
    faults = [("drop", len(blob) // 5), ("drop", len(blob) // 2), ("stall", len(blob) // 10, 3.0)]
    with FlakyServer({path: blob}, faults) as server, \
            RangeReader([server.url + path], timeout=(2.0, 0.5), sleep=lambda s: None) as reader:
        job = StreamJob(name=path[1:], digest=Digest("sha256", sha256(image), "the test"))
        result = write_stream(reader, dev, job)
        assert reader.retries == 3
    assert read(dev, len(image)) == image
    assert read(dev, MIB, len(image)) == GARBAGE  # past the image: untouched
    assert result.compression == kind and result.counts.written + result.counts.in_place == len(image)


def test_a_truncated_file_on_the_server_is_never_success(loop, image) -> None:
    blob = multi("xz", image)
    dev = garbage_device(loop, 32 * MIB)
    with FlakyServer({"/disk.img.xz": blob[: len(blob) - 1000]}) as server, \
            pytest.raises(VerifyError, match=r"^the xz data ends inside member 3, at compressed byte \d+: the "
                                             r"download is truncated or the file incomplete$"):
        write_url(StreamSource(url=server.url + "/disk.img.xz", sha256=sha256(image), bmap=None), dev)


def test_an_image_larger_than_the_disk_is_refused_before_writing(loop, image) -> None:
    dev = garbage_device(loop, 16 * MIB)
    with FlakyServer({"/disk.img.zst": multi("zstd", image)}) as server:
        with pytest.raises(ImageError, match=rf"^the image \({len(image)} bytes\) is larger than {dev} "
                                             rf"\({16 * MIB} bytes\)$"):
            write_url(StreamSource(url=server.url + "/disk.img.zst", sha256=sha256(image), size=len(image),
                                   bmap=None), dev)
        assert read(dev, MIB) == GARBAGE  # not a byte written
        with pytest.raises(ImageError, match=rf"^the image is larger than {dev} \({16 * MIB} bytes\): "):
            write_url(StreamSource(url=server.url + "/disk.img.zst", sha256=sha256(image), bmap=None), dev)


# --- bmap onto a device full of garbage -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sparse(tmp_path_factory, image) -> tuple[bytes, bytes]:
    """The image as a sparse file and its bmap, made by bmaptool (bmap-tools) itself."""
    where = tmp_path_factory.mktemp("bmap")
    write_sparse(where / "disk.img", image)
    subprocess.run(["bmaptool", "create", str(where / "disk.img"), "-o", str(where / "disk.img.bmap")],
                   check=True, capture_output=True)
    return image, (where / "disk.img.bmap").read_bytes()


def loop_caps(dev: str, **kw) -> EraseCaps:
    return EraseCaps(device=dev, interface="loop", discard=True, discard_granularity=4096, **kw)


@pytest.mark.parametrize(("how", "expected"), [
    ("unknown", "blkzeroout"),  # nothing known about the device: BLKZEROOUT
    ("discard", "discard"),  # a loop device: discarded blocks read as zeros
])
def test_bmap_holes_on_a_device_read_as_zeros(loop, sparse, how, expected) -> None:
    image, bmap_doc = sparse
    bmap = parse_bmap(bmap_doc, "disk.img.bmap")
    assert 0 < bmap.mapped_bytes < len(image)
    dev = garbage_device(loop, 32 * MIB)
    caps = loop_caps(dev, discard_zeroes=how == "discard")
    with FlakyServer({"/disk.img.gz": multi("gzip", image), "/disk.img.bmap": bmap_doc},
                     [None, ("drop", 100_000)]) as server:
        result = write_url(StreamSource(url=server.url + "/disk.img.gz"), dev, caps=caps)
    assert read(dev, len(image)) == image  # mapped ranges written, holes zero
    assert read(dev, MIB, len(image)) == GARBAGE
    assert result.counts.written == bmap.mapped_bytes
    assert result.counts.holes == {expected: len(image) - bmap.mapped_bytes}
    assert result.checks[-1] == f"{len(bmap.ranges)} bmap ranges, {bmap.mapped_bytes} bytes, verified"


def test_bmap_holes_are_skipped_on_a_zeroed_disk_and_kept_when_asked(loop, sparse) -> None:
    image, bmap_doc = sparse
    bmap = parse_bmap(bmap_doc, "disk.img.bmap")
    zeroed = loop(32 * MIB)  # a new sparse backing file: zeros, as after a zeroing erase
    garbage = garbage_device(loop, 32 * MIB)
    with FlakyServer({"/disk.img.zst": multi("zstd", image), "/disk.img.bmap": bmap_doc}) as server:
        source = StreamSource(url=server.url + "/disk.img.zst", sha256=sha256(image))
        result = write_url(source, zeroed, target_zeroed=True)
        kept = write_url(source, garbage, holes="keep", resume=False)
    assert read(zeroed, len(image)) == image
    assert result.counts.holes == {"skip": len(image) - bmap.mapped_bytes}
    on_disk = read(garbage, len(image))
    for r in bmap.ranges:
        assert on_disk[r.start:r.end] == image[r.start:r.end]
    first_hole = bmap.ranges[0].end
    assert on_disk[first_hole:first_hole + 4096] != image[first_hole:first_hole + 4096]  # old data stays
    assert kept.counts.holes == {"kept": len(image) - bmap.mapped_bytes}


def test_a_bmap_range_that_does_not_match_fails_the_write(loop, sparse) -> None:
    image, bmap_doc = sparse
    bmap = parse_bmap(bmap_doc, "disk.img.bmap")
    bad = bytearray(image)
    r = bmap.ranges[len(bmap.ranges) // 2]
    bad[r.start + 10] ^= 0xFF
    dev = garbage_device(loop, 32 * MIB)
    with FlakyServer({"/disk.img.bz2": multi("bzip2", bytes(bad)), "/disk.img.bmap": bmap_doc}) as server, \
            pytest.raises(VerifyError, match=rf"^bmap range {r.first}-{r.last} \(bytes {r.start}-{r.end - 1}\) of "
                                             rf"disk\.img\.bz2: sha256 is [0-9a-f]{{64}}; .*disk\.img\.bmap says "
                                             rf"{r.checksum}$"):
        write_url(StreamSource(url=server.url + "/disk.img.bz2"), dev)


# --- resume across processes ------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    from peagent.image.thirdparty import StreamSource, write_url
    done = 0
    def progress(n):
        global done
        done += n
        print(done, flush=True)
    write_url(StreamSource(url=sys.argv[1], sha256=sys.argv[3], bmap=None), sys.argv[2], progress=progress)
""")


def test_a_killed_writer_is_resumed_by_the_next_process(loop, image) -> None:
    blob = multi("xz", image)
    dev = garbage_device(loop, 32 * MIB)
    # The first process gets half the file, then the server goes silent; it is killed while it waits.
    with FlakyServer({"/disk.img.xz": blob}, [("stall", len(blob) // 2, 60.0)]) as server:
        url = server.url + "/disk.img.xz"
        child = subprocess.Popen([sys.executable, "-c", CHILD, url, dev, sha256(image)], stdout=subprocess.PIPE,
                                 text=True, cwd=Path(__file__).parents[2])
        assert child.stdout is not None
        written = 0
        while written < 8 * MIB:
            line = child.stdout.readline()
            assert line, "the first writer ended early"
            written = int(line)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        result = write_url(StreamSource(url=url, sha256=sha256(image), bmap=None), dev)
    print(f"first process: {written} bytes; rerun: {result.counts}")
    assert read(dev, len(image)) == image
    # What the first process wrote is compared and left alone: at least what it reported as done
    # (zero blocks on a garbage disk are written, not skipped, so they count as either).
    assert result.counts.in_place >= written - 4 * MIB
    assert result.counts.written <= len(image) - written + 4 * MIB
