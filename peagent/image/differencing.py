"""Differencing images: store only the blocks a base image lacks.

A new version of an image mostly holds data its predecessor held too, often at other places
(a filesystem rebuilt from a changed tree moves files by whole blocks). With the base's block
index at hand, the builder asks of every 4 KiB block of each frame whether the base holds a block
with that hash, anywhere, and :func:`classify_frame` decides the frame's kind
(docs/image-format.md):

* all zeros: a HOLE (never stored, never fetched, whatever the base holds);
* every block in the base: BASE (nothing stored);
* no block in the base: FULL (the frame stored whole, as in any image);
* otherwise PARTIAL: a bitmap of the blocks stored, and those blocks alone, concatenated and
  compressed as one zstd frame.

So what a differencing image stores is close to the raw floor: the blocks of the new image found
nowhere in the base, compressed.

:func:`open_base` reads the base (its manifest, frame table and block index, from a directory or
a URL, each checked against the manifest) and names it for the new manifest: the base's URL
relative to the new manifest, as the DPs will serve both, and the sha256 of the base's manifest,
which pins exactly that base.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit

from peagent.errors import UsageError
from peagent.fetch import is_url
from peagent.image.blockmap import BlockLocator
from peagent.image.format import BLOCK, BaseRef, FrameKind
from peagent.image.load import read_image


@dataclass(frozen=True)
class Base:
    """The base of a differencing build: how the new manifest names it, and its blocks."""

    ref: BaseRef
    blocks: BlockLocator


@dataclass(frozen=True)
class Classified:
    kind: FrameKind
    packed: int  # for PARTIAL: bit j set = block j is stored
    payload: bytes  # what is stored: the frame (FULL), its packed blocks (PARTIAL), or nothing


def classify_frame(frame: bytes, hashes: list[bytes], base: BlockLocator | None) -> Classified:
    """What to store of one frame, given the hash of each of its blocks and the base's blocks."""
    if frame.count(0) == len(frame):
        return Classified(FrameKind.HOLE, 0, b"")
    if base is None:
        return Classified(FrameKind.FULL, 0, frame)
    packed = 0
    for j, h in enumerate(hashes):
        if h not in base:
            packed |= 1 << j
    if packed == 0:
        return Classified(FrameKind.BASE, 0, b"")
    if packed == (1 << len(hashes)) - 1:
        return Classified(FrameKind.FULL, 0, frame)
    stored = b"".join(frame[j * BLOCK:(j + 1) * BLOCK] for j in range(len(hashes)) if packed >> j & 1)
    return Classified(FrameKind.PARTIAL, packed, stored)


def open_base(src: str, output: str, url: str | None = None) -> Base:
    """Read the base image named ``src`` for a build into ``output`` (a directory or a DP URL).

    ``url`` is how the new manifest will refer to the base (relative to the new manifest, or
    absolute); by default it is derived from where both are, when that is possible.
    """
    image = read_image(src)
    m = image.manifest
    ref = BaseRef(name=m.name, version=m.version, url=url or base_url(image.location, output),
                  manifest_sha256=image.manifest_sha256)
    return Base(ref, BlockLocator(image.blocks))


def base_url(base_manifest: str, output: str) -> str:
    """The base's manifest as the new manifest (in ``output``, a directory or a URL) reaches it."""
    if is_url(base_manifest):
        if is_url(output):
            b, o = urlsplit(base_manifest), urlsplit(output)
            if (b.scheme, b.netloc) == (o.scheme, o.netloc):
                directory = o.path if o.path.endswith("/") else o.path + "/"
                return posixpath.relpath(b.path, directory)
        return base_manifest
    if is_url(output):
        raise UsageError(f"the base {base_manifest} is a local file and the output {output} a URL: say how the "
                         "new manifest will find the base on the DP (--base-url, e.g. ../1.0/manifest.json)")
    relative = os.path.relpath(os.path.abspath(base_manifest), os.path.abspath(output))
    return relative.replace(os.sep, "/")
