"""``peagent image inspect`` and ``peagent image diff``: what an image is, and what going from one to another costs.

Both read only the small files (manifest, signature, frame table, block index), never the blob,
so they answer in a moment even for an image on a DP across the world.

:func:`inspect_image` summarises one image: identity, size, frames by kind (how much of the image
each kind covers and how many compressed bytes it stores), the compression ratio, the base of a
differencing image, and the signature (whose key, and whether it verifies with the keys given).

:func:`diff_images` answers "a disk holds A; what does re-imaging it with B fetch?" from the block
indexes: frames of B whose blocks are all already in place on the disk; frames that can be
assembled from A's blocks found elsewhere on the disk (data that moved); holes; and the frames
left to fetch, with their compressed bytes in B's blob. It also says what a differencing image
of B over A would store: the raw floor (B's blocks found nowhere in A) and an estimate of its
compressed size. These are estimates from 8-byte block hashes; a deploy verifies every frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from peagent.errors import SignatureError, UsageError
from peagent.image.blockmap import BlockLocator
from peagent.image.format import BLOCK, BaseRef, FrameKind
from peagent.image.load import LoadedImage, read_image
from peagent.image.sign import PublicKey, check_manifest
from peagent.progress import MIB


def public_keys(given: Sequence[str]) -> list[PublicKey]:
    """Public keys from ``--key`` arguments: each a ``.pub`` file, or the key itself (base64)."""
    keys = []
    for item in given:
        path = Path(item)
        if path.is_file():
            keys.append(PublicKey.from_text(path.read_text(), str(path)))
            continue
        try:
            keys.append(PublicKey.from_text(item, "--key"))
        except UsageError:
            raise UsageError(f"--key {item}: neither a public key file (peagent.pub) nor a key in base64") from None
    return keys


@dataclass(frozen=True)
class SignatureStatus:
    signed: bool
    key_id: str | None
    verified: bool | None  # None: not checked (no key given)
    detail: str


def signature_status(files: LoadedImage, keys: Sequence[PublicKey], pin: str | None = None) -> SignatureStatus:
    sig = files.signature
    key_id = None
    if sig is not None:
        parts = sig.split()
        key_id = parts[1] if len(parts) == 3 else None
    if not keys and pin is None:
        detail = f"signed by key {key_id} (not checked: no key given)" if sig else "not signed"
        return SignatureStatus(sig is not None, key_id, None, detail)
    try:
        how = check_manifest(files.manifest_bytes, sig, keys, pin)
    except SignatureError as exc:
        return SignatureStatus(sig is not None, key_id, False, str(exc))
    return SignatureStatus(sig is not None, key_id, True, f"verified: {how}")


@dataclass(frozen=True)
class KindStats:
    frames: int = 0
    image_bytes: int = 0  # of the image these frames cover
    stored_bytes: int = 0  # compressed, in the blob


@dataclass(frozen=True)
class Inspection:
    location: str
    name: str
    version: str
    kind: str
    size: int
    sha256: str
    frame_size: int
    frame_count: int
    kinds: dict[str, KindStats]
    blob_size: int
    base: BaseRef | None
    signature: SignatureStatus
    created: str = ""
    tool: str = ""
    source: str = ""
    layer_of: str | None = None  # a file image that is a layer: the tree it was made against

    @property
    def ratio(self) -> float:
        """Image bytes per stored byte (how much smaller the blob is)."""
        return self.size / self.blob_size if self.blob_size else float("inf")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 3) if self.blob_size else None
        return d

    def render(self) -> str:
        lines = [f"{self.name} {self.version} ({self.kind}) at {self.location}",
                 f"  size {_mib(self.size)} ({self.size} bytes), sha256 {self.sha256}",
                 f"  {self.frame_count} frames of {self.frame_size // 1024} KiB"]
        for name, k in self.kinds.items():
            if k.frames:
                lines.append(f"    {name:8} {k.frames:7} frames  {_mib(k.image_bytes):>12} of the image  "
                             f"{_mib(k.stored_bytes):>12} stored")
        ratio = f"ratio {self.ratio:.2f}" if self.blob_size else "nothing stored"
        lines.append(f"  blob {_mib(self.blob_size)} ({self.blob_size} bytes), {ratio}")
        if self.base:
            lines.append(f"  differencing image over {self.base.name} {self.base.version} at {self.base.url} "
                         f"(manifest sha256 {self.base.manifest_sha256})")
        if self.layer_of is not None:
            lines.append(f"  layer over the tree {self.layer_of} (applied on top of it; whiteouts delete)")
        lines.append(f"  signature: {self.signature.detail}")
        if self.created or self.tool or self.source:
            lines.append(f"  built {self.created} by {self.tool} from {self.source or '?'}")
        return "\n".join(lines)


def inspect_image(src: str, keys: Sequence[PublicKey] = (), pin: str | None = None) -> Inspection:
    files = read_image(src)
    m = files.manifest
    kinds = {k.name: KindStats() for k in FrameKind}
    for f in files.frames:
        start, end = m.frame_extent(f.index)
        k = kinds[f.kind.name]
        kinds[f.kind.name] = KindStats(k.frames + 1, k.image_bytes + end - start, k.stored_bytes + f.length)
    return Inspection(files.location, m.name, m.version, m.kind, m.size, m.sha256, m.frame_size, m.frame_count,
                      kinds, m.blob.size, m.base, signature_status(files, keys, pin), m.created, m.tool, m.source,
                      m.layer.base_tree if m.layer else None)


@dataclass
class DiffCategory:
    frames: int = 0
    image_bytes: int = 0
    fetch_bytes: int = 0  # compressed bytes of B's blob

    def add(self, image_bytes: int, fetch_bytes: int = 0) -> None:
        self.frames += 1
        self.image_bytes += image_bytes
        self.fetch_bytes += fetch_bytes


@dataclass
class Diff:
    a: str
    b: str
    in_place: DiffCategory = field(default_factory=DiffCategory)
    moved: DiffCategory = field(default_factory=DiffCategory)
    holes: DiffCategory = field(default_factory=DiffCategory)
    fetch: DiffCategory = field(default_factory=DiffCategory)
    fetch_needs_base: int = 0  # frames to fetch that B itself takes from its own base
    missing_blocks: int = 0  # blocks of B found nowhere in A
    floor_bytes: int = 0  # their raw bytes: what any delta must transfer, before compression
    differencing: dict[str, DiffCategory] = field(default_factory=dict)  # kinds if B were built over A
    differencing_estimate: int = 0  # its compressed blob, estimated from B's own frames

    def to_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        rows = [("already in place", self.in_place), ("assembled from A's blocks (moved)", self.moved),
                ("holes (zeros, not fetched)", self.holes), ("to fetch", self.fetch)]
        lines = [f"re-imaging a disk holding {self.a} with {self.b}:"]
        for label, c in rows:
            fetched = f", {_mib(c.fetch_bytes)} to download" if c is self.fetch else ""
            lines.append(f"  {label:36} {c.frames:7} frames {_mib(c.image_bytes):>12}{fetched}")
        if self.fetch_needs_base:
            lines.append(f"  ({self.fetch_needs_base} frames to fetch also need blocks of {self.b}'s own base)")
        lines.append(f"a differencing image of B over A: floor {_mib(self.floor_bytes)} "
                     f"({self.missing_blocks} blocks of B found nowhere in A), about {_mib(self.differencing_estimate)}"
                     " compressed")
        kinds = ", ".join(f"{k} {c.frames}" for k, c in self.differencing.items() if c.frames)
        lines.append(f"  frames by kind: {kinds}")
        return "\n".join(lines)


def diff_images(a_src: str, b_src: str) -> Diff:
    a, b = read_image(a_src), read_image(b_src)
    mb = b.manifest
    in_a = BlockLocator(a.blocks)
    diff = Diff(a.location, b.location, differencing={k.name: DiffCategory() for k in FrameKind})
    a_count = len(a.blocks)
    for f in b.frames:
        start, end = mb.frame_extent(f.index)
        length = end - start
        first, count = start // BLOCK, -(-length // BLOCK)
        hashes = [b.blocks[first + j] for j in range(count)]
        missing = [j for j, h in enumerate(hashes) if h not in in_a]
        missing_bytes = sum(min(BLOCK, length - j * BLOCK) for j in missing)
        diff.missing_blocks += len(missing)
        diff.floor_bytes += missing_bytes
        # What re-imaging fetches.
        if f.kind == FrameKind.HOLE:
            diff.holes.add(length)
        elif all(first + j < a_count and a.blocks[first + j] == h for j, h in enumerate(hashes)):
            diff.in_place.add(length)
        elif not missing:
            diff.moved.add(length)
        else:
            diff.fetch.add(length, f.length)
            if f.kind in (FrameKind.BASE, FrameKind.PARTIAL):
                diff.fetch_needs_base += 1
        # What a differencing image of B over A would store.
        if f.kind == FrameKind.HOLE:
            kind, estimate = FrameKind.HOLE, 0
        elif not missing:
            kind, estimate = FrameKind.BASE, 0
        elif len(missing) == count:
            kind, estimate = FrameKind.FULL, _compressed_estimate(f.kind, f.length, length, missing_bytes)
        else:
            kind, estimate = FrameKind.PARTIAL, _compressed_estimate(f.kind, f.length, length, missing_bytes)
        diff.differencing[kind.name].add(length, estimate)
        diff.differencing_estimate += estimate
    return diff


def _compressed_estimate(kind: FrameKind, stored: int, length: int, missing_bytes: int) -> int:
    """The compressed size of a frame's missing blocks, at the ratio B's own frame compressed to."""
    if kind == FrameKind.FULL:
        return round(stored * missing_bytes / length)
    return missing_bytes  # B's frame is itself partial or from its base: no ratio to go by


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"
