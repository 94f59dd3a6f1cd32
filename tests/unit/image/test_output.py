from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from peagent.errors import DeviceError, UsageError
from peagent.image.build import BuildOptions, build_from, build_image
from peagent.image.output import HttpPut, LocalDir, UploadError, open_destination
from peagent.image.verify import verify_image
from peagent.server.dp import DPServer, serve
from tests.support.images import mixed_image
from tests.unit.image.crafted import FRAME, NEW, A

TOKEN = "0123456789abcdef-upload"
FILES = ["blocks.bin.zst", "frames.bin", "image.blob", "manifest.json"]


class Failing(io.RawIOBase):
    """A source that breaks after some frames, as a disk with a bad sector does."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        self.inner = io.BytesIO(data)
        self.fail_at = fail_at

    def read(self, size: int = -1) -> bytes:
        if self.inner.tell() >= self.fail_at:
            raise OSError(5, "Input/output error")
        return self.inner.read(size)


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[DPServer]:
    (tmp_path / "dp").mkdir()
    server = serve(tmp_path / "dp", "127.0.0.1", 0, upload_token=TOKEN)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_local_build_appears_only_when_whole(tmp_path: Path) -> None:
    out = tmp_path / "img"
    with pytest.raises(DeviceError, match=r"reading the source failed after 49152 bytes: Input/output error"):
        build_image(Failing(NEW, 3 * FRAME), open_destination(out), BuildOptions(name="os", version="1",
                                                                                 frame_size=FRAME))
    assert names(out) == []  # no image, and no temporary files either
    build_image(io.BytesIO(NEW), open_destination(out), BuildOptions(name="os", version="1", frame_size=FRAME))
    assert names(out) == FILES
    with pytest.raises(UsageError, match="already holds an image"):
        open_destination(out)
    assert isinstance(open_destination(out, overwrite=True), LocalDir)


def test_an_upload_streams_the_blob_then_the_small_files(dp: DPServer, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    from peagent.image.sign import generate_keys

    generate_keys(tmp_path / "keys")
    source = tmp_path / "disk.img"
    data = mixed_image(source, 6 << 20, seed=4)
    url = dp.url + "images/os/1/"
    m = build_from(str(source), url, BuildOptions(name="os", version="1"), token=TOKEN,
                   key=tmp_path / "keys" / "peagent.key")
    assert m.size == len(data)
    stored = dp.root / "images/os/1"
    assert names(stored) == sorted([*FILES, "manifest.json.sig"])
    report = verify_image(url)  # over HTTP, as a deploy would read it
    assert report.complete and report.signature.startswith("signed by key")
    # The same again is refused before a byte is read; with overwrite it replaces the image.
    with pytest.raises(UsageError, match="exists: an image is already there"):
        build_from(str(source), url, BuildOptions(name="os", version="1"), token=TOKEN)
    build_from(str(source), url, BuildOptions(name="os", version="1"), token=TOKEN, overwrite=True)


def test_a_differencing_build_uploads_over_a_base_on_the_dp(dp: DPServer, tmp_path: Path) -> None:
    (tmp_path / "a.img").write_bytes(A)
    (tmp_path / "b.img").write_bytes(NEW)
    options = {"frame_size": FRAME}
    build_from(str(tmp_path / "a.img"), dp.url + "os/1/", BuildOptions(name="os", version="1", **options),
               token=TOKEN)
    m = build_from(str(tmp_path / "b.img"), dp.url + "os/2/", BuildOptions(name="os", version="2", **options),
                   token=TOKEN, base=dp.url + "os/1/")
    assert m.base is not None and m.base.url == "../1/manifest.json"
    report = verify_image(dp.url + "os/2/")
    assert report.complete and report.base == dp.url + "os/1/manifest.json"


def test_a_wrong_token_fails_before_reading_the_source(dp: DPServer, tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="HTTP 401: the DP refuses the upload token"):
        build_from(str(tmp_path / "does-not-matter"), dp.url + "x/", BuildOptions(name="os", version="1"),
                   token="wrong-token-wrong-token")


def test_a_failed_build_leaves_nothing_on_the_dp(dp: DPServer) -> None:
    dest = HttpPut(dp.url + "os/1/", token=TOKEN)
    with pytest.raises(DeviceError, match="Input/output error"):
        build_image(Failing(NEW, 3 * FRAME), dest, BuildOptions(name="os", version="1", frame_size=FRAME))
    leftover = [p for p in dp.root.rglob("*") if p.is_file()]
    assert leftover == []


def test_an_upload_the_dp_refuses_midway_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "dp").mkdir()
    server = serve(tmp_path / "dp", "127.0.0.1", 0, upload_token=TOKEN, max_upload=100_000)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        source = tmp_path / "disk.img"
        mixed_image(source, 4 << 20, seed=5)
        with pytest.raises(UploadError, match=r"image.blob"):
            build_from(str(source), server.url + "os/1/", BuildOptions(name="os", version="1"), token=TOKEN)
        assert [p for p in (tmp_path / "dp").rglob("*") if p.is_file()] == []
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_is_for_urls_only(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="an upload token is for an http:// output"):
        open_destination(tmp_path, token=TOKEN)


def test_a_dp_without_uploads_is_named_before_the_build(tmp_path: Path) -> None:
    (tmp_path / "dp").mkdir()
    server = serve(tmp_path / "dp", "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with pytest.raises(UploadError, match=r"does not accept uploads \(it allows GET, HEAD\); start it with an "
                                              r"upload token \(peagent serve --upload-token\)"):
            HttpPut(server.url + "os/1/", token=TOKEN)
    finally:
        server.shutdown()
        server.server_close()


def test_a_full_output_filesystem_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    dest = LocalDir(tmp_path / "usb")

    def full(data: bytes) -> int:
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(dest._blob, "write", full)
    with pytest.raises(DeviceError, match=r"usb failed: File too large: its filesystem cannot hold a file this "
                                          r"large \(FAT32 stops at 4 GiB; use exFAT or ext4\)"):
        build_image(io.BytesIO(NEW), dest, BuildOptions(name="os", version="1", frame_size=FRAME))
    assert names(tmp_path / "usb") == []
