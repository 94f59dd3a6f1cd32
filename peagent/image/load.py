"""Reading an image's small files, and deciding whether to trust them.

An image is named by where its manifest is: a local directory or ``manifest.json`` path (an image
on a USB stick), an http(s) URL, or a path on the DPs, resolved against each DP in turn
(:func:`peagent.fetch.candidate_urls`), so that every file of the image can come from any DP that
has it. A URL or DP path ending in ``/``, or whose last part does not end in ``.json``, names a
directory. The other files' URLs in the manifest are relative to the manifest's own URL, so each
DP's copy of the manifest leads to that DP's copy of the files.

Two ways in, one reader:

* :func:`load_image` is a deploy's: it trusts the manifest or refuses it. In order, and refusing
  at the first problem:

  1. ``manifest.json`` and, when there is one, ``manifest.json.sig``; the manifest is trusted when
     its signature verifies with a trusted key, or when its sha256 is the pin given
     (:func:`peagent.image.sign.check_manifest`); anything else is refused before anything else
     is read;
  2. ``frames.bin`` and ``blocks.bin.zst``, each checked against the sha256 the manifest gives it
     (so the signature covers them, and through the frame table every frame of the blob);
  3. for a differencing image, its base (:func:`read_base`): the base's manifest must have exactly
     the sha256 the image names (that is the base's trust: the signed image vouches for it), then
     its tables, and so on down a chain of at most ``max_depth`` bases. A base that cannot be had
     is an error naming it (name, version, URL) before anything is written.

* :func:`read_image` is for looking at an image (``peagent image inspect``, ``verify``, ``diff``,
  a differencing build's base): the same files, equally checked against the manifest, but no
  decision on trust (the caller reports the signature's status: peagent.image.inspect) and no
  bases.

Nothing of the blob is read here: :class:`LoadedImage` says where it is (``blob``: one URL per DP,
or a path), for the writer to fetch only what it needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from peagent.errors import FetchError, ImageError, ManifestError, UsageError
from peagent.fetch import NotFoundError, candidate_urls, fetch_bytes, is_url, read_local
from peagent.image.dps import session_with_ca
from peagent.image.format import (
    MANIFEST,
    SIGNATURE_SUFFIX,
    BaseRef,
    BlockIndex,
    FrameTable,
    Manifest,
    decode_blocks,
    decode_frames,
    parse_manifest,
)
from peagent.image.sign import PublicKey, check_manifest

MAX_MANIFEST = 1 << 20
MAX_SIGNATURE = 4096
MAX_BASE_DEPTH = 4  # bases of bases; a longer chain is refused (and so is a loop)


@dataclass(frozen=True)
class LoadedImage:
    """An image's manifest and tables, checked against each other; where its blob is; its base."""

    manifest: Manifest
    manifest_bytes: bytes
    manifest_sha256: str
    signature: str | None  # manifest.json.sig, when there is one
    locations: tuple[str, ...]  # where manifest.json was looked for: one URL per DP, or a path
    frames: FrameTable
    blocks: BlockIndex
    blob: tuple[str, ...]  # the blob: one URL per DP (preferred first), or a path
    trust: str | None  # how the manifest came to be trusted; None: not decided (read_image)
    base: LoadedImage | None = None

    @property
    def location(self) -> str:
        return self.locations[0]

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

    @property
    def blob_location(self) -> str:
        return self.blob[0]

    def url_of(self, ref: str) -> str:
        """A reference in the manifest, as a URL or path from the (first) place the manifest was found."""
        return resolve(self.location, ref)


def manifest_locations(source: str, dps: Sequence[str] = ()) -> list[str]:
    """Where the manifest of ``source`` may be: a path, a URL, or one URL per DP."""
    if is_url(source):
        return [_manifest_ref(source)]
    if os.path.isdir(source):
        return [os.path.join(source, MANIFEST)]
    if os.path.exists(source):
        return [source]
    if not dps:
        raise UsageError(f"{source}: no such file or directory, and no DPs to look it up on")
    return candidate_urls(_manifest_ref(source), dps)


def _manifest_ref(ref: str) -> str:
    if ref.endswith("/"):
        return ref + MANIFEST
    return ref if ref.rsplit("/", 1)[-1].endswith(".json") else ref + "/" + MANIFEST


def resolve(location: str, ref: str) -> str:
    """A reference in a manifest (relative to it, or absolute) as a URL or path."""
    if is_url(ref):
        return ref
    if is_url(location):
        return urljoin(location, ref)
    return os.path.normpath(os.path.join(os.path.dirname(location), ref))


def resolve_all(locations: Sequence[str], ref: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(resolve(location, ref) for location in locations))


def read_image(source: str, *, dps: Sequence[str] = (), session: requests.Session | None = None) -> LoadedImage:
    """The image named by ``source``, its files checked against its manifest but not trusted (trust None)."""
    session = session or session_with_ca(None)
    locations = manifest_locations(source, dps)
    data = _read(locations, MAX_MANIFEST, session, "the manifest")
    return _with_tables(data, _signature(locations, session), locations, None, session)


def load_image(source: str, *, dps: Sequence[str] = (), keys: Sequence[PublicKey] = (), pin: str | None = None,
               ca: str | None = None, max_depth: int = MAX_BASE_DEPTH,
               session: requests.Session | None = None) -> LoadedImage:
    """Read and trust the image named by ``source`` (and its bases); see the module's docstring."""
    session = session or session_with_ca(ca)
    locations = manifest_locations(source, dps)
    data = _read(locations, MAX_MANIFEST, session, "the manifest")
    signature = _signature(locations, session)
    trust = check_manifest(data, signature, keys, pin)
    image = _with_tables(data, signature, locations, trust, session)
    if image.manifest.base is not None:
        image = _with_base(image, session, depth=1, max_depth=max_depth)
    return image


def read_base(image: LoadedImage, locations: Sequence[str] = (), session: requests.Session | None = None
              ) -> LoadedImage:
    """The base ``image`` names, from where its manifest says (or from ``locations``), and without its
    own base. Its manifest must have the sha256 the image names; NotFoundError when it is nowhere."""
    ref = image.manifest.base
    assert ref is not None
    session = session or session_with_ca(None)
    locations = tuple(locations) or resolve_all(image.locations, ref.url)
    named = _named(ref)
    data = _read(locations, MAX_MANIFEST, session, f"the manifest of the base image {named}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != ref.manifest_sha256:
        raise ImageError(f"the base image {named} of {image.label} at {locations[0]} is not the one it was "
                         f"built on: its manifest's sha256 is {digest}, expected {ref.manifest_sha256}: this is "
                         "not the image named (was the base rebuilt or replaced?)")
    # The base's own signature does not matter: the image that names it vouches for it.
    return _with_tables(data, None, locations, f"base of {image.label} (manifest sha256 {digest})", session)


def _named(ref: BaseRef) -> str:
    return f"{ref.name} {ref.version} ({ref.url})"


def _with_tables(data: bytes, signature: str | None, locations: Sequence[str], trust: str | None,
                 session: requests.Session) -> LoadedImage:
    """The image whose manifest is ``data``, with its tables read and checked against it."""
    try:
        manifest = parse_manifest(data)
        frames = decode_frames(_read(resolve_all(locations, manifest.frames.url), manifest.frames.size, session,
                                     "the frame table"), manifest)
        blocks = decode_blocks(_read(resolve_all(locations, manifest.blocks.url), manifest.blocks.size, session,
                                     "the block index"), manifest)
    except ManifestError as exc:
        raise ManifestError(f"{locations[0]}: {exc}") from None
    return LoadedImage(manifest, data, hashlib.sha256(data).hexdigest(), signature, tuple(locations), frames, blocks,
                       resolve_all(locations, manifest.blob.url), trust)


def _with_base(image: LoadedImage, session: requests.Session, depth: int, max_depth: int) -> LoadedImage:
    """``image`` with its base (and the base's bases) loaded."""
    ref = image.manifest.base
    assert ref is not None
    named = _named(ref)
    if depth > max_depth:
        raise ImageError(f"{image.label}: its base {named} is more than {max_depth} bases deep; refusing "
                         "so long a chain (or a loop of bases)")
    try:
        base = read_base(image, session=session)
    except NotFoundError as exc:
        raise ImageError(f"{image.label} is a differencing image, and its base image {named} is not on any DP: "
                         f"{exc}; put the base image there, or deploy a full image") from None
    except FetchError as exc:
        raise FetchError(f"the base image {named} of {image.label} cannot be fetched: {exc}") from None
    if base.manifest.base is not None:
        base = _with_base(base, session, depth + 1, max_depth)
    return dataclasses.replace(image, base=base)


def _read(locations: Sequence[str], limit: int, session: requests.Session, what: str) -> bytes:
    """A small file whole from the first location that has it."""
    urls = [loc for loc in locations if is_url(loc)]
    if urls:
        return fetch_bytes(urls, limit, session)
    return read_local(locations[0], limit, what)


def _signature(locations: Sequence[str], session: requests.Session) -> str | None:
    """manifest.json.sig beside manifest.json, when there is one."""
    try:
        data = _read([loc + SIGNATURE_SUFFIX for loc in locations], MAX_SIGNATURE, session, "the signature")
    except NotFoundError:
        return None
    return data.decode(errors="replace")
