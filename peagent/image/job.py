"""An image to write, prepared before anything is destroyed: both kinds of image behind one call.

A deploy writes one of two kinds of image. A **peagent image** (a signed manifest, frames and a
block index: docs/image-format.md) goes through the frame engine (peagent.image.writer), which
resumes, verifies frame by frame and reuses what the disk holds. A **third-party image** (a raw
or compressed single stream, maybe with a bmap: docs/third-party-images.md) goes through the
stream writer (peagent.image.stream).

Either way, :func:`prepare_image` does everything that can refuse first (trusting the manifest
and loading its tables and bases; fetching the checksum file and the bmap) and returns an
:class:`ImageJob` that knows the image's size; the caller checks it against the disk, runs its
destructive steps (erase, partitioning), and only then calls :meth:`ImageJob.write`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from peagent.disk.capabilities import EraseCaps
from peagent.image.load import LoadedImage, load_image
from peagent.image.sign import PublicKey
from peagent.image.stream import StreamJob, write_stream
from peagent.image.thirdparty import StreamSource, open_image, prepare
from peagent.image.writer import WriteOptions, write_manifest_image
from peagent.progress import MIB


@dataclass(frozen=True)
class ManifestSource:
    """A peagent image, named by its manifest (a DP path, URL, directory or manifest.json path)."""

    manifest: str
    pin: str | None = None  # the manifest's sha256, when the task vouches for it instead of a key


ImageSource = ManifestSource | StreamSource


@dataclass(frozen=True)
class FilesSource:
    """File images applied into a filesystem: a base (an OS tree), then the layers a task picks, in order."""

    base: ManifestSource
    layers: tuple[ManifestSource, ...] = ()
    allow_devices: bool = False  # the images are trusted to carry device nodes and FIFOs

    @property
    def all(self) -> tuple[ManifestSource, ...]:
        return (self.base, *self.layers)


@dataclass(frozen=True)
class WimFile:
    """A WIM file on the DPs (or a URL) and the sha256 every byte of it is verified against."""

    url: str
    sha256: str


@dataclass(frozen=True)
class WimSource:
    """A Windows image: image ``index`` of a WIM, with the split parts or delta bases it needs (peagent.files.wim)."""

    wim: WimFile
    index: int
    refs: tuple[WimFile, ...] = ()

    @property
    def all(self) -> tuple[WimFile, ...]:
        return (self.wim, *self.refs)


class ImageJob(Protocol):
    label: str
    size: int | None  # bytes of the image, when known before writing

    @property
    def identity(self) -> tuple[str, str | None, str | None]:
        """Name, version and a digest naming the image's exact content ("sha256:<hex>"), for records."""
        ...

    def write(self, target: str, *, target_zeroed: bool, progress: Callable[[int], None],
              on_retry: Callable[[str], None] | None) -> list[str]:
        """Write and verify; the report's lines. Raises on anything short of a verified image."""
        ...


@dataclass
class _FrameJob:
    image: LoadedImage
    options: WriteOptions

    @property
    def label(self) -> str:
        return self.image.label

    @property
    def size(self) -> int:
        return self.image.manifest.size

    @property
    def identity(self) -> tuple[str, str | None, str | None]:
        return self.image.manifest.name, self.image.manifest.version, f"sha256:{self.image.manifest_sha256}"

    def write(self, target: str, *, target_zeroed: bool, progress: Callable[[int], None],
              on_retry: Callable[[str], None] | None) -> list[str]:
        options = replace(self.options, target_zeroed=target_zeroed or self.options.target_zeroed)
        report = write_manifest_image(self.image, target, options, progress, on_retry)
        return [f"{self.image.trust}", report.summary()]


@dataclass
class _StreamJob:
    source: StreamSource
    job: StreamJob
    dps: Sequence[str]
    caps: EraseCaps | None

    @property
    def label(self) -> str:
        return self.source.url

    @property
    def size(self) -> int | None:
        return self.job.expected_size

    @property
    def identity(self) -> tuple[str, str | None, str | None]:
        digest = self.job.digest or self.job.compressed_digest
        return self.job.name or self.source.url, None, f"{digest.algorithm}:{digest.hex}" if digest else None

    def write(self, target: str, *, target_zeroed: bool, progress: Callable[[int], None],
              on_retry: Callable[[str], None] | None) -> list[str]:
        with open_image(self.source.url, self.dps, on_retry) as reader:
            result = write_stream(reader, target, self.job, target_zeroed=target_zeroed, caps=self.caps,
                                  progress=progress)
        c = result.counts
        return [*result.checks, f"{result.size / MIB:.1f} MiB in {result.seconds:.1f} s: {c.written / MIB:.1f} MiB "
                f"written, {c.in_place / MIB:.1f} MiB already in place, {c.zero_skipped / MIB:.1f} MiB of zeros "
                "skipped"]


def prepare_image(source: ImageSource, dps: Sequence[str], *, keys: Sequence[PublicKey] = (),
                  caps: EraseCaps | None = None, options: WriteOptions | None = None,
                  journal_dir: Path | None = None) -> ImageJob:
    """Everything that can refuse, before the first write: an ImageJob ready to write."""
    if isinstance(source, ManifestSource):
        options = options or WriteOptions()
        image = load_image(source.manifest, dps=dps, keys=keys, pin=source.pin, ca=options.ca)
        if journal_dir is not None and options.journal is None:
            options = replace(options, journal=journal_dir / f"{image.manifest_sha256[:16]}.journal")
        if caps is not None and options.discard_zeroes is None:
            options = replace(options, discard_zeroes=caps.discard_zeroes)
        return _FrameJob(image, options)
    return _StreamJob(source, prepare(source, dps), dps, caps)


def names_a_manifest(ref: str) -> bool:
    """Whether a SOURCE names a peagent image (a manifest) rather than a third-party image file."""
    if Path(ref).is_dir():
        return True
    return ref.endswith("/") or ref.rsplit("/", 1)[-1] == "manifest.json"
