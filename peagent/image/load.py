"""Getting an image ready to write: its manifest trusted, its tables read, its bases found.

An image is named by where its manifest is: a local directory or ``manifest.json`` path (an image
on a USB stick), an http(s) URL (one ending in ``/`` names a directory), or a path on the DPs,
resolved against each DP in turn (:func:`peagent.fetch.candidate_urls`), so that every file of the
image can come from any DP that has it. The other files' URLs in the manifest are relative to the
manifest's own URL, so each DP's copy of the manifest leads to that DP's copy of the files.

:func:`load_image` reads, in order, and refuses at the first problem:

1. ``manifest.json`` and, when there is one, ``manifest.json.sig``; the manifest is trusted when
   its signature verifies with a trusted key, or when its sha256 is the pin given
   (:func:`peagent.image.sign.check_manifest`); anything else is refused before anything else is
   read;
2. ``frames.bin`` and ``blocks.bin.zst``, each checked against the sha256 the manifest gives it
   (so the signature covers them, and through the frame table every frame of the blob);
3. for a differencing image, its base: the base's manifest must have exactly the sha256 the image
   names (that is the base's trust: the signed image vouches for it), then its tables, and so on
   down a chain of at most ``max_depth`` bases. A base that cannot be had is an error naming it
   (name, version, URL) before anything is written.

Nothing of the blob is read here: :class:`LoadedImage` says where it is (``blob``: one URL per DP,
or a path), for the writer to fetch only what it needs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from peagent.errors import FetchError, ImageError, ManifestError, UsageError
from peagent.fetch import NotFoundError, candidate_urls, fetch_bytes
from peagent.image.dps import session_with_ca
from peagent.image.format import (
    BaseRef,
    BlockIndex,
    FrameTable,
    Manifest,
    decode_blocks,
    decode_frames,
    parse_manifest,
)
from peagent.image.sign import PublicKey, check_manifest

MANIFEST = "manifest.json"
SIGNATURE_SUFFIX = ".sig"
MAX_MANIFEST = 1 << 20
MAX_SIGNATURE = 4096
MAX_BASE_DEPTH = 4  # bases of bases; a longer chain is refused (and so is a loop)


@dataclass(frozen=True)
class LoadedImage:
    """An image ready to be written: trusted manifest, its tables, where its blob is, its base."""

    manifest: Manifest
    manifest_sha256: str
    locations: tuple[str, ...]  # where manifest.json was looked for: one URL per DP, or a path
    frames: FrameTable
    blocks: BlockIndex
    blob: tuple[str, ...]  # the blob: one URL per DP (preferred first), or a path
    trust: str  # how the manifest came to be trusted
    base: LoadedImage | None = None

    @property
    def label(self) -> str:
        return f"{self.manifest.name} {self.manifest.version}"

    @property
    def chain(self) -> list[LoadedImage]:
        """This image, then its base, its base's base..."""
        out, image = [], self
        while image is not None:
            out.append(image)
            image = image.base
        return out


def is_url(location: str) -> bool:
    return "://" in location


def manifest_locations(source: str, dps: Sequence[str] = ()) -> list[str]:
    """Where the manifest of ``source`` may be: a path, a URL, or one URL per DP."""
    if is_url(source):
        return [source + MANIFEST if source.endswith("/") else source]
    if os.path.isdir(source):
        return [os.path.join(source, MANIFEST)]
    if os.path.exists(source):
        return [source]
    if not dps:
        raise UsageError(f"{source}: no such file or directory, and no DPs to look it up on (--dp URL)")
    return candidate_urls(source + MANIFEST if source.endswith("/") else source, dps)


def resolve(location: str, ref: str) -> str:
    """A reference in a manifest (relative to it, or absolute) as a URL or path."""
    if is_url(ref):
        return ref
    if is_url(location):
        return urljoin(location, ref)
    return os.path.normpath(os.path.join(os.path.dirname(location), ref))


def resolve_all(locations: Sequence[str], ref: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(resolve(location, ref) for location in locations))


def load_image(source: str, *, dps: Sequence[str] = (), keys: Sequence[PublicKey] = (), pin: str | None = None,
               ca: str | None = None, max_depth: int = MAX_BASE_DEPTH,
               session: requests.Session | None = None) -> LoadedImage:
    """Read and trust the image named by ``source`` (and its bases); see the module's docstring."""
    session = session or session_with_ca(ca)
    locations = manifest_locations(source, dps)
    data = _read(locations, MAX_MANIFEST, session, "the manifest")
    signature = _read_optional([loc + SIGNATURE_SUFFIX for loc in locations], MAX_SIGNATURE, session)
    trust = check_manifest(data, signature.decode(errors="replace") if signature is not None else None, keys, pin)
    image = _tables(data, locations, trust, session)
    if image.manifest.base is not None:
        image = _with_base(image, image.manifest.base, session, depth=1, max_depth=max_depth)
    return image


def _tables(data: bytes, locations: Sequence[str], trust: str, session: requests.Session) -> LoadedImage:
    where = locations[0]
    try:
        manifest = parse_manifest(data)
        frames = decode_frames(_read(resolve_all(locations, manifest.frames.url), manifest.frames.size, session,
                                     "the frame table"), manifest)
        blocks = decode_blocks(_read(resolve_all(locations, manifest.blocks.url), manifest.blocks.size, session,
                                     "the block index"), manifest)
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    return LoadedImage(manifest, hashlib.sha256(data).hexdigest(), tuple(locations), frames, blocks,
                       resolve_all(locations, manifest.blob.url), trust)


def _with_base(image: LoadedImage, ref: BaseRef, session: requests.Session, depth: int,
               max_depth: int) -> LoadedImage:
    """``image`` with its base (and the base's bases) loaded."""
    named = f"{ref.name} {ref.version} ({ref.url})"
    if depth > max_depth:
        raise ImageError(f"{image.label}: its base {named} is more than {max_depth} bases deep; refusing "
                         "so long a chain (or a loop of bases)")
    locations = resolve_all(image.locations, ref.url)
    try:
        data = _read(locations, MAX_MANIFEST, session, f"the manifest of the base image {named}")
    except NotFoundError as exc:
        raise ImageError(f"{image.label} is a differencing image, and its base image {named} is not on any DP: "
                         f"{exc}; put the base image there, or deploy a full image") from None
    except FetchError as exc:
        raise FetchError(f"the base image {named} of {image.label} cannot be fetched: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != ref.manifest_sha256:
        raise ImageError(f"the base image {named} of {image.label} at {locations[0]} is not the one it was "
                         f"built on: its manifest's sha256 is {digest}, expected {ref.manifest_sha256} "
                         "(was the base rebuilt or replaced?)")
    base = _tables(data, locations, f"base of {image.label} (manifest sha256 {digest})", session)
    if base.manifest.base is not None:
        base = _with_base(base, base.manifest.base, session, depth + 1, max_depth)
    return LoadedImage(image.manifest, image.manifest_sha256, image.locations, image.frames, image.blocks,
                       image.blob, image.trust, base)


def _read(locations: Sequence[str], limit: int, session: requests.Session, what: str) -> bytes:
    """A small file whole from the first location that has it."""
    urls = [loc for loc in locations if is_url(loc)]
    if urls:
        return fetch_bytes(urls, limit, session)
    path = locations[0]
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{what}: {path} does not exist") from None
    except OSError as exc:
        raise ImageError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise ImageError(f"{what}: {path} is larger than the {limit} bytes allowed for it")
    return data


def _read_optional(locations: Sequence[str], limit: int, session: requests.Session) -> bytes | None:
    try:
        return _read(locations, limit, session, "the signature")
    except NotFoundError:
        return None
