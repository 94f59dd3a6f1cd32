"""A base file image and its layers, applied in order into a directory.

A machine gets a base (the OS tree) and the layers its task picks (say 3 of 10 applications),
each a file image on the DPs. :func:`apply_images` first loads and checks every one of them (the
signature or pin, the tables, that each is a file image, that only the first may be a base), so
that a wrong or missing layer is refused before a single file is written; then it streams each
image's verified bytes (peagent.image.sequential) into the safe tar applier
(peagent.files.extract), the base as a base (whiteouts refused), the others as layers (their
whiteouts delete what the layers below put there). A later layer wins for every path it carries;
docs/image-build.md has the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from peagent.errors import ImageError
from peagent.files.extract import ApplyReport, Limits, apply_tar
from peagent.image.load import LoadedImage, load_image
from peagent.image.ranges import FetchOptions
from peagent.image.sequential import ImageStream
from peagent.image.sign import PublicKey


@dataclass(frozen=True)
class Applied:
    label: str
    layer: bool
    report: ApplyReport
    fetched: int


def load_stack(sources: Sequence[str], dps: Sequence[str], keys: Sequence[PublicKey],
               pins: Sequence[str | None] = (), *, need_base: bool = False) -> list[LoadedImage]:
    """Every image of the stack, loaded and checked; ImageError naming the first that does not fit.

    ``pins`` are the manifests' sha256s, one per source (None: trusted by signature). A layer must
    have been made over the tree the base was made from; ``need_base`` refuses a stack that starts
    with a layer (a new filesystem, or one an old OS was deleted from, has no base to lay it over).
    """
    pins = list(pins) or [None] * len(sources)
    images = [load_image(source, dps=dps, keys=keys, pin=pin) for source, pin in zip(sources, pins, strict=True)]
    for i, image in enumerate(images):
        m = image.manifest
        if m.kind != "files":
            raise ImageError(f"{image.label} is a {m.kind} image: only file images (kind files) are applied into "
                             "a directory; write disk and partition images with `peagent write`")
        if i and m.layer is None:
            raise ImageError(f"{image.label} is a base file image, but comes after {images[0].label}: only the "
                             "first image may be a base, the others must be layers")
    first = images[0].manifest if images else None
    if first is not None and first.layer is not None and need_base:
        raise ImageError(f"{images[0].label} is a layer over the tree {first.layer.base_tree!r}, and its base is "
                         f"missing: name the base image (made from {first.layer.base_tree!r}) first, then the layers")
    if first is not None and first.layer is None:
        for image in images[1:]:
            layer = image.manifest.layer
            assert layer is not None
            if layer.base_tree != first.source:
                raise ImageError(f"{image.label} is a layer over the tree {layer.base_tree!r}, but the base "
                                 f"{images[0].label} was made from {first.source!r}: its base is missing from the "
                                 "stack (build base and layers from trees of the same name)")
    return images


def apply_images(sources: Sequence[str], root: Path, *, dps: Sequence[str] = (), keys: Sequence[PublicKey] = (),
                 allow_devices: bool = False, limits: Limits | None = None, fetch: FetchOptions | None = None,
                 keep: Sequence[str] = (), progress: Callable[[int], None] = lambda n: None) -> list[Applied]:
    """Apply the images named by ``sources`` (a base or a layer, then layers) into ``root``, in order."""
    if not root.is_dir():
        raise ImageError(f"{root}: not a directory (file images are applied into a mounted filesystem)")
    return apply_loaded(load_stack(sources, dps, keys), root, allow_devices=allow_devices, limits=limits,
                        fetch=fetch, keep=keep, progress=progress)


def apply_loaded(images: Sequence[LoadedImage], root: Path, *, allow_devices: bool = False,
                 limits: Limits | None = None, fetch: FetchOptions | None = None, keep: Sequence[str] = (),
                 progress: Callable[[int], None] = lambda n: None) -> list[Applied]:
    """Apply a stack :func:`load_stack` checked into ``root``, in order; ``keep`` as apply_tar's."""
    done = []
    for image in images:
        layer = image.manifest.layer is not None
        with ImageStream(image, fetch) as stream:
            report = apply_tar(stream, root, allow_devices=allow_devices, layer=layer, limits=limits or Limits(),
                               keep=keep, progress=progress)
            _rest_is_padding(stream, image)
            done.append(Applied(image.label, layer, report, stream.fetched))
    return done


def _rest_is_padding(stream: ImageStream, image: LoadedImage) -> None:
    """Read the image to its end (every frame verified): after the archive's end there may be only
    zeros (tar pads to its record size); anything else was never applied and must not pass silently."""
    at = stream.position
    while piece := stream.read(1 << 20):
        if piece.count(0) != len(piece):
            raise ImageError(f"{image.label}: data after the end of the tar archive (it ends near byte {at} of "
                             f"{image.manifest.size}): the image is not one whole archive")
