"""Building an image: a raw stream in, the four files of docs/image-format.md out.

The source is read once, sequentially, in frames. Each frame is hashed (sha256 for the frame
table, a short hash per 4 KiB block for the block index, and the whole image's sha256), an
all-zero frame becomes a hole (never stored, never fetched), and every other frame is compressed
on its own as one zstd frame and appended to the blob. Given a base image, a frame stores only the
blocks the base lacks (peagent.image.differencing). Hashing, classifying and compressing run in a
pool of threads (hashlib and python-zstandard release the GIL) while the reader moves on, with a
bounded number of frames in flight, so memory stays flat whatever the image's size.

The files go to a :class:`~peagent.image.output.Destination` (a directory, or a DP by HTTP PUT)
which shows the image only once it is whole; with a signing key the manifest gets its
``manifest.json.sig``. :func:`build_from` is the whole of ``peagent image build``: it opens the
source (peagent.image.sources), the base and the destination, and reports progress.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peagent import __version__
from peagent.errors import DeviceError, ImageError, UsageError
from peagent.image.differencing import Base, classify_frame
from peagent.image.format import (
    BLOB,
    BLOCK,
    BLOCKS,
    DEFAULT_FRAME,
    FRAMES,
    MANIFEST,
    MAX_FRAME,
    SIGNATURE,
    BlockIndex,
    FileRef,
    FrameKind,
    FrameTable,
    LayerRef,
    Manifest,
    block_hash,
    encode_blocks,
    encode_frames,
)
from peagent.image.output import Destination, LocalDir, open_destination
from peagent.image.readers import Readable, read_exactly
from peagent.image.sign import load_private_key, sign_manifest
from peagent.image.sources import TreeSource
from peagent.progress import Progress, Snapshot

DEFAULT_LEVEL = 9


@dataclass(frozen=True)
class BuildOptions:
    name: str
    version: str
    kind: str = "disk"
    frame_size: int = DEFAULT_FRAME
    level: int = DEFAULT_LEVEL
    threads: int = max(1, os.cpu_count() or 1)
    source_name: str = ""
    layer: LayerRef | None = None


@dataclass(frozen=True)
class _Done:
    """One frame, processed: what the frame table, the block index and the blob get of it."""

    kind: FrameKind
    packed: int
    sha256: bytes
    hashes: bytes  # the block index's entries for the frame's blocks
    data: bytes  # compressed; empty when nothing is stored


def process_frame(frame: bytes, level: int, base: Base | None) -> _Done:
    hashes = [block_hash(frame[i:i + BLOCK]) for i in range(0, len(frame), BLOCK)]
    c = classify_frame(frame, hashes, base.blocks if base else None)
    data = _compress(c.payload, level) if c.payload else b""
    return _Done(c.kind, c.packed, hashlib.sha256(frame).digest(), b"".join(hashes), data)


def build_image(source: Readable, out: Path | Destination, options: BuildOptions,
                progress: Callable[[int], None] = lambda n: None, *, base: Base | None = None,
                key: Ed25519PrivateKey | None = None) -> Manifest:
    """Read ``source`` to its end and write the image's files to ``out`` (a directory, or a Destination).

    With ``base``, a differencing image over it; with ``key``, signed. ``progress`` is called with
    the number of source bytes read, frame by frame.
    """
    if options.frame_size % BLOCK or not BLOCK <= options.frame_size <= MAX_FRAME:
        raise ImageError(f"frame size {options.frame_size}: expected a multiple of {BLOCK} from {BLOCK} to "
                         f"{MAX_FRAME}")
    dest = LocalDir(out, overwrite=True) if isinstance(out, Path) else out
    try:
        manifest = _build(source, dest, options, progress, base, key)
    except BaseException:
        dest.abort()
        raise
    return manifest


def _build(source: Readable, dest: Destination, options: BuildOptions, progress: Callable[[int], None],
           base: Base | None, key: Ed25519PrivateKey | None) -> Manifest:
    table = FrameTable(options.frame_size)
    blocks = bytearray()
    whole = hashlib.sha256()
    size = 0
    blob_size = 0
    pending: deque[Future[_Done]] = deque()

    def settle(future: Future[_Done]) -> None:
        nonlocal blob_size
        done = future.result()
        blocks.extend(done.hashes)
        if not done.data:
            table.append(done.kind, 0, 0, 0, done.sha256)
            return
        dest.write_blob(done.data)
        table.append(done.kind, blob_size, len(done.data), done.packed, done.sha256)
        blob_size += len(done.data)

    with ThreadPoolExecutor(options.threads) as pool:
        while True:
            try:
                frame = read_exactly(source, options.frame_size)
            except OSError as exc:  # a failing disk: EIO at some sector
                raise DeviceError(f"reading the source failed after {size} bytes: {exc.strerror or exc}") from None
            if not frame:
                break
            size += len(frame)
            whole.update(frame)
            pending.append(pool.submit(process_frame, frame, options.level, base))
            while len(pending) > 2 * options.threads:
                settle(pending.popleft())
            progress(len(frame))
        while pending:
            settle(pending.popleft())
    if size == 0:
        raise ImageError("the source is empty: nothing to build an image from")
    dest.finish_blob()

    frames_data = encode_frames(table)
    blocks_data = encode_blocks(BlockIndex(bytes(blocks)))
    manifest = Manifest(
        name=options.name, version=options.version, kind=options.kind, size=size, sha256=whole.hexdigest(),
        frame_size=options.frame_size,
        frames=FileRef(FRAMES, len(frames_data), hashlib.sha256(frames_data).hexdigest()),
        blocks=FileRef(BLOCKS, len(blocks_data), hashlib.sha256(blocks_data).hexdigest()),
        blob=FileRef(BLOB, blob_size),
        base=base.ref if base else None,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tool=f"peagent {__version__}", source=options.source_name, layer=options.layer,
    )
    manifest_data = manifest.to_json()
    dest.put(FRAMES, frames_data)
    dest.put(BLOCKS, blocks_data)
    if key is not None:
        dest.put(SIGNATURE, sign_manifest(manifest_data, key).encode())
    dest.put(MANIFEST, manifest_data)
    dest.commit()
    return manifest


def _compress(data: bytes, level: int) -> bytes:
    # ZstdCompressor objects are not thread-safe; one per frame costs little next to the work.
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def build_from(source: str | TreeSource, output: str, options: BuildOptions, *, base: str | None = None,
               base_url: str | None = None, key: Path | None = None, token: str | None = None,
               overwrite: bool = False, allow_mounted: bool = False,
               progress: Callable[[Snapshot], None] | None = None) -> Manifest:
    """``peagent image build SOURCE -o OUTPUT``: everything from the names the user gave.

    A :class:`~peagent.image.sources.TreeSource` (``--files DIR``) makes a file image (and a layer, given
    its base tree) of the tar stream written from the tree as the build reads it.
    """
    from peagent.image.differencing import open_base
    from peagent.image.sources import open_source, open_tree

    signing_key = load_private_key(key) if key is not None else None  # a wrong key fails before the work
    base_image = open_base(base, output, base_url) if base is not None else None
    dest = open_destination(output, token=token, overwrite=overwrite)
    try:
        # A virtual disk's temporary raw file goes next to the output, where the room for images is.
        work_dir = Path(output) if isinstance(dest, LocalDir) else None
        if isinstance(source, TreeSource):
            if work_dir is not None and work_dir.resolve().is_relative_to(Path(source.root).resolve()):
                raise UsageError(f"the output {output} is inside the tree {source.root}, which would then hold "
                                 "the image being made of it: write the image outside the tree")
            base_tree = source.base_tree
            options = replace(options, kind="files", layer=LayerRef(_named(base_tree)) if base_tree else None)
            name, opened = source.root, open_tree(source)
        else:
            name, opened = source, open_source(source, allow_mounted=allow_mounted, work_dir=work_dir)
        with opened as src:
            if not options.source_name:
                options = replace(options, source_name=_named(name))
            meter = Progress(src.progress_total, progress or (lambda snap: None))
            manifest = build_image(src.stream, dest, options, src.track(meter.add), base=base_image,
                                   key=signing_key)
            meter.finish()
    except BaseException:
        dest.abort()
        raise
    return manifest


def _named(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path
