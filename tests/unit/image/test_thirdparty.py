from __future__ import annotations

import pytest

from peagent.errors import ImageError
from peagent.fetch import NotFoundError
from peagent.image.checksums import Digest
from peagent.image.thirdparty import StreamSource, image_name, prepare, resolve, write_url
from tests.support.bmaps import FIXTURES, fixture_image
from tests.support.flaky import FlakyServer
from tests.support.images import sha256
from tests.unit.image.test_compression import compress

IMAGE = fixture_image()
BMAP = (FIXTURES / "fixture.img.bmap").read_bytes()
SHA = sha256(IMAGE)


class Files:
    """A fake fetch over a dict of URLs, recording what was asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.asked: list[str] = []

    def __call__(self, urls, limit) -> bytes:
        self.asked.append(urls[0])
        for url in urls:
            if url in self.files:
                return self.files[url]
        raise NotFoundError(f"not found on any DP ({urls[0]}: HTTP 404)")


def test_image_names() -> None:
    assert image_name("http://dp/images/debian-12.raw.xz?x=1") == "debian-12.raw.xz"
    assert image_name("images/a%20b.img") == "a b.img"


def test_a_bmap_is_found_where_bmaptool_looks() -> None:
    files = Files({"http://dp/img/fixture.bmap": BMAP})
    job = prepare(StreamSource(url="img/fixture.img.zst"), ["http://dp/"], fetch=files)
    assert files.asked == ["http://dp/img/fixture.img.zst.bmap", "http://dp/img/fixture.img.bmap",
                           "http://dp/img/fixture.bmap"]
    assert job.bmap is not None and job.bmap.source == "http://dp/img/fixture.bmap"
    assert job.name == "fixture.img.zst" and job.digest is None and job.expected_size == len(IMAGE)


def test_no_bmap_found_is_fine_with_a_digest_but_not_without() -> None:
    job = prepare(StreamSource(url="http://dp/a.img", sha256=SHA.upper()), fetch=Files({}))
    assert job.bmap is None and job.digest == Digest("sha256", SHA, "given")
    with pytest.raises(ImageError, match=r"^nothing to verify a\.img against"):
        prepare(StreamSource(url="http://dp/a.img"), fetch=Files({}))


def test_an_explicit_bmap_must_exist_and_none_means_none() -> None:
    with pytest.raises(NotFoundError):
        prepare(StreamSource(url="http://dp/a.img", sha256=SHA, bmap="http://dp/other.bmap"), fetch=Files({}))
    files = Files({"http://dp/a.img.bmap": BMAP})
    assert prepare(StreamSource(url="http://dp/a.img", sha256=SHA, bmap=None), fetch=files).bmap is None
    assert files.asked == []


def test_the_checksum_file_entry_decides_which_stream_is_checked() -> None:
    sums = f"{'c' * 64}  debian.raw.xz\n{SHA}  debian.raw\n".encode()
    files = Files({"http://dp/SHA256SUMS": sums})
    job = prepare(StreamSource(url="http://dp/debian.raw.xz", checksum_url="SHA256SUMS", bmap=None),
                  ["http://dp"], fetch=files)
    assert job.digest == Digest("sha256", SHA, "http://dp/SHA256SUMS")
    assert job.compressed_digest == Digest("sha256", "c" * 64, "http://dp/SHA256SUMS")


def test_a_checksum_file_that_contradicts_the_sha256_given() -> None:
    files = Files({"http://dp/SUMS": f"{'d' * 64}  a.img\n".encode()})
    with pytest.raises(ImageError, match=r"^the sha256 given for a.img \(a{64}\) differs from http://dp/SUMS's \(d{64}\)"):
        prepare(StreamSource(url="http://dp/a.img", sha256="a" * 64, checksum_url="http://dp/SUMS", bmap=None),
                fetch=files)


def test_a_checksum_file_without_the_image() -> None:
    files = Files({"http://dp/SUMS": f"{'d' * 64}  b.img\n".encode()})
    with pytest.raises(ImageError, match=r"^http://dp/SUMS has no entry for a.img.gz \(nor for a.img\); it lists b.img$"):
        prepare(StreamSource(url="http://dp/a.img.gz", checksum_url="http://dp/SUMS", bmap=None), fetch=files)


def test_references_resolve_against_dps_then_the_image_url_then_the_filesystem(tmp_path) -> None:
    assert resolve("SUMS", ["http://dp1", "http://dp2/"]) == ["http://dp1/SUMS", "http://dp2/SUMS"]
    assert resolve("SUMS", [], "http://dp/images/a.img.xz") == ["http://dp/images/SUMS"]
    assert resolve("http://x/SUMS", [], "http://dp/a.img") == ["http://x/SUMS"]
    assert resolve(str(tmp_path / "SUMS"), [], str(tmp_path / "a.img")) == []
    with pytest.raises(NotFoundError, match=r"^the checksum file .*/SUMS does not exist$"):
        prepare(StreamSource(url=str(tmp_path / "a.img"), checksum_url=str(tmp_path / "SUMS")), fetch=Files({}))


def test_a_local_image_with_its_bmap_and_checksum_file(tmp_path) -> None:
    blob = compress("bzip2", IMAGE)
    (tmp_path / "fixture.img.bz2").write_bytes(blob)
    (tmp_path / "fixture.img.bmap").write_bytes(BMAP)
    (tmp_path / "SUMS").write_text(f"{SHA}  fixture.img\n")
    result = write_url(StreamSource(url=str(tmp_path / "fixture.img.bz2"), checksum_url=str(tmp_path / "SUMS")),
                       str(tmp_path / "t"))
    assert (tmp_path / "t").read_bytes() == IMAGE
    assert result.checks[1:] == ("4 bmap ranges, 148456 bytes, verified", f"sha256 of the image matches ({tmp_path}/SUMS)")


def test_write_url_end_to_end(tmp_path) -> None:
    blob = compress("xz", IMAGE)
    files = {"/i/fixture.img.xz": blob, "/i/fixture.img.bmap": BMAP,
             "/i/SHA256SUMS": f"{sha256(blob)}  fixture.img.xz\n".encode()}
    # Requests: the checksum file, two bmap candidates, the image (dropped once).
    with FlakyServer(files, [None, None, None, ("drop", 5000)]) as server:
        jobs, retries = [], []
        result = write_url(StreamSource(url="i/fixture.img.xz", checksum_url="i/SHA256SUMS"), str(tmp_path / "t"),
                           [server.url], on_job=jobs.append, on_retry=retries.append)
    assert (tmp_path / "t").read_bytes() == IMAGE
    assert retries == [f"{server.url}/i/fixture.img.xz at byte 5000: connection closed at byte 5000 of {len(blob)}"]
    assert jobs[0].bmap is not None
    assert result.checks == (f"xz stream complete ({len(blob)} bytes fetched)",
                             f"sha256 of the file as fetched matches ({server.url}/i/SHA256SUMS)",
                             "4 bmap ranges, 148456 bytes, verified")
