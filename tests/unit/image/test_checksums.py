from __future__ import annotations

import pytest

from peagent.errors import ImageError
from peagent.image.checksums import Digest, Entry, find_digest, image_digests, parse_checksums

A, B, C = "a" * 64, "b" * 64, "c" * 128

# Lines as sha256sum, sha256sum --tag, openssl dgst and Fedora's clearsigned CHECKSUM files write them.
MIXED = f"""-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

# Fedora-Cloud-Base-40.raw.xz: 412345678 bytes
SHA256 (Fedora-Cloud-Base-40.raw.xz) = {A.upper()}
{B}  debian-12-generic-amd64.raw
{A} *binary mode.img
SHA256(openssl.img)= {B}
SHA2-256(openssl3.img)= {A}
SHA512 (big.img) = {C}
\\{A}  back\\\\slash\\nnewline.img
{"d" * 32}  old-md5.img
-----BEGIN PGP SIGNATURE-----
iQIzBAEBCAAdFiEE...
"""


def test_every_line_format() -> None:
    assert parse_checksums(MIXED) == [
        Entry("Fedora-Cloud-Base-40.raw.xz", "sha256", A),
        Entry("debian-12-generic-amd64.raw", "sha256", B),
        Entry("binary mode.img", "sha256", A),
        Entry("openssl.img", "sha256", B),
        Entry("openssl3.img", "sha256", A),
        Entry("big.img", "sha512", C),
        Entry("back\\slash\nnewline.img", "sha256", A),
        Entry("old-md5.img", "md5", "d" * 32),
    ]


def test_a_compressed_name_gives_the_digest_of_the_file_as_fetched() -> None:
    found = image_digests(MIXED, "Fedora-Cloud-Base-40.raw.xz", "Fedora-Cloud-Base-40.raw", "SUMS")
    assert found.image is None
    assert found.compressed == Digest("sha256", A, "SUMS")


def test_a_decompressed_name_gives_the_digest_of_the_image() -> None:
    found = image_digests(MIXED, "debian-12-generic-amd64.raw.xz", "debian-12-generic-amd64.raw", "SUMS")
    assert found.image == Digest("sha256", B, "SUMS") and found.compressed is None


def test_both_names_give_both_digests() -> None:
    text = f"{A}  x.img.gz\n{B}  x.img\n"
    found = image_digests(text, "x.img.gz", "x.img", "SUMS")
    assert found.image.hex == B and found.compressed.hex == A


def test_an_uncompressed_image_is_its_own_file() -> None:
    found = image_digests(MIXED, "big.img", "big.img", "SUMS")
    assert found.image == Digest("sha512", C, "SUMS") and found.compressed is None


def test_names_with_directories_match_by_their_last_component() -> None:
    text = f"{A}  ./x.img\n{B}  images/y.img\n"
    assert find_digest(parse_checksums(text), "x.img", "S").hex == A
    assert find_digest(parse_checksums(text), "y.img", "S").hex == B


def test_sha256_is_preferred_when_both_are_listed() -> None:
    text = f"SHA512 (x.img) = {C}\nSHA256 (x.img) = {A}\n"
    assert find_digest(parse_checksums(text), "x.img", "S") == Digest("sha256", A, "S")


def test_no_entry_for_the_image_is_a_precise_error() -> None:
    with pytest.raises(ImageError) as info:
        image_digests(MIXED, "debian-13.raw.xz", "debian-13.raw", "http://dp/SHA256SUMS")
    assert str(info.value) == (
        "http://dp/SHA256SUMS has no entry for debian-13.raw.xz (nor for debian-13.raw); it lists "
        "Fedora-Cloud-Base-40.raw.xz, back\\slash\nnewline.img, big.img, binary mode.img, debian-12-generic-amd64.raw, "
        "old-md5.img, openssl.img, openssl3.img")


def test_weak_digests_are_refused_by_name() -> None:
    with pytest.raises(ImageError, match=r"^S lists old-md5.img only with md5, which peagent does not accept as proof; "
                                         r"use a file with sha256 or sha512$"):
        image_digests(MIXED, "old-md5.img", "old-md5.img", "S")


def test_contradicting_entries_are_refused() -> None:
    with pytest.raises(ImageError, match=r"S lists x\.img more than once with different sha256 digests"):
        image_digests(f"{A}  x.img\n{B}  x.img\n", "x.img", "x.img", "S")


def test_not_a_checksum_file() -> None:
    with pytest.raises(ImageError, match=r"^http://dp/index.html is not a checksum file: no line like"):
        image_digests("<html><body>Not found</body></html>", "x.img", "x.img", "http://dp/index.html")
