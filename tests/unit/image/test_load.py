"""Loading an image: trust, tables, DPs in turn, bases (and their absence)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from peagent.errors import ImageError, ManifestError, SignatureError, UsageError
from peagent.image.format import BLOCK
from peagent.image.load import load_image, manifest_locations
from peagent.image.sign import PublicKey
from tests.support.dp import embedded_dp
from tests.support.imagekit import make_tables, write_dir

KEY = Ed25519PrivateKey.generate()
PUBLIC = PublicKey(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
BASE = make_tables(b"".join(bytes([i]) * BLOCK for i in range(1, 9)), 2 * BLOCK, name="os", version="1")
NEW = make_tables(b"".join(bytes([i]) * BLOCK for i in (2, 1, 3, 4, 9, 9, 7, 8)), 2 * BLOCK, base=BASE,
                  name="os", version="2")
TOP = make_tables(b"".join(bytes([i]) * BLOCK for i in (2, 1, 3, 4, 9, 9, 7, 10)), 2 * BLOCK, base=NEW,
                  name="os", version="3")


@pytest.fixture
def dps(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """Two DPs: the first empty, the second with the images under images/os/<version>/."""
    roots = [tmp_path / "dp1", tmp_path / "dp2"]
    with contextlib.ExitStack() as stack:
        for root in roots:
            root.mkdir()
        servers = [stack.enter_context(embedded_dp(root)) for root in roots]
        images = roots[1] / "images" / "os"
        write_dir(BASE, images / "base")
        write_dir(NEW, images / "2", KEY)
        yield images, [s.url for s in servers]


def test_a_signed_image_in_a_directory(tmp_path) -> None:
    write_dir(make_tables(b"x" * 10_000), tmp_path / "img", KEY)
    image = load_image(str(tmp_path / "img"), keys=[PUBLIC])
    assert image.trust == f"signed by key {PUBLIC.key_id}"
    assert image.blob == (str(tmp_path / "img" / "image.blob"),) and image.base is None
    assert len(image.frames) == 1 and len(image.blocks) == 3


def test_an_image_on_the_dps_with_its_base(dps) -> None:
    _, urls = dps
    image = load_image("images/os/2/manifest.json", dps=urls, keys=[PUBLIC])
    assert image.locations == (urls[0] + "images/os/2/manifest.json", urls[1] + "images/os/2/manifest.json")
    assert image.blob == tuple(u + "images/os/2/image.blob" for u in urls)
    assert [i.label for i in image.chain] == ["os 2", "os 1"]
    assert image.base.blob == tuple(u + "images/os/base/image.blob" for u in urls)
    assert image.base.trust.startswith("base of os 2 (manifest sha256 ")


def test_trust_is_a_signature_or_a_pin(dps) -> None:
    images, urls = dps
    with pytest.raises(SignatureError, match=r"signed by key .* which this agent does not trust"):
        load_image("images/os/2/", dps=urls)
    pin = __import__("hashlib").sha256((images / "base" / "manifest.json").read_bytes()).hexdigest()
    assert load_image("images/os/base/", dps=urls, pin=pin).trust == f"pinned sha256 {pin}"
    with pytest.raises(SignatureError, match=r"not signed .* and the task does not pin"):
        load_image("images/os/base/", dps=urls)
    with pytest.raises(SignatureError, match="but the task pins 0000"):
        load_image("images/os/base/", dps=urls, pin="0" * 64)


def test_a_tampered_manifest_or_table_is_refused(dps) -> None:
    images, urls = dps
    manifest = images / "2" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"version": "2"', b'"version": "9"'))
    with pytest.raises(SignatureError, match="is invalid: the manifest was changed after it was signed"):
        load_image("images/os/2/", dps=urls, keys=[PUBLIC])
    frames = images / "base" / "frames.bin"
    frames.write_bytes(frames.read_bytes()[:-1] + b"\0")
    pin = __import__("hashlib").sha256((images / "base" / "manifest.json").read_bytes()).hexdigest()
    with pytest.raises(ManifestError, match=r"images/os/base/manifest.json: frames: sha256 does not match"):
        load_image("images/os/base/", dps=urls, pin=pin)


def test_a_missing_base_is_named(dps) -> None:
    images, urls = dps
    shutil.rmtree(images / "base")
    with pytest.raises(ImageError, match=r"os 2 is a differencing image, and its base image os 1 "
                                         r"\(../base/manifest.json\) is not on any DP"):
        load_image("images/os/2/", dps=urls, keys=[PUBLIC])


def test_a_replaced_base_is_refused(dps) -> None:
    images, urls = dps
    write_dir(make_tables(b"other" * 5000, name="os", version="1"), images / "base")
    with pytest.raises(ImageError, match=r"the base image os 1 \(../base/manifest.json\) of os 2 at .* is not the "
                                         r"one it was built on: its manifest's sha256 is [0-9a-f]{64}, expected"):
        load_image("images/os/2/", dps=urls, keys=[PUBLIC])


def test_a_chain_of_bases_is_followed_to_a_limit(dps) -> None:
    images, urls = dps
    from tests.support.imagekit import with_base_url
    write_dir(with_base_url(TOP, "../2/manifest.json"), images / "3", KEY)
    assert [i.label for i in load_image("images/os/3/", dps=urls, keys=[PUBLIC]).chain] == ["os 3", "os 2", "os 1"]
    with pytest.raises(ImageError, match="more than 1 bases deep"):
        load_image("images/os/3/", dps=urls, keys=[PUBLIC], max_depth=1)


def test_where_a_manifest_is_looked_for(tmp_path) -> None:
    assert manifest_locations("http://dp/images/x/") == ["http://dp/images/x/manifest.json"]
    assert manifest_locations("images/x/", ["http://a/", "http://b"]) == [
        "http://a/images/x/manifest.json", "http://b/images/x/manifest.json"]
    assert manifest_locations(str(tmp_path)) == [str(tmp_path / "manifest.json")]
    with pytest.raises(UsageError, match="no such file or directory, and no DPs"):
        manifest_locations("images/x/")
