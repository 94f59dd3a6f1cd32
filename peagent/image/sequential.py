"""An image's bytes in order, every frame verified: how a file image reaches the tar applier.

A disk image is written frame by frame, each at its own place, in whatever order the write plan
chooses. A file image (a tar stream, manifest kind ``files``) is consumed instead: its bytes must
come in order, to something that reads (peagent.files.extract). :class:`ImageStream` is that
read-only file object. It plans every frame as fetched (there is no target whose blocks could be
reused), lets a FrameSource (peagent.image.framesource) fetch, decompress and **verify** the
frames ahead of the reader over the same parallel, resumed range requests as a disk write, and
hands out their bytes in order; a hole frame reads as zeros, a frame of a differencing image is
assembled from its base. A frame no DP serves right raises VerifyError naming it, so a reader
never sees a byte that does not match the signed manifest.

Memory stays bounded by the FrameSource's queue and fetch window, however large the image.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable

from peagent.errors import DeviceError
from peagent.image.framesource import BadFrame, FrameSource
from peagent.image.load import LoadedImage
from peagent.image.ranges import FetchOptions
from peagent.image.reuse import How, plan_frames

log = logging.getLogger(__name__)


def _no_disk(offset: int, length: int) -> bytes:
    raise DeviceError("internal: a streamed image has no target to read blocks from")


class ImageStream:
    """``read(size)`` over the verified bytes of ``image``; use as a context manager."""

    def __init__(self, image: LoadedImage, fetch: FetchOptions | None = None, threads: int = 0,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.image = image
        self.plan = plan_frames(image.chain, target_zero=True)  # nothing to keep, no disk to copy from
        self.plan.order = array("I", range(image.manifest.frame_count))  # a stream is read in order
        self.frames = FrameSource(image, self.plan, _no_disk, fetch or FetchOptions(), threads, on_retry)
        self._piece = memoryview(b"")
        self._started = self._ended = False
        self.position = 0  # bytes handed out
        self._taken = 0  # bytes of the frames taken from the FrameSource

    def __enter__(self) -> ImageStream:
        self.frames.start()
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._started:
            self.frames.close()
            self._started = False

    @property
    def fetched(self) -> int:
        """Bytes received from the DPs so far (retries included)."""
        return self.frames.fetcher.received

    def read(self, size: int = -1) -> bytes:
        if not self._started:
            raise RuntimeError("ImageStream.read outside its with block")
        if size is None or size < 0:
            size = self.image.manifest.size - self.position
        out = bytearray()
        while len(out) < size:
            if not self._piece and not self._next():
                break
            take = self._piece[:size - len(out)]
            out += take
            self._piece = self._piece[len(take):]
        self.position += len(out)
        return bytes(out)

    def _next(self) -> bool:
        """The next frame's bytes into ``_piece``; False at the end of the image."""
        if self._ended:
            return False
        item = self.frames.queue.get()
        if item is None:
            self._ended = True
            if self._taken != self.image.manifest.size:
                raise DeviceError("internal: the frames ended before the image did")
            return False
        if isinstance(item, BaseException):
            raise item
        j, how, job = item
        self._taken += self.plan.frame_length(j)
        if how == How.HOLE:
            self._piece = memoryview(bytes(self.plan.frame_length(j)))
            return True
        assert job is not None
        try:
            data = job.result()
        except BadFrame as bad:
            log.warning("frame %d did not verify (%s); taking it from another DP", j, bad)
            data = self.frames.recover(j, how, bad)
        self._piece = memoryview(data)
        return True
