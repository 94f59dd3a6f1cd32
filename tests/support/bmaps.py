"""A small sparse image whose bmap (made by bmaptool 3.6) is a committed fixture, and bmaps made by hand.

:func:`fixture_image` is deterministic: data in blocks 0-3, 10, 100-130 and the last, partial
block (the image is not a whole number of blocks long); zeros (holes) elsewhere.
tests/unit/fixtures/bmap/fixture.img.bmap was made from it with::

    python -c 'from tests.support.bmaps import write_sparse, fixture_image; write_sparse("fixture.img", fixture_image())'
    bmaptool create fixture.img -o fixture.img.bmap
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

BLOCK = 4096
FIXTURE_SIZE = 256 * BLOCK + 1000
FIXTURE_MAPPED = ((0, 3), (10, 10), (100, 130), (256, 256))
FIXTURES = Path(__file__).parent.parent / "unit" / "fixtures" / "bmap"


def fixture_image() -> bytes:
    rng = random.Random(7)
    out = bytearray(FIXTURE_SIZE)
    for first, last in FIXTURE_MAPPED:
        start, end = first * BLOCK, min((last + 1) * BLOCK, FIXTURE_SIZE)
        out[start:end] = rng.randbytes(end - start)
    return bytes(out)


def write_sparse(path: str | Path, data: bytes, block: int = BLOCK) -> None:
    """Write ``data`` leaving all-zero blocks as holes."""
    with open(path, "wb") as f:
        f.truncate(len(data))
        for i in range(0, len(data), block):
            chunk = data[i:i + block]
            if chunk.count(0) != len(chunk):
                f.seek(i)
                f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def make_bmap(data: bytes, ranges: list[tuple[int, int]], *, version: str = "2.0", checksum: str = "sha256",
              block: int = BLOCK, range_checksums: bool = True, mapped: int | None = None) -> bytes:
    """A bmap in bmaptool's layout (any version), its file checksum computed as bmaptool does."""
    blocks = -(-len(data) // block)
    legacy = version in ("1.3",)
    checksum = "sha1" if legacy else checksum
    attribute = "sha1" if legacy else "chksum"
    with_sums = version not in ("1.0", "1.1", "1.2")
    width = hashlib.new(checksum).digest_size * 2
    lines = [f'<?xml version="1.0" ?>\n<bmap version="{version}">',
             f"    <ImageSize> {len(data)} </ImageSize>", f"    <BlockSize> {block} </BlockSize>",
             f"    <BlocksCount> {blocks} </BlocksCount>",
             f"    <MappedBlocksCount> {mapped if mapped is not None else sum(b - a + 1 for a, b in ranges)} "
             "</MappedBlocksCount>"]
    if with_sums and not legacy:
        lines.append(f"    <ChecksumType> {checksum} </ChecksumType>")
    if with_sums:
        tag = "BmapFileSHA1" if legacy else "BmapFileChecksum"
        lines.append(f"    <{tag}> {'0' * width} </{tag}>")
    lines.append("    <BlockMap>")
    for first, last in ranges:
        text = f"{first}-{last}" if first != last else f"{first}"
        attr = ""
        if with_sums and range_checksums:
            digest = hashlib.new(checksum, data[first * block:(last + 1) * block]).hexdigest()
            attr = f' {attribute}="{digest}"'
        lines.append(f"        <Range{attr}> {text} </Range>")
    lines += ["    </BlockMap>", "</bmap>", ""]
    doc = "\n".join(lines).encode()
    if with_sums:
        digest = hashlib.new(checksum, doc).hexdigest().encode()
        doc = doc.replace(b"0" * width, digest, 1)
    return doc


def reseal(doc: bytes) -> bytes:
    """Recompute a (modified) bmap's file checksum, so that only the modification is wrong."""
    import re

    found = re.search(rb"<(BmapFileChecksum|BmapFileSHA1)>\s*([0-9a-f]+)\s*<", doc)
    assert found is not None
    kind = re.search(rb"<ChecksumType>\s*(\w+)\s*<", doc)
    algorithm = kind[1].decode() if kind and found[1] == b"BmapFileChecksum" else "sha1"
    zeroed = doc[:found.start(2)] + b"0" * len(found[2]) + doc[found.end(2):]
    return doc[:found.start(2)] + hashlib.new(algorithm, zeroed).hexdigest().encode() + doc[found.end(2):]
