"""Block maps (``.bmap``, from bmaptool): which blocks of an image hold data, with a checksum per range.

A bmap is an XML file published next to an image (``bmaptool create image > image.bmap``)::

    <bmap version="2.0">
        <ImageSize> 1073741824 </ImageSize>       bytes of the (decompressed) image
        <BlockSize> 4096 </BlockSize>
        <BlocksCount> 262144 </BlocksCount>       ceil(ImageSize / BlockSize)
        <MappedBlocksCount> 5120 </MappedBlocksCount>
        <ChecksumType> sha256 </ChecksumType>
        <BmapFileChecksum> 64 hex digits </BmapFileChecksum>
        <BlockMap>
            <Range chksum="64 hex digits"> 0-1023 </Range>     blocks, inclusive; or one block: "7"
            ...

Mapped blocks were data in the sparse image file it was made from; the others were holes,
which read as zeros. Writing only the mapped ranges is what makes bmaptool fast; each range's
checksum (over its bytes, cut at ImageSize) proves the data. The file's own checksum is computed
over the file with the checksum's digits replaced by ASCII zeros, so it catches a damaged or
truncated bmap (it is not a signature: whoever can change the bmap can recompute it).

Format versions: 1.0-1.2 have no checksums at all; 1.3 has sha1 (``BmapFileSHA1``, ``sha1=``
attributes); 1.4 (a mistake, identical to 2.0) and 2.0 name their type in ``ChecksumType`` (sha256
in practice; bmaptool accepts any hashlib name) and use ``BmapFileChecksum`` and ``chksum=``.

:func:`parse_bmap` is pure and refuses what cannot be streamed safely: ranges out of order or
overlapping (the image arrives in order), beyond BlocksCount, a MappedBlocksCount that the
ranges contradict, a wrong file checksum. :func:`bmap_refs` lists where bmaptool would look for
an image's bmap.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from peagent.errors import ImageError

BMAP_LIMIT = 32 << 20  # bytes; a bmap of a very fragmented 2 TB image stays well under this
CHECKSUM_TYPES = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class BmapRange:
    start: int  # byte offset in the image
    end: int  # exclusive, at most ImageSize
    first: int  # block numbers, as the file gives them (for messages)
    last: int
    checksum: str | None  # lower-case hex, None when the bmap has none for this range


@dataclass(frozen=True)
class Bmap:
    version: str
    image_size: int
    block_size: int
    blocks_count: int
    mapped_blocks: int
    checksum_type: str | None  # None: a format 1.0-1.2 bmap, without checksums
    ranges: tuple[BmapRange, ...]
    source: str = ""  # where it came from, for messages

    @property
    def mapped_bytes(self) -> int:
        return sum(r.end - r.start for r in self.ranges)

    @property
    def verifies_data(self) -> bool:
        """Every range carries a checksum: the data written can be proven without the image's digest."""
        return self.checksum_type is not None and all(r.checksum for r in self.ranges)

    def describe(self) -> str:
        pct = 100 * self.mapped_bytes / self.image_size if self.image_size else 0.0
        sums = f"{self.checksum_type} per range" if self.verifies_data else "no range checksums"
        return (f"bmap {self.version}: {self.mapped_bytes} of {self.image_size} bytes mapped ({pct:.1f}%) "
                f"in {len(self.ranges)} ranges, {sums}")


def parse_bmap(data: bytes, source: str = "the bmap") -> Bmap:
    """Parse and check a bmap file; ImageError names what is wrong."""
    if len(data) > BMAP_LIMIT:
        raise ImageError(f"{source} is {len(data)} bytes, more than the {BMAP_LIMIT} allowed for a bmap")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        # bmaps never declare entities; refusing them rules out entity-expansion tricks.
        raise ImageError(f"{source} declares a DOCTYPE or entities, which bmap files never do")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ImageError(f"{source} is not a bmap (not well-formed XML: {exc})") from None
    if root.tag != "bmap":
        raise ImageError(f"{source} is not a bmap: its root element is <{root.tag}>, not <bmap>")
    version = (root.get("version") or "").strip()
    match = re.fullmatch(r"(\d+)\.(\d+)", version)
    if not match:
        raise ImageError(f"{source}: bmap version {version!r} is not major.minor")
    major, minor = int(match[1]), int(match[2])
    if major > 2 or major < 1:
        raise ImageError(f"{source}: bmap format version {version} is not supported (1.0 to 2.0 are)")

    image_size = _number(root, "ImageSize", source)
    block_size = _number(root, "BlockSize", source)
    blocks_count = _number(root, "BlocksCount", source)
    mapped_blocks = _number(root, "MappedBlocksCount", source)
    if block_size <= 0:
        raise ImageError(f"{source}: BlockSize is {block_size}; expected a positive number of bytes")
    if blocks_count != -(-image_size // block_size):
        raise ImageError(f"{source} is inconsistent: BlocksCount is {blocks_count}, but ImageSize {image_size} "
                         f"in blocks of {block_size} bytes makes {-(-image_size // block_size)}")

    if major == 2 or (major, minor) == (1, 4):
        checksum_type = _text(root, "ChecksumType", source).lower()
        attribute, file_tag = "chksum", "BmapFileChecksum"
    elif (major, minor) == (1, 3):
        checksum_type, attribute, file_tag = "sha1", "sha1", "BmapFileSHA1"
    else:
        checksum_type, attribute, file_tag = None, "", ""
    if checksum_type is not None:
        if checksum_type not in CHECKSUM_TYPES:
            raise ImageError(f"{source}: checksum type {checksum_type!r} is not supported "
                             f"({', '.join(CHECKSUM_TYPES)} are)")
        _verify_file(data, root, file_tag, checksum_type, source)

    ranges = _ranges(root, attribute, checksum_type, image_size, block_size, blocks_count, source)
    counted = sum(r.last - r.first + 1 for r in ranges)
    if counted != mapped_blocks:
        raise ImageError(f"{source} is inconsistent: MappedBlocksCount is {mapped_blocks}, but its ranges "
                         f"hold {counted} blocks")
    return Bmap(version=version, image_size=image_size, block_size=block_size, blocks_count=blocks_count,
                mapped_blocks=mapped_blocks, checksum_type=checksum_type, ranges=tuple(ranges), source=source)


def _text(root: ET.Element, tag: str, source: str) -> str:
    element = root.find(tag)
    if element is None or not (element.text or "").strip():
        raise ImageError(f"{source} has no <{tag}>")
    return (element.text or "").strip()


def _number(root: ET.Element, tag: str, source: str) -> int:
    text = _text(root, tag, source)
    if not text.isdigit():
        raise ImageError(f"{source}: <{tag}> is {text!r}; expected a whole number")
    return int(text)


def _verify_file(data: bytes, root: ET.Element, tag: str, checksum_type: str, source: str) -> None:
    expected = _text(root, tag, source).lower()
    width = hashlib.new(checksum_type).digest_size * 2
    if len(expected) != width or not _HEX.fullmatch(expected):
        raise ImageError(f"{source}: <{tag}> {expected!r} is not a {checksum_type} digest ({width} hex digits)")
    # The digest was computed with its own digits as ASCII zeros (bmaptool's rule).
    found = re.search(rb"<" + tag.encode() + rb">\s*([0-9a-fA-F]+)\s*</", data)
    assert found is not None  # the parser saw the element
    zeroed = data[:found.start(1)] + b"0" * width + data[found.end(1):]
    actual = hashlib.new(checksum_type, zeroed).hexdigest()
    if actual != expected:
        raise ImageError(f"{source} is damaged: its {checksum_type} is {actual}, but it says {expected} "
                         f"(<{tag}>); fetch it again or regenerate it with bmaptool create")


def _ranges(root: ET.Element, attribute: str, checksum_type: str | None, image_size: int, block_size: int,
            blocks_count: int, source: str) -> list[BmapRange]:
    block_map = root.find("BlockMap")
    if block_map is None:
        raise ImageError(f"{source} has no <BlockMap>")
    width = hashlib.new(checksum_type).digest_size * 2 if checksum_type else 0
    ranges: list[BmapRange] = []
    next_free = 0
    for element in block_map.findall("Range"):
        text = (element.text or "").strip()
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", text)
        if not match:
            raise ImageError(f"{source}: range {text!r} is not 'first-last' or a block number")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if first > last:
            raise ImageError(f"{source}: range {text!r} ends before it starts")
        if last >= blocks_count:
            raise ImageError(f"{source}: range {text!r} goes beyond the image's {blocks_count} blocks")
        if first < next_free:
            raise ImageError(f"{source}: range {text!r} overlaps or precedes the range before it; "
                             "ranges must be in increasing order (bmaptool create writes them so)")
        checksum = element.get(attribute) if attribute else None
        if checksum is not None:
            checksum = checksum.strip().lower()
            if len(checksum) != width or not _HEX.fullmatch(checksum):
                raise ImageError(f"{source}: range {text!r} has checksum {checksum!r}, not a {checksum_type} "
                                 f"digest ({width} hex digits)")
        ranges.append(BmapRange(start=first * block_size, end=min((last + 1) * block_size, image_size),
                                first=first, last=last, checksum=checksum))
        next_free = last + 1
    return ranges


def bmap_refs(image_ref: str) -> list[str]:
    """Where bmaptool looks for an image's bmap: ``<image>.bmap``, then with one suffix after another
    stripped (``a.img.xz`` -> ``a.img.xz.bmap``, ``a.img.bmap``, ``a.bmap``). Queries are kept."""
    parts = urlsplit(image_ref)
    path = parts.path
    refs = []
    while True:
        refs.append(urlunsplit(parts._replace(path=path + ".bmap")))
        slash = path.rfind("/")
        dot = path.rfind(".")
        if dot <= slash + 1:
            return refs
        path = path[:dot]
