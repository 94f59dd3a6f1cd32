"""Reading a built image's files, from a directory or over HTTP, each checked against the manifest.

An image is named by where its manifest is (docs/image-format.md): a directory holding
``manifest.json``, the manifest's own path, or a URL (one ending in ``/`` names a directory).
:func:`read_image` fetches the manifest, its signature when there is one, the frame table and the
block index; the last two are checked against the sha256 the manifest gives them (so a damaged
download is an error here, not a puzzle later). It does not decide whether to trust the
manifest: that is peagent.image.sign's job, given keys or a pin.

:class:`BlobReader` reads byte ranges of the blob: ``pread`` on a local file; over HTTP, one
streaming request per run of sequential reads (resumed by peagent.fetch.RangeReader when the link
drops), so reading frames in blob order costs one request, and a jump costs a new one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests

from peagent.errors import FetchError, ImageError, ManifestError
from peagent.fetch import RangeReader, fetch_bytes, new_session
from peagent.image.format import BlockIndex, FrameTable, Manifest, decode_blocks, decode_frames, parse_manifest

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
MAX_MANIFEST = 1 << 20
MAX_SIGNATURE = 4096
SKIP_LIMIT = 1 << 20  # a forward jump this small is read through rather than reconnected


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def manifest_location(src: str) -> str:
    """Where the manifest of the image named ``src`` is: a path or a URL."""
    if is_url(src):
        if src.endswith("/"):
            return src + MANIFEST
        return src if src.rsplit("/", 1)[-1].endswith(".json") else src + "/" + MANIFEST
    path = Path(src)
    return str(path / MANIFEST) if path.is_dir() else str(path)


def resolve(manifest_at: str, ref: str) -> str:
    """A manifest's reference (relative to the manifest, or absolute) as a path or URL."""
    if is_url(ref):
        return ref
    if is_url(manifest_at):
        return urljoin(manifest_at, ref)
    if ref.startswith("/"):
        return ref
    return os.path.normpath(os.path.join(os.path.dirname(manifest_at), ref))


def read_file(location: str, limit: int, session: requests.Session | None = None) -> bytes:
    """A small file whole, refusing one over ``limit`` bytes; FetchError/ImageError when it is missing."""
    if is_url(location):
        return fetch_bytes([location], limit, session)
    try:
        with open(location, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise ImageError(f"{location} does not exist") from None
    except OSError as exc:
        raise ImageError(f"cannot read {location}: {exc.strerror}") from None
    if len(data) > limit:
        raise ImageError(f"{location} is larger than the {limit} bytes allowed for it")
    return data


def _optional(location: str, limit: int, session: requests.Session | None) -> bytes | None:
    from peagent.fetch import NotFoundError

    if not is_url(location) and not os.path.exists(location):
        return None
    try:
        return read_file(location, limit, session)
    except NotFoundError:
        return None


@dataclass
class ImageFiles:
    """An image's small files, parsed and checked against each other (not yet trusted)."""

    location: str  # of manifest.json
    manifest_bytes: bytes
    signature: str | None
    manifest: Manifest
    frames: FrameTable
    blocks: BlockIndex

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    def url_of(self, ref: str) -> str:
        return resolve(self.location, ref)

    @property
    def blob_location(self) -> str:
        return self.url_of(self.manifest.blob.url)


def read_image(src: str, *, expect_sha256: str | None = None,
               session: requests.Session | None = None) -> ImageFiles:
    """Read the image named by ``src``; ``expect_sha256`` pins its manifest (a base named by another)."""
    location = manifest_location(src)
    session = session or (new_session() if is_url(location) else None)
    data = read_file(location, MAX_MANIFEST, session)
    digest = hashlib.sha256(data).hexdigest()
    if expect_sha256 is not None and digest != expect_sha256:
        raise ImageError(f"{location}: its sha256 is {digest}, but {expect_sha256} was expected: "
                         "this is not the image named (rebuilt since?)")
    try:
        manifest = parse_manifest(data)
    except ManifestError as exc:
        raise ManifestError(f"{location}: {exc}") from None
    sig = _optional(location + ".sig", MAX_SIGNATURE, session)  # manifest.json.sig beside manifest.json
    frames_at = resolve(location, manifest.frames.url)
    blocks_at = resolve(location, manifest.blocks.url)
    try:
        frames = decode_frames(read_file(frames_at, manifest.frames.size, session), manifest)
        blocks = decode_blocks(read_file(blocks_at, manifest.blocks.size, session), manifest)
    except ManifestError as exc:
        raise ManifestError(f"{location}: {exc}") from None
    return ImageFiles(location, data, sig.decode(errors="replace") if sig is not None else None,
                      manifest, frames, blocks)


class BlobReader:
    """Byte ranges of a blob (a path or a URL), cheapest when read in increasing order."""

    def __init__(self, location: str, session: requests.Session | None = None) -> None:
        self.location = location
        self.session = session or (new_session() if is_url(location) else None)
        self._fd: int | None = None
        self._reader: RangeReader | None = None
        if not is_url(location):
            try:
                self._fd = os.open(location, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise ImageError(f"cannot read the blob {location}: {exc.strerror}") from None

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def size(self) -> int:
        """The blob's actual size (over HTTP: as the server reports it)."""
        if self._fd is not None:
            return os.fstat(self._fd).st_size
        assert self.session is not None
        try:
            r = self.session.head(self.location, timeout=(5, 15), allow_redirects=True)
        except requests.RequestException as exc:
            raise FetchError(f"{self.location}: {exc}") from None
        if r.status_code != 200 or "Content-Length" not in r.headers:
            raise FetchError(f"{self.location}: HTTP {r.status_code} without a length")
        return int(r.headers["Content-Length"])

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; fewer only when the blob ends first."""
        if self._fd is not None:
            return os.pread(self._fd, length, offset)
        reader = self._reader
        if reader is not None and not reader.position <= offset <= reader.position + SKIP_LIMIT:
            reader.close()
            reader = None
        if reader is None:
            reader = self._reader = RangeReader([self.location], self.session)
            reader.position = offset  # the first request asks for bytes=offset-
        while reader.position < offset:
            if not reader.read(min(offset - reader.position, 1 << 20)):
                return b""
        parts, want = [], length
        while want:
            data = reader.read(want)
            if not data:
                break
            parts.append(data)
            want -= len(data)
        return b"".join(parts)
