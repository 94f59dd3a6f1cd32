"""Third-party images: from what a task or the command line says to a :class:`~peagent.image.stream.StreamJob`.

A third-party image is a URL (or a path on the DPs) of a raw, gzip, xz, bzip2 or zstd file, and
what proves it: its sha256, or a checksum file that lists it (:mod:`~peagent.image.checksums`),
or a bmap with range checksums (:mod:`~peagent.image.bmap`), or several of these. :func:`prepare`
fetches the small files (checksum file, bmap) and checks them, all before the target is opened:
a missing checksum entry, a damaged bmap or a bmap for another size refuses the deployment
before a byte is written. :func:`write_url` then streams the image.

A reference is an absolute URL; or a path on the DPs when there are DPs; or, for the checksum
file and the bmap, a path relative to the image's URL (``SHA256SUMS`` next to it); or else a local
file (an image on the USB stick the PE booted from, say; read with plain reads).

The bmap setting is ``"auto"`` (look where bmaptool looks: ``<url>.bmap``, then with one suffix
after another stripped, ``a.img.xz`` -> ``a.img.xz.bmap``, ``a.img.bmap``, ``a.bmap``; none found
is fine), a URL or path (it must exist), or None (do not use one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

from peagent.disk.capabilities import EraseCaps
from peagent.errors import ImageError
from peagent.fetch import NotFoundError, RangeReader, candidate_urls, fetch_bytes, is_url, read_local
from peagent.image.bmap import BMAP_LIMIT, Bmap, bmap_refs, parse_bmap
from peagent.image.checksums import CHECKSUMS_LIMIT, Digest, image_digests
from peagent.image.compression import decompressed_name
from peagent.image.stream import StreamJob, WriteResult, write_stream

log = logging.getLogger(__name__)

Fetch = Callable[[Sequence[str], int], bytes]


@dataclass(frozen=True)
class StreamSource:
    """A third-party image as a task or the command line describes it."""

    url: str  # absolute http(s) URL, or a path on the DPs
    sha256: str | None = None  # of the decompressed image
    checksum_url: str | None = None  # a SHA256SUMS-style file that lists the image
    size: int | None = None  # of the decompressed image
    compression: str = "auto"
    bmap: str | None = "auto"  # "auto", a URL or path, or None


def image_name(ref: str) -> str:
    """The file name in a URL or path: what checksum files list and suffixes are read from."""
    return unquote(urlsplit(ref).path.rstrip("/").rsplit("/", 1)[-1])


def prepare(source: StreamSource, dps: Sequence[str] = (), *, fetch: Fetch = fetch_bytes) -> StreamJob:
    """Fetch and check what proves the image; ImageError or FetchError before anything is written."""
    name = image_name(source.url)
    digest = Digest("sha256", source.sha256.lower(), "given") if source.sha256 else None
    compressed = None
    if source.checksum_url is not None:
        where, data = _fetch(source.checksum_url, dps, source.url, CHECKSUMS_LIMIT, "the checksum file", fetch)
        listed = image_digests(data.decode("utf-8", "replace"), name, decompressed_name(name), where)
        compressed = listed.compressed
        if listed.image is not None:
            if digest is not None and listed.image.algorithm == "sha256" and listed.image.hex != digest.hex:
                raise ImageError(f"the sha256 given for {name} ({digest.hex}) differs from {where}'s "
                                 f"({listed.image.hex}): which one is right?")
            digest = digest or listed.image
    job = StreamJob(name=name, compression=source.compression, size=source.size, digest=digest,
                    compressed_digest=compressed, bmap=find_bmap(source, dps, fetch))
    job.check()
    return job


def find_bmap(source: StreamSource, dps: Sequence[str], fetch: Fetch = fetch_bytes) -> Bmap | None:
    if source.bmap is None:
        return None
    if source.bmap != "auto":
        where, data = _fetch(source.bmap, dps, source.url, BMAP_LIMIT, "the bmap", fetch)
        return parse_bmap(data, where)
    for ref in bmap_refs(source.url):
        try:
            where, data = _fetch(ref, dps, source.url, BMAP_LIMIT, "the bmap", fetch)
        except NotFoundError:
            continue
        log.info("bmap found at %s", where)
        return parse_bmap(data, where)
    log.info("no bmap next to %s: writing every byte", source.url)
    return None


def write_url(source: StreamSource, target: str, dps: Sequence[str] = (), *, target_zeroed: bool = False,
              caps: EraseCaps | None = None, resume: bool = True, holes: str = "auto",
              progress: Callable[[int], None] = lambda n: None, on_retry: Callable[[str], None] | None = None,
              on_job: Callable[[StreamJob], None] = lambda job: None) -> WriteResult:
    """prepare(), then stream the image from the DPs (or its URL) into ``target``, verified.

    ``on_job`` sees the prepared job before the stream starts (for a report: its size, its bmap).
    """
    job = prepare(source, dps)
    on_job(job)
    with open_image(source.url, dps, on_retry) as reader:
        return write_stream(reader, target, job, target_zeroed=target_zeroed, caps=caps, resume=resume,
                            holes=holes, progress=progress)


def resolve(ref: str, dps: Sequence[str], base: str = "") -> list[str]:
    """The URLs of a reference, preferred first; [] for a local file (see the module's docstring)."""
    if is_url(ref) or dps:
        return candidate_urls(ref, dps)
    if is_url(base):
        return [urljoin(base, ref)]
    return []


def _fetch(ref: str, dps: Sequence[str], base: str, limit: int, what: str, fetch: Fetch) -> tuple[str, bytes]:
    """(where it came from, its bytes) of a small file named by a reference."""
    urls = resolve(ref, dps, base)
    if urls:
        return urls[0], fetch(urls, limit)
    return ref, read_local(ref, limit, what)


def open_image(ref: str, dps: Sequence[str], on_retry: Callable[[str], None] | None) -> BinaryIO | RangeReader:
    urls = resolve(ref, dps)
    if urls:
        return RangeReader(urls, on_retry=on_retry)
    try:
        return open(ref, "rb")
    except OSError as exc:
        raise ImageError(f"cannot read the image {ref}: {exc.strerror}") from None
