"""``peagent image verify``: check every byte of a built image before anyone deploys it.

In order: the manifest's signature (or its pin) with the keys given; the frame table's and block
index's sha256 (as the manifest gives them); the blob's size, and that its stored frames tile it
exactly; then every frame: decompressed, completed from the base for a differencing image,
checked against its sha256, its blocks against the block index; holes are zeros by construction,
so their recorded sha256 must be that of zeros; and at the end the whole image's sha256.

A differencing image's BASE and PARTIAL frames need the base. It is found where the manifest
says (``base.url``, relative to the manifest) or where the caller says, and must be the very
manifest named (its sha256). Without it those frames are reported as "needs the base" (a
PARTIAL frame's stored blocks are still checked), and the verdict says the check is incomplete.

Every problem is a line naming the frame, its kind and its offset in the image; the report's
verdict is "ok" only when there are none, and :meth:`VerifyReport.raise_for_problems` makes the
command fail with them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from peagent.errors import ImageError, PeagentError
from peagent.fetch import NotFoundError, is_url
from peagent.image.assemble import BlobReader, FrameError, ImageData, NeedsBaseError, packed_blocks
from peagent.image.format import BLOCK, Frame, FrameKind, block_hash
from peagent.image.inspect import signature_status
from peagent.image.load import MAX_BASE_DEPTH, LoadedImage, manifest_locations, read_base, read_image
from peagent.image.sign import PublicKey


@dataclass(frozen=True)
class Problem:
    message: str
    frame: int | None = None
    kind: str | None = None
    offset: int | None = None  # in the image

    def line(self) -> str:
        if self.frame is None:
            return self.message
        return f"frame {self.frame} ({self.kind}, offset {self.offset}): {self.message}"


@dataclass
class VerifyReport:
    location: str
    signature: str = ""
    frames: int = 0
    frames_checked: int = 0
    needs_base: int = 0
    base: str | None = None  # where the base was found
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def complete(self) -> bool:
        return self.ok and self.needs_base == 0

    @property
    def verdict(self) -> str:
        if not self.ok:
            return f"BAD: {len(self.problems)} problem(s)"
        if self.needs_base:
            return (f"ok as far as checked: {self.needs_base} of {self.frames} frames need the base image "
                    "(give it with --base)")
        return f"ok: all {self.frames} frames verified"

    def render(self) -> str:
        lines = [f"{self.location}", f"  signature: {self.signature}"]
        if self.base:
            lines.append(f"  base: {self.base}")
        lines += [f"  {p.line()}" for p in self.problems]
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ok=self.ok, complete=self.complete, verdict=self.verdict)
        return d

    def raise_for_problems(self) -> None:
        if self.problems:
            shown = "; ".join(p.line() for p in self.problems[:5])
            more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
            raise ImageError(f"{self.location} does not verify: {shown}{more}")


def verify_image(src: str, keys: Sequence[PublicKey] = (), *, pin: str | None = None, base: str | None = None,
                 progress: Callable[[int], None] = lambda n: None) -> VerifyReport:
    """Verify the image named by ``src``; ``base`` names its base when the manifest's URL does not reach it."""
    report = VerifyReport(src)
    try:
        files = read_image(src)
    except PeagentError as exc:
        report.problems.append(Problem(str(exc)))
        return report
    report.location = files.location
    m = files.manifest
    report.frames = len(files.frames)
    status = signature_status(files, keys, pin)
    report.signature = status.detail
    if status.verified is False:
        report.problems.append(Problem(f"signature: {status.detail}"))
    with contextlib.ExitStack() as stack:
        base_data = None
        if m.base is not None:
            try:
                base_data, report.base = _open_base(files, base, stack)
            except PeagentError as exc:
                report.problems.append(Problem(f"base: {exc}"))
        blob = stack.enter_context(BlobReader(files.blob_location))
        _check_blob(files, blob, report)
        data = ImageData(files, blob, base_data)
        whole = hashlib.sha256()
        whole_ok = True
        for frame in files.frames:
            start, end = m.frame_extent(frame.index)
            try:
                content = data.frame(frame.index)
            except NeedsBaseError:
                report.needs_base += 1
                whole_ok = False
                if frame.kind == FrameKind.PARTIAL:
                    _check_packed(data, frame, start, end, report)
                continue
            except FrameError as exc:
                report.problems.append(Problem(exc.reason, frame.index, frame.kind.name, start))
                whole_ok = False
                continue
            finally:
                progress(end - start)
            report.frames_checked += 1
            whole.update(content)
            bad = [j for j in range(0, end - start, BLOCK)
                   if block_hash(content[j:j + BLOCK]) != files.blocks[(start + j) // BLOCK]]
            if bad:
                report.problems.append(Problem(f"{len(bad)} block(s) differ from the block index (first: block "
                                               f"{(start + bad[0]) // BLOCK})", frame.index, frame.kind.name, start))
        if whole_ok and whole.hexdigest() != m.sha256:
            report.problems.append(Problem(f"the image's sha256 is {whole.hexdigest()}, the manifest says {m.sha256}"))
    return report


def _check_blob(files: LoadedImage, blob: BlobReader, report: VerifyReport) -> None:
    """The blob's size is the manifest's, and the stored frames cover it exactly once."""
    expected = files.manifest.blob.size
    try:
        actual = blob.size()
    except PeagentError as exc:
        report.problems.append(Problem(f"blob: {exc}"))
        return
    if actual != expected:
        report.problems.append(Problem(f"blob: {actual} bytes, the manifest says {expected}"))
    stored = sorted((f.offset, f.length, f.index) for f in files.frames if f.length)
    position = 0
    for offset, length, index in stored:
        if offset != position:
            what = ("overlaps the frame before it" if offset < position
                    else f"leaves blob bytes {position}-{offset} unused")
            report.problems.append(Problem(f"blob: frame {index} at blob offset {offset} {what}"))
        position = max(position, offset + length)
    if position != expected:
        report.problems.append(Problem(f"blob: the frames end at {position}, the blob at {expected}"))


def _check_packed(data: ImageData, frame: Frame, start: int, end: int, report: VerifyReport) -> None:
    """Without the base, a PARTIAL frame's stored blocks can still be checked against the block index."""
    try:
        stored = data.stored(frame)
    except FrameError as exc:
        report.problems.append(Problem(exc.reason, frame.index, frame.kind.name, start))
        return
    taken = 0
    for j in packed_blocks(frame.packed, -(-(end - start) // BLOCK)):
        size = min(BLOCK, end - start - j * BLOCK)
        if block_hash(stored[taken:taken + size]) != data.files.blocks[start // BLOCK + j]:
            report.problems.append(Problem(f"stored block {j} differs from the block index", frame.index,
                                           frame.kind.name, start))
            return
        taken += size


def _open_base(files: LoadedImage, given: str | None, stack: contextlib.ExitStack,
               depth: int = 1) -> tuple[ImageData | None, str | None]:
    """The base's data (recursively with its own base), from ``given`` or where the manifest says.

    (None, None) when the manifest's URL leads nowhere and none was given: the frames that need
    the base are then reported as such, not as errors.
    """
    ref = files.manifest.base
    assert ref is not None
    where = manifest_locations(given) if given is not None else [files.url_of(ref.url)]
    if depth > MAX_BASE_DEPTH:
        raise ImageError(f"a chain of more than {MAX_BASE_DEPTH} base images at {where[0]}")
    if given is None and not is_url(where[0]) and not os.path.exists(where[0]):
        return None, None
    try:
        base_files = read_base(files, where)
    except NotFoundError:
        if given is None:
            return None, None
        raise
    below = None
    if base_files.manifest.base is not None:
        below, _ = _open_base(base_files, None, stack, depth + 1)
    blob = stack.enter_context(BlobReader(base_files.blob_location))
    return ImageData(base_files, blob, below), base_files.location
