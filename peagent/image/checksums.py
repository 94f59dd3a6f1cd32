"""Image digests, and checksum files (``SHA256SUMS``, ``SHA512SUMS``, Fedora's ``CHECKSUM``) as their source.

Distributions publish one checksum file per directory instead of a digest per image. Two line
formats exist, and both are read:

* GNU coreutils (``sha256sum``): ``<hex>  <name>`` (text mode) or ``<hex> *<name>`` (binary); a
  line starting with a backslash has its name escaped (``\\n``, ``\\\\``);
* BSD/``--tag`` and OpenSSL: ``SHA256 (<name>) = <hex>``, also ``SHA256(<name>)= <hex>``.

Anything else (comments, PGP armour around a clearsigned file, sizes) is skipped. A GNU line's
algorithm follows from its length: 64 hex digits are sha256, 128 sha512; md5 and sha1 lines are
recognised only to say why they are refused (they no longer prove anything).

Which stream does an entry describe? The one whose name it carries. An image
``debian.raw.xz`` is looked up under that name (the digest is then of the compressed bytes as
fetched) and under ``debian.raw`` (the digest of the decompressed image); whichever is present
is verified, both if both are. A name may be listed with a directory (``./a.img``,
``images/a.img``): an entry matches on its last path component when no entry matches exactly.
The checksum file proves integrity, not origin: it comes from the same server as the image
unless its URL says otherwise (signed checksum files are not checked here).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peagent.errors import ImageError

CHECKSUMS_LIMIT = 4 << 20  # bytes; a checksum file lists a directory, not a disk
ALGORITHMS = ("sha256", "sha512")  # preferred first: sha256 is the faster to compute here
_BY_LENGTH = {64: "sha256", 128: "sha512", 40: "sha1", 32: "md5"}
_BSD = re.compile(r"(SHA256|SHA512|SHA2-256|SHA2-512|SHA1|MD5) ?\((.+)\) ?= ?([0-9a-fA-F]+)")
_GNU = re.compile(r"([0-9a-fA-F]{32,128}) [ *](.+)")


@dataclass(frozen=True)
class Digest:
    algorithm: str  # one of ALGORITHMS
    hex: str  # lower case
    source: str = ""  # where it came from ("the task", a checksum file's URL), for messages

    def new(self) -> Any:  # a hashlib object
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm} {self.hex}"


@dataclass(frozen=True)
class Entry:
    name: str
    algorithm: str
    hex: str


@dataclass(frozen=True)
class ImageDigests:
    """What a checksum file says about one image: of the decompressed image, of the file as fetched."""

    image: Digest | None
    compressed: Digest | None


def parse_checksums(text: str) -> list[Entry]:
    """Every entry of a checksum file, in order; unrecognised lines are skipped."""
    entries = []
    for raw in text.splitlines():
        line = raw.strip("\r")
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        bsd = _BSD.fullmatch(line.strip())
        if bsd:
            algorithm = {"SHA2-256": "sha256", "SHA2-512": "sha512"}.get(bsd[1], bsd[1].lower())
            name, hexdigest = bsd[2], bsd[3]
        else:
            gnu = _GNU.fullmatch(line)
            if not gnu or len(gnu[1]) not in _BY_LENGTH:
                continue
            hexdigest, name = gnu[1], gnu[2]
            algorithm = _BY_LENGTH[len(hexdigest)]
        if escaped:
            name = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], name)
        if len(hexdigest) == hashlib.new(algorithm).digest_size * 2:
            entries.append(Entry(name=name, algorithm=algorithm, hex=hexdigest.lower()))
    return entries


def find_digest(entries: list[Entry], name: str, source: str) -> Digest | None:
    """The strongest usable digest listed for ``name`` (exactly, else by its last path component)."""
    exact = [e for e in entries if _strip(e.name) == name]
    found = exact or [e for e in entries if e.name.rsplit("/", 1)[-1] == name]
    usable = [e for e in found if e.algorithm in ALGORITHMS]
    if found and not usable:
        raise ImageError(f"{source} lists {name} only with {', '.join(sorted({e.algorithm for e in found}))}, "
                         f"which peagent does not accept as proof; use a file with {' or '.join(ALGORITHMS)}")
    for algorithm in ALGORITHMS:
        digests = {e.hex for e in usable if e.algorithm == algorithm}
        if len(digests) > 1:
            raise ImageError(f"{source} lists {name} more than once with different {algorithm} digests")
        if digests:
            return Digest(algorithm, digests.pop(), source)
    return None


def image_digests(text: str, name: str, decompressed_name: str, source: str) -> ImageDigests:
    """The digests a checksum file gives for an image fetched as ``name``; ImageError when it has none."""
    entries = parse_checksums(text)
    if not entries:
        raise ImageError(f"{source} is not a checksum file: no line like '<sha256>  <name>' or "
                         "'SHA256 (<name>) = <sha256>'")
    compressed = find_digest(entries, name, source)
    image = find_digest(entries, decompressed_name, source) if decompressed_name != name else None
    if name == decompressed_name:  # not compressed: the file is the image
        image, compressed = compressed, None
    if image is None and compressed is None:
        names = sorted({e.name for e in entries})
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        wanted = name if name == decompressed_name else f"{name} (nor for {decompressed_name})"
        raise ImageError(f"{source} has no entry for {wanted}; it lists {shown}")
    return ImageDigests(image=image, compressed=compressed)


def file_sha256(path: Path) -> str:
    """The sha256 of a local file, in hex."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _strip(name: str) -> str:
    return name[2:] if name.startswith("./") else name
