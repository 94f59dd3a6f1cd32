from __future__ import annotations

import hashlib
import re

import pytest

from peagent.errors import ImageError
from peagent.image.bmap import bmap_refs, parse_bmap
from tests.support.bmaps import BLOCK, FIXTURE_MAPPED, FIXTURE_SIZE, FIXTURES, fixture_image, make_bmap, reseal

REAL = (FIXTURES / "fixture.img.bmap").read_bytes()  # made by bmaptool 3.6 (see tests.support.bmaps)


def test_a_bmap_made_by_bmaptool() -> None:
    bmap = parse_bmap(REAL, "fixture.img.bmap")
    image = fixture_image()
    assert (bmap.version, bmap.image_size, bmap.block_size, bmap.checksum_type) == ("2.0", FIXTURE_SIZE, BLOCK, "sha256")
    assert bmap.blocks_count == 257 and bmap.mapped_blocks == 4 + 1 + 31 + 1
    assert [(r.first, r.last) for r in bmap.ranges] == list(FIXTURE_MAPPED)
    # The last range is cut at ImageSize: the image is not a whole number of blocks.
    assert bmap.ranges[-1].start == 256 * BLOCK and bmap.ranges[-1].end == FIXTURE_SIZE
    for r in bmap.ranges:
        assert r.checksum == hashlib.sha256(image[r.start:r.end]).hexdigest()
    assert bmap.verifies_data
    assert bmap.mapped_bytes == 36 * BLOCK + 1000
    assert bmap.describe() == "bmap 2.0: 148456 of 1049576 bytes mapped (14.1%) in 4 ranges, sha256 per range"


def test_a_bmap_made_without_range_checksums() -> None:
    bmap = parse_bmap((FIXTURES / "fixture.img.no-checksum.bmap").read_bytes())
    assert bmap.checksum_type == "sha256" and not bmap.verifies_data
    assert all(r.checksum is None for r in bmap.ranges)


def test_a_damaged_bmap_is_refused_by_its_own_checksum() -> None:
    damaged = REAL.replace(b"> 100-130 <", b"> 100-129 <")
    said = re.search(rb"<BmapFileChecksum> (\w+) ", REAL)[1].decode()
    actual = hashlib.sha256(damaged.replace(said.encode(), b"0" * 64)).hexdigest()
    with pytest.raises(ImageError) as info:
        parse_bmap(damaged, "http://dp/fixture.img.bmap")
    assert str(info.value) == (f"http://dp/fixture.img.bmap is damaged: its sha256 is {actual}, but it says {said} "
                               "(<BmapFileChecksum>); fetch it again or regenerate it with bmaptool create")


def test_a_resealed_bmap_parses() -> None:
    assert parse_bmap(reseal(REAL.replace(b"> 100-130 <", b"> 100-129 <").replace(b"> 37  <", b"> 36  <")))


@pytest.mark.parametrize(("version", "checksum_type"), [("1.3", "sha1"), ("1.4", "sha256"), ("2.0", "sha512"),
                                                        ("2.0", "md5"), ("2.0", "sha1")])
def test_older_formats_and_other_checksum_types(version, checksum_type) -> None:
    data = fixture_image()
    bmap = parse_bmap(make_bmap(data, list(FIXTURE_MAPPED), version=version, checksum=checksum_type))
    assert bmap.checksum_type == checksum_type and bmap.verifies_data
    assert bmap.ranges[0].checksum == hashlib.new(checksum_type, data[:4 * BLOCK]).hexdigest()


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_formats_before_1_3_have_no_checksums(version) -> None:
    bmap = parse_bmap(make_bmap(fixture_image(), list(FIXTURE_MAPPED), version=version))
    assert bmap.checksum_type is None and not bmap.verifies_data and len(bmap.ranges) == 4


DATA = bytes(10 * BLOCK)
GOOD = make_bmap(DATA, [(0, 1), (5, 5)])


@pytest.mark.parametrize(("doc", "message"), [
    (b"not xml", "the bmap is not a bmap (not well-formed XML: syntax error: line 1, column 0)"),
    (b"<other/>", "the bmap is not a bmap: its root element is <other>, not <bmap>"),
    (GOOD.replace(b'version="2.0"', b'version="3.0"'), "the bmap: bmap format version 3.0 is not supported "
     "(1.0 to 2.0 are)"),
    (GOOD.replace(b'version="2.0"', b'version="two"'), "the bmap: bmap version 'two' is not major.minor"),
    (make_bmap(DATA, [(0, 1)], version="1.2").replace(b"<BlocksCount> 10 </BlocksCount>", b""),
     "the bmap has no <BlocksCount>"),
    (make_bmap(DATA, [(0, 1)], version="1.2").replace(b"<BlocksCount> 10 ", b"<BlocksCount> 11 "),
     "the bmap is inconsistent: BlocksCount is 11, but ImageSize 40960 in blocks of 4096 bytes makes 10"),
    (make_bmap(DATA, [(0, 1)], version="1.2").replace(b"<BlockSize> 4096 ", b"<BlockSize> 4k "),
     "the bmap: <BlockSize> is '4k'; expected a whole number"),
    (make_bmap(DATA, [(0, 1)], mapped=3), "the bmap is inconsistent: MappedBlocksCount is 3, but its ranges hold "
     "2 blocks"),
    (make_bmap(DATA, [(5, 5), (0, 1)]), "the bmap: range '0-1' overlaps or precedes the range before it; ranges "
     "must be in increasing order (bmaptool create writes them so)"),
    (make_bmap(DATA, [(0, 3), (2, 5)]), "the bmap: range '2-5' overlaps or precedes the range before it; ranges "
     "must be in increasing order (bmaptool create writes them so)"),
    (make_bmap(DATA, [(8, 10)], version="1.2"), "the bmap: range '8-10' goes beyond the image's 10 blocks"),
    (make_bmap(DATA, [(3, 2)], version="1.2", mapped=0), "the bmap: range '3-2' ends before it starts"),
    (make_bmap(DATA, [(0, 1)], version="1.2").replace(b"> 0-1 <", b"> zero <"),
     "the bmap: range 'zero' is not 'first-last' or a block number"),
    (make_bmap(DATA, [(0, 1)]).replace(b"> sha256 <", b"> crc32 <"),
     "the bmap: checksum type 'crc32' is not supported (md5, sha1, sha224, sha256, sha384, sha512 are)"),
    (b'<!DOCTYPE bmap [<!ENTITY a "aaaa">]><bmap version="2.0"/>', "the bmap declares a DOCTYPE or entities, "
     "which bmap files never do"),
])
def test_malformed_bmaps_are_refused_with_the_reason(doc, message) -> None:
    with pytest.raises(ImageError) as info:
        parse_bmap(doc)
    assert str(info.value) == message


def test_a_range_checksum_of_the_wrong_length_is_refused() -> None:
    bad = reseal(make_bmap(DATA, [(0, 1)]).replace(b'chksum="', b'chksum="abc', 1))
    with pytest.raises(ImageError, match=r"^the bmap: range '0-1' has checksum 'abc[0-9a-f]{64}', not a sha256 digest "
                                         r"\(64 hex digits\)$"):
        parse_bmap(bad)


def test_bmap_is_not_streamed_without_its_file_checksum() -> None:
    doc = make_bmap(DATA, [(0, 1)]).replace(b"<BmapFileChecksum>", b"<Other>").replace(b"</BmapFileChecksum>",
                                                                                       b"</Other>")
    with pytest.raises(ImageError, match="the bmap has no <BmapFileChecksum>"):
        parse_bmap(doc)


def test_where_bmaptool_looks_for_a_bmap() -> None:
    assert bmap_refs("http://dp/img/debian.raw.xz") == [
        "http://dp/img/debian.raw.xz.bmap", "http://dp/img/debian.raw.bmap", "http://dp/img/debian.bmap"]
    assert bmap_refs("images/a.img") == ["images/a.img.bmap", "images/a.bmap"]
    assert bmap_refs("http://dp/a.img.gz?token=x") == ["http://dp/a.img.gz.bmap?token=x", "http://dp/a.img.bmap?token=x",
                                                       "http://dp/a.bmap?token=x"]
    assert bmap_refs("http://dp/v1.2/disk") == ["http://dp/v1.2/disk.bmap"]
