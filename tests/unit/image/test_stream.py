from __future__ import annotations

import hashlib
import io
import os

import pytest

from peagent.errors import DeviceError, FetchError, ImageError, VerifyError
from peagent.image.bmap import parse_bmap
from peagent.image.checksums import Digest
from peagent.image.stream import BLOCK, StreamJob, write_image, write_stream
from tests.support.bmaps import BLOCK as BMAP_BLOCK
from tests.support.bmaps import FIXTURE_MAPPED, FIXTURES, fixture_image, make_bmap
from tests.support.images import sha256
from tests.unit.image.test_compression import compress, members

DATA = os.urandom(BLOCK) + bytes(BLOCK) + b"tail" * 1000


def digest(data: bytes, source: str = "the task") -> Digest:
    return Digest("sha256", sha256(data), source)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_write_image_writes_and_verifies(tmp_path, compression) -> None:
    target = tmp_path / "t.img"
    target.write_bytes(b"old data that is longer than nothing" * 300_000)
    seen = []
    result = write_image(io.BytesIO(compress(compression, DATA)), str(target), compression=compression,
                         sha256=sha256(DATA), size=len(DATA), progress=seen.append)
    assert target.read_bytes() == DATA
    assert result.size == len(DATA) and result.sha256 == sha256(DATA) and result.compression == compression
    assert sum(seen) == len(DATA)


@pytest.mark.parametrize(("kind", "suffix"), [("none", ".img"), ("gzip", ".img.gz"), ("xz", ".raw.xz"),
                                              ("bzip2", ".img.bz2"), ("zstd", ".img.zst")])
def test_every_compression_by_its_magic(tmp_path, kind, suffix) -> None:
    from tests.unit.image.test_compression import DATA as IMAGE

    blob = members(kind) if kind != "none" else IMAGE
    job = StreamJob(name="disk" + suffix, digest=digest(IMAGE))
    result = write_stream(io.BytesIO(blob), str(tmp_path / "t"), job)
    assert (tmp_path / "t").read_bytes() == IMAGE
    assert result.compression == kind
    assert result.checks[-1] == "sha256 of the image matches (the task)"


def test_a_corrupt_image_is_never_success(tmp_path) -> None:
    bad = bytearray(DATA)
    bad[5] ^= 1
    with pytest.raises(VerifyError) as info:
        write_stream(io.BytesIO(bytes(bad)), str(tmp_path / "t"), StreamJob(name="a.img", digest=digest(DATA)))
    assert str(info.value) == (f"sha256 of the {len(DATA)} bytes of a.img is {sha256(bytes(bad))}; "
                               f"expected {sha256(DATA)} (the task)")


def test_a_truncated_stream_is_never_success(tmp_path) -> None:
    blob = compress("zstd", DATA)
    with pytest.raises(VerifyError, match=r"^the zstd data ends inside frame 1, at compressed byte \d+: the download "
                                          "is truncated or the file incomplete$"):
        write_stream(io.BytesIO(blob[: len(blob) // 2]), str(tmp_path / "t"), StreamJob(digest=digest(DATA)))


def test_a_raw_stream_shorter_than_its_size_is_never_success(tmp_path) -> None:
    with pytest.raises(VerifyError, match=rf"^the image stream ended after 1000 bytes; expected {len(DATA)}$"):
        write_stream(io.BytesIO(DATA[:1000]), str(tmp_path / "t"), StreamJob(size=len(DATA), digest=digest(DATA)))


def test_a_stream_longer_than_announced_stops(tmp_path) -> None:
    with pytest.raises(VerifyError, match="longer than the expected 100 bytes"):
        write_stream(io.BytesIO(DATA), str(tmp_path / "t"), StreamJob(size=100, digest=digest(DATA)))


def test_the_digest_of_the_compressed_file(tmp_path) -> None:
    blob = compress("xz", DATA)
    job = StreamJob(name="a.img.xz", compressed_digest=digest(blob, "SHA256SUMS"))
    result = write_stream(io.BytesIO(blob), str(tmp_path / "t"), job)
    assert (tmp_path / "t").read_bytes() == DATA
    assert "sha256 of the file as fetched matches (SHA256SUMS)" in result.checks
    wrong = StreamJob(name="a.img.xz", compressed_digest=Digest("sha256", "0" * 64, "SHA256SUMS"))
    with pytest.raises(VerifyError, match=rf"^sha256 of the {len(blob)} bytes of a.img.xz as fetched is "
                                          rf"{sha256(blob)}; expected 0{{64}} \(SHA256SUMS\)$"):
        write_stream(io.BytesIO(blob), str(tmp_path / "t"), wrong)


def test_nothing_to_verify_against_is_refused_before_writing(tmp_path) -> None:
    with pytest.raises(ImageError, match=r"^nothing to verify a.img against: give its sha256, a checksum file, or a "
                                         r"bmap with range checksums$"):
        write_stream(io.BytesIO(DATA), str(tmp_path / "t"), StreamJob(name="a.img"))
    assert not (tmp_path / "t").exists()


def test_a_compressed_image_inside_the_compression_is_refused(tmp_path) -> None:
    blob = compress("gzip", compress("xz", DATA))
    with pytest.raises(ImageError, match=r"^a.img.gz holds xz data inside its gzip compression, not a raw disk image"):
        write_stream(io.BytesIO(blob), str(tmp_path / "t"), StreamJob(name="a.img.gz", digest=digest(DATA)))
    assert (tmp_path / "t").stat().st_size == 0


def test_a_suffix_mismatch_is_refused_before_the_target_is_touched(tmp_path) -> None:
    with pytest.raises(ImageError, match=r"the suffix \.gz says gzip, but the data is xz"):
        write_stream(io.BytesIO(compress("xz", DATA)), str(tmp_path / "t"), StreamJob(name="a.gz", digest=digest(DATA)))
    assert not (tmp_path / "t").exists()


def test_a_fetch_error_in_the_reader_thread_reaches_the_caller(tmp_path) -> None:
    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 3:
                raise FetchError("the DP went away")
            return b"x" * min(size, 1 << 20)

    with pytest.raises(FetchError, match="the DP went away"):
        write_stream(Failing(), str(tmp_path / "t"), StreamJob(digest=Digest("sha256", "0" * 64)))


def test_an_unwritable_target_is_a_device_error(tmp_path) -> None:
    with pytest.raises(DeviceError, match=r"cannot open .*/missing/t for writing: No such file or directory"):
        write_stream(io.BytesIO(DATA), str(tmp_path / "missing" / "t"), StreamJob(digest=digest(DATA)))


# --- resume: a rerun after a crash writes only what differs ----------------------------------------------


def test_a_rerun_writes_only_what_a_crashed_run_did_not(tmp_path) -> None:
    image = os.urandom(6 * BLOCK + 123)
    target = tmp_path / "t"
    target.write_bytes(image[: 3 * BLOCK] + b"\xee" * (4 * BLOCK))  # a crash after 3 blocks; old data after
    job = StreamJob(name="a.img.gz", digest=digest(image))
    result = write_stream(io.BytesIO(compress("gzip", image)), str(target), job)
    assert target.read_bytes() == image
    assert result.counts.in_place == 3 * BLOCK
    assert result.counts.written == 3 * BLOCK + 123


def test_resume_off_writes_everything(tmp_path) -> None:
    target = tmp_path / "t"
    target.write_bytes(DATA)
    result = write_stream(io.BytesIO(DATA), str(target), StreamJob(digest=digest(DATA)), resume=False)
    assert result.counts.in_place == 0 and result.counts.written == len(DATA)


def test_a_new_file_stays_sparse(tmp_path) -> None:
    image = os.urandom(BLOCK) + bytes(4 * BLOCK) + os.urandom(100)
    result = write_stream(io.BytesIO(image), str(tmp_path / "t"), StreamJob(digest=digest(image)))
    assert (tmp_path / "t").read_bytes() == image
    assert result.counts.zero_skipped == 4 * BLOCK
    assert os.stat(tmp_path / "t").st_blocks * 512 < 2 * BLOCK


# --- bmap --------------------------------------------------------------------------------------------------

FIXTURE_BMAP = parse_bmap((FIXTURES / "fixture.img.bmap").read_bytes(), "fixture.img.bmap")


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_a_bmap_writes_mapped_ranges_and_zeroes_holes_over_old_data(tmp_path, kind) -> None:
    image = fixture_image()
    target = tmp_path / "t"
    target.write_bytes(b"\xaa" * (2 * len(image)))
    job = StreamJob(name="fixture.img", bmap=FIXTURE_BMAP)
    result = write_stream(io.BytesIO(compress(kind, image)), str(target), job, resume=False)
    assert target.read_bytes() == image  # holes zeroed: the file is the image
    assert result.counts.written == FIXTURE_BMAP.mapped_bytes
    assert result.counts.holes == {"punch": len(image) - FIXTURE_BMAP.mapped_bytes}
    assert result.digest is None  # no digest asked for: the ranges prove the data
    assert result.checks[-1] == "4 bmap ranges, 148456 bytes, verified"


def test_a_bmap_into_a_new_file_leaves_holes(tmp_path) -> None:
    image = fixture_image()
    job = StreamJob(name="fixture.img", bmap=FIXTURE_BMAP, digest=digest(image))
    result = write_stream(io.BytesIO(image), str(tmp_path / "t"), job)
    assert (tmp_path / "t").read_bytes() == image
    assert result.counts.holes == {"skip": len(image) - FIXTURE_BMAP.mapped_bytes}
    assert result.digest == Digest("sha256", sha256(image))  # the whole image's, asked for
    assert os.stat(tmp_path / "t").st_blocks * 512 <= FIXTURE_BMAP.mapped_bytes + 3 * BMAP_BLOCK


def test_holes_can_be_kept_as_bmaptool_does(tmp_path) -> None:
    image = fixture_image()
    target = tmp_path / "t"
    target.write_bytes(b"\xaa" * len(image))
    write_stream(io.BytesIO(image), str(target), StreamJob(bmap=FIXTURE_BMAP), holes="keep", resume=False)
    written = target.read_bytes()
    for r in FIXTURE_BMAP.ranges:
        assert written[r.start:r.end] == image[r.start:r.end]
    assert written[4 * BMAP_BLOCK:10 * BMAP_BLOCK] == b"\xaa" * 6 * BMAP_BLOCK


def test_a_range_that_does_not_match_its_checksum(tmp_path) -> None:
    image = bytearray(fixture_image())
    image[101 * BMAP_BLOCK] ^= 1
    with pytest.raises(VerifyError) as info:
        write_stream(io.BytesIO(bytes(image)), str(tmp_path / "t"), StreamJob(name="fixture.img", bmap=FIXTURE_BMAP))
    actual = hashlib.sha256(image[100 * BMAP_BLOCK:131 * BMAP_BLOCK]).hexdigest()
    assert str(info.value) == (f"bmap range 100-130 (bytes 409600-536575) of fixture.img: sha256 is {actual}; "
                               f"fixture.img.bmap says {FIXTURE_BMAP.ranges[2].checksum}")


def test_data_in_a_hole_means_the_bmap_is_for_another_image(tmp_path) -> None:
    image = bytearray(fixture_image())
    image[50 * BMAP_BLOCK + 7] = 1
    with pytest.raises(VerifyError) as info:
        write_stream(io.BytesIO(bytes(image)), str(tmp_path / "t"), StreamJob(name="fixture.img", bmap=FIXTURE_BMAP))
    assert str(info.value) == ("fixture.img.bmap has bytes 45056-409599 unmapped (a hole), but the image holds data at "
                               "byte 204807: the bmap is not for this image")


def test_a_stream_shorter_than_the_bmap_says(tmp_path) -> None:
    image = fixture_image()
    with pytest.raises(VerifyError, match=rf"^the image stream ended after 1048576 bytes; expected {len(image)}$"):
        write_stream(io.BytesIO(image[:1 << 20]), str(tmp_path / "t"), StreamJob(bmap=FIXTURE_BMAP))


def test_a_bmap_without_checksums_needs_a_digest(tmp_path) -> None:
    image = fixture_image()
    bmap = parse_bmap(make_bmap(image, list(FIXTURE_MAPPED), version="1.2"), "old.bmap")
    with pytest.raises(ImageError, match=r"^nothing to verify the image against \(its bmap has no range checksums\)"):
        write_stream(io.BytesIO(image), str(tmp_path / "t"), StreamJob(bmap=bmap))
    result = write_stream(io.BytesIO(image), str(tmp_path / "t"), StreamJob(bmap=bmap, digest=digest(image)))
    assert (tmp_path / "t").read_bytes() == image
    assert result.checks[-2:] == ("4 bmap ranges, 148456 bytes, written (no checksums)",
                                  "sha256 of the image matches (the task)")


def test_a_size_that_contradicts_the_bmap(tmp_path) -> None:
    with pytest.raises(ImageError, match=r"^the image size given \(4096 bytes\) differs from the bmap's ImageSize "
                                         r"\(1049576 bytes, fixture.img.bmap\): they are not for the same image$"):
        write_stream(io.BytesIO(b""), str(tmp_path / "t"), StreamJob(size=4096, bmap=FIXTURE_BMAP))
