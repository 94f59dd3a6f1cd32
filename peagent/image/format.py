"""The peagent image format (docs/image-format.md): the manifest, the frame table, the block index.

An image is a blob of independent zstd frames plus three small files that describe it. This
module is the one place that knows their layout: it turns bytes into typed values
(:func:`parse_manifest`, :func:`decode_frames`, :func:`decode_blocks`) and back
(:meth:`Manifest.to_json`, :func:`encode_frames`, :func:`encode_blocks`), and refuses anything
inconsistent with a :class:`~peagent.errors.ManifestError` that says which field or record is
wrong. It does no I/O; the builder and the writer bring the bytes.

Tables are held compactly (``array`` and ``bytes``, not a Python object per frame), so that a
10 GiB image's 40,960 frames and 2.6 million block hashes take a few tens of MB at most.
"""

from __future__ import annotations

import hashlib
import json
import struct
from array import array
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

import zstandard

from peagent.errors import ManifestError, describe

FORMAT = "peagent-image"
FORMAT_VERSION = 1
# The files of an image. The manifest names the other three by URL; these are the names a build gives
# them, and the manifest's own. The signature is always beside the manifest, its name and ".sig".
MANIFEST = "manifest.json"
SIGNATURE_SUFFIX = ".sig"
SIGNATURE = MANIFEST + SIGNATURE_SUFFIX
FRAMES = "frames.bin"
BLOCKS = "blocks.bin.zst"
BLOB = "image.blob"
BLOCK = 4096
MAX_FRAME = 256 << 10  # 64 blocks: the packed bitmap is 64 bits
DEFAULT_FRAME = 256 << 10
KINDS = ("disk", "partition", "files")
FRAMES_MAGIC = b"PEAFRM01"
BLOCKS_MAGIC = b"PEABLK01"
_FRAMES_HEADER = struct.Struct("<8sII")
_FRAME = struct.Struct("<BQIQ32s")
_BLOCKS_HEADER = struct.Struct("<8sII")
BLOCK_HASH_SIZE = 8


class FrameKind(IntEnum):
    HOLE = 0  # all zeros, not stored
    FULL = 1  # the whole frame, compressed
    BASE = 2  # every block from the base image
    PARTIAL = 3  # the packed blocks compressed, the rest from the base


def block_hash(block: bytes | memoryview) -> bytes:
    """The block index's hash of one block: the first 8 bytes of its sha256."""
    return hashlib.sha256(block).digest()[:BLOCK_HASH_SIZE]


ZERO_BLOCK_HASH = block_hash(bytes(BLOCK))


# --- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    """A file the manifest covers: where (relative to the manifest), how big, its sha256."""

    url: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class BaseRef:
    name: str
    version: str
    url: str
    manifest_sha256: str


@dataclass(frozen=True)
class LayerRef:
    """A file image that is a layer: a tar stream with whiteouts, applied over a tree (docs/image-format.md)."""

    base_tree: str  # the tree it was made against, as its builder named it


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    kind: str
    size: int
    sha256: str
    frame_size: int
    frames: FileRef
    blocks: FileRef
    blob: FileRef
    base: BaseRef | None = None
    created: str = ""
    tool: str = ""
    source: str = ""
    layer: LayerRef | None = None  # only for kind files; absent from the JSON when None
    extra: dict[str, Any] = field(default_factory=dict)  # fields of later versions, kept as they were

    @property
    def frame_count(self) -> int:
        return -(-self.size // self.frame_size)

    @property
    def block_count(self) -> int:
        return -(-self.size // BLOCK)

    def frame_extent(self, index: int) -> tuple[int, int]:
        """Bytes [start, end) of the image that frame ``index`` covers."""
        start = index * self.frame_size
        return start, min(self.size, start + self.frame_size)

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.extra}
        body = asdict(self)
        body.pop("extra")
        if body["layer"] is None:  # so the manifests of everything but layers read as they always did
            body.pop("layer")
        doc.update(body)
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes) -> Manifest:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"manifest: expected an object, found {describe(doc)}")
    doc = dict(doc)
    if doc.pop("format", None) != FORMAT:
        raise ManifestError(f"manifest: not a peagent image manifest (format must be {FORMAT!r})")
    version = doc.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ManifestError(f"manifest: format_version {describe(version)} is not supported by this agent, "
                            f"which reads version {FORMAT_VERSION}")
    known = set(Manifest.__dataclass_fields__) - {"extra"}
    extra = {k: doc.pop(k) for k in list(doc) if k not in known}
    m = Manifest(
        name=_field(doc, "name", str, "a name"),
        version=_field(doc, "version", str, "a version string"),
        kind=_field(doc, "kind", str, f"one of {', '.join(KINDS)}"),
        size=_field(doc, "size", int, "the image size in bytes"),
        sha256=_sha256(_field(doc, "sha256", str, "64 hex digits"), "sha256"),
        frame_size=_field(doc, "frame_size", int, "bytes per frame"),
        frames=_file_ref(doc.get("frames"), "frames", hashed=True),
        blocks=_file_ref(doc.get("blocks"), "blocks", hashed=True),
        blob=_file_ref(doc.get("blob"), "blob", hashed=False),
        base=_base_ref(doc.get("base")),
        created=str(doc.get("created") or ""),
        tool=str(doc.get("tool") or ""),
        source=str(doc.get("source") or ""),
        layer=_layer_ref(doc.get("layer")),
        extra=extra,
    )
    if m.kind not in KINDS:
        raise ManifestError(f"manifest field kind: expected one of {', '.join(KINDS)}, found {describe(m.kind)}")
    if m.layer is not None and m.kind != "files":
        raise ManifestError(f"manifest field layer: only a file image can be a layer, but kind is {m.kind}")
    if m.size <= 0:
        raise ManifestError(f"manifest field size: expected a positive number of bytes, found {m.size}")
    if m.frame_size % BLOCK or not BLOCK <= m.frame_size <= MAX_FRAME:
        raise ManifestError(f"manifest field frame_size: expected a multiple of {BLOCK} from {BLOCK} to "
                            f"{MAX_FRAME}, found {m.frame_size}")
    return m


def _field(doc: dict[str, Any], key: str, kind: type, expected: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ManifestError(f"manifest field {key}: expected {expected}, found {describe(value)}")
    return value


def _sha256(value: str, where: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise ManifestError(f"manifest field {where}: expected 64 hex digits, found {describe(value)}")
    return value.lower()


def _file_ref(value: object, key: str, *, hashed: bool) -> FileRef:
    if not isinstance(value, dict):
        raise ManifestError(f"manifest field {key}: expected an object with url and size, found {describe(value)}")
    url = _field(value, "url", str, "a URL relative to the manifest")
    size = _field(value, "size", int, "a size in bytes")
    digest = value.get("sha256")
    if hashed or digest is not None:
        if not isinstance(digest, str):
            raise ManifestError(f"manifest field {key}.sha256: expected 64 hex digits, found {describe(digest)}")
        digest = _sha256(digest, f"{key}.sha256")
    return FileRef(url=url, size=size, sha256=digest)


def _base_ref(value: object) -> BaseRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ManifestError(f"manifest field base: expected an object or null, found {describe(value)}")
    return BaseRef(
        name=_field(value, "name", str, "the base image's name"),
        version=_field(value, "version", str, "the base image's version"),
        url=_field(value, "url", str, "the base manifest's URL"),
        manifest_sha256=_sha256(_field(value, "manifest_sha256", str, "64 hex digits"), "base.manifest_sha256"),
    )


def _layer_ref(value: object) -> LayerRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ManifestError(f"manifest field layer: expected an object or null, found {describe(value)}")
    return LayerRef(base_tree=_field(value, "base_tree", str, "the name of the tree the layer was made against"))


# --- the frame table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    index: int
    kind: FrameKind
    offset: int  # in the blob
    length: int  # compressed bytes in the blob
    packed: int  # bitmap of the blocks stored in a PARTIAL frame
    sha256: bytes  # of the frame's uncompressed bytes


class FrameTable:
    """Every frame's kind, place in the blob and hash, in compact arrays."""

    def __init__(self, frame_size: int) -> None:
        self.frame_size = frame_size
        self.kinds = array("B")
        self.offsets = array("Q")
        self.lengths = array("I")
        self.packed = array("Q")
        self.hashes = bytearray()

    def __len__(self) -> int:
        return len(self.kinds)

    def append(self, kind: FrameKind, offset: int, length: int, packed: int, sha256: bytes) -> None:
        self.kinds.append(kind)
        self.offsets.append(offset)
        self.lengths.append(length)
        self.packed.append(packed)
        self.hashes += sha256

    def __getitem__(self, i: int) -> Frame:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return Frame(i, FrameKind(self.kinds[i]), self.offsets[i], self.lengths[i], self.packed[i],
                     bytes(self.hashes[32 * i:32 * i + 32]))

    def __iter__(self):  # noqa: ANN204 (an iterator of Frame)
        return (self[i] for i in range(len(self)))


def encode_frames(table: FrameTable) -> bytes:
    out = bytearray(_FRAMES_HEADER.pack(FRAMES_MAGIC, len(table), table.frame_size))
    for f in table:
        out += _FRAME.pack(f.kind, f.offset, f.length, f.packed, f.sha256)
    return bytes(out)


def decode_frames(data: bytes, manifest: Manifest) -> FrameTable:
    """The frame table of ``manifest``, checked against it record by record."""
    _check_digest(data, manifest.frames, "frames")
    if len(data) < _FRAMES_HEADER.size:
        raise ManifestError("frames: shorter than its header")
    magic, count, frame_size = _FRAMES_HEADER.unpack_from(data)
    if magic != FRAMES_MAGIC:
        raise ManifestError(f"frames: bad magic {magic!r}, expected {FRAMES_MAGIC!r}")
    if frame_size != manifest.frame_size or count != manifest.frame_count:
        raise ManifestError(f"frames: {count} frames of {frame_size} bytes, but the manifest describes "
                            f"{manifest.frame_count} frames of {manifest.frame_size} bytes")
    if len(data) != _FRAMES_HEADER.size + count * _FRAME.size:
        raise ManifestError(f"frames: {len(data)} bytes, expected {_FRAMES_HEADER.size + count * _FRAME.size}")
    table = FrameTable(frame_size)
    for i, (kind, offset, length, packed, digest) in enumerate(_FRAME.iter_unpack(data[_FRAMES_HEADER.size:])):
        if kind not in FrameKind.__members__.values():
            raise ManifestError(f"frames: frame {i} has unknown kind {kind}")
        stored = kind in (FrameKind.FULL, FrameKind.PARTIAL)
        if stored and (length == 0 or offset + length > manifest.blob.size):
            raise ManifestError(f"frames: frame {i} lies outside the blob ({offset}+{length} > "
                                f"{manifest.blob.size})")
        if not stored and (offset or length):
            raise ManifestError(f"frames: frame {i} of kind {FrameKind(kind).name} stores no data but has "
                                f"offset {offset} and length {length}")
        if kind in (FrameKind.BASE, FrameKind.PARTIAL) and manifest.base is None:
            raise ManifestError(f"frames: frame {i} takes blocks from a base image, but the manifest names none")
        table.append(FrameKind(kind), offset, length, packed, digest)
    return table


# --- the block index ---------------------------------------------------------------------------


class BlockIndex:
    """The short hash of every 4 KiB block of an image, in one bytes object."""

    def __init__(self, hashes: bytes) -> None:
        self.hashes = hashes

    def __len__(self) -> int:
        return len(self.hashes) // BLOCK_HASH_SIZE

    def __getitem__(self, k: int) -> bytes:
        return self.hashes[BLOCK_HASH_SIZE * k:BLOCK_HASH_SIZE * (k + 1)]


def encode_blocks(index: BlockIndex) -> bytes:
    raw = _BLOCKS_HEADER.pack(BLOCKS_MAGIC, len(index), BLOCK) + index.hashes
    return zstandard.ZstdCompressor(level=9).compress(raw)


def decode_blocks(data: bytes, manifest: Manifest) -> BlockIndex:
    _check_digest(data, manifest.blocks, "blocks")
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=64 + manifest.block_count * 8)
    except zstandard.ZstdError as exc:
        raise ManifestError(f"blocks: not a zstd stream ({exc})") from None
    magic, count, block = _BLOCKS_HEADER.unpack_from(raw)
    if magic != BLOCKS_MAGIC or block != BLOCK or count != manifest.block_count:
        raise ManifestError(f"blocks: header ({magic!r}, {count} blocks of {block}) does not match the "
                            f"manifest ({manifest.block_count} blocks of {BLOCK})")
    hashes = raw[_BLOCKS_HEADER.size:]
    if len(hashes) != count * BLOCK_HASH_SIZE:
        raise ManifestError(f"blocks: {len(hashes)} bytes of hashes, expected {count * BLOCK_HASH_SIZE}")
    return BlockIndex(hashes)


def _check_digest(data: bytes, ref: FileRef, what: str) -> None:
    if len(data) != ref.size:
        raise ManifestError(f"{what}: {len(data)} bytes, but the manifest says {ref.size}")
    if ref.sha256 is not None and hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ManifestError(f"{what}: sha256 does not match the manifest (the file was changed or damaged)")
