"""A test-only applier: write an image (full or differencing) onto a target file, as a deploy would.

Until the deploy engine's writer (peagent.image.writer) is there, the tests that check "a
differencing image applied over A gives B" use this: every frame comes verified from
peagent.image.assemble.ImageData, its base blocks from a raw copy of the base image (never from
the target itself, which a real writer must order carefully, since it overwrites what it reads).
"""

from __future__ import annotations

import os
from pathlib import Path

from peagent.image.assemble import BlobReader, ImageData, RawBase
from peagent.image.format import FrameKind
from peagent.image.load import read_base, read_image


def apply_image(image: str, target: Path, base_raw: Path | None = None) -> None:
    """Write ``image`` onto ``target`` (which may hold the base already), truncated to the image's size."""
    files = read_image(image)
    base = None
    if files.manifest.base is not None:
        assert base_raw is not None, "a differencing image needs the raw base"
        base_files = read_base(files)
        base = RawBase(str(base_raw), base_files.blocks, base_files.manifest.size)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with BlobReader(files.blob_location) as blob:
            data = ImageData(files, blob, base)
            for frame in files.frames:
                start, end = files.manifest.frame_extent(frame.index)
                if frame.kind == FrameKind.HOLE:
                    os.pwrite(fd, bytes(end - start), start)
                else:
                    os.pwrite(fd, data.frame(frame.index), start)
        os.ftruncate(fd, files.manifest.size)
        os.fsync(fd)
    finally:
        os.close(fd)
        if base is not None:
            base.close()
