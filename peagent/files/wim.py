"""Windows file images: WIM archives applied, captured and inspected with wimlib's command-line tools.

A **WIM** (Windows Imaging) file is Microsoft's file-based image format (``install.wim`` on every Windows
medium): an archive of one or more **images**, numbered from 1 (``wiminfo`` lists them with their names,
"Windows 11 Pro" being index 6 of a retail medium, say). File data is stored once per WIM however many
files and images hold it (each blob is named by its SHA-1), so a WIM of several editions is barely
larger than one. An image's metadata keeps what NTFS keeps: security descriptors, named (alternate)
data streams, reparse points (symlinks, junctions), short 8.3 names, object ids, attributes, times.

Two layouts split the blobs over several files; both are applied with the other files given as refs
(``wimapply WIM INDEX TARGET --ref=FILE``):

* a **split WIM** (``wimsplit``: ``x.swm``, ``x2.swm``, ``x3.swm``...) cuts one WIM into parts, say to fit
  FAT32's 4 GiB file limit on a USB stick. Every part carries the same GUID and its number out of the
  total (``Part Number: 2/3``); the first part holds the metadata and is the one applied.
* a **delta WIM** (``x.dwm``, ``wimcapture --delta-from BASE``) holds only the blobs its base lacks: a
  monthly update of a golden image costs what changed. Nothing in a delta names its base, so
  :func:`capture` records the base's file name and GUID as image properties (``PEAGENT/DELTA_BASE_NAME``,
  ``PEAGENT/DELTA_BASE_GUID`` in the WIM's XML); :func:`apply` checks them against the refs before it
  writes anything, and names the base when it is missing.

:func:`check_complete` refuses, before anything is written, a split WIM with a part missing and a
delta whose base is missing (and wimlib itself resolves every blob before it creates a file, so a delta
from elsewhere, without peagent's properties, fails with nothing written; its error is mapped to the
same :class:`~peagent.errors.ImageError`).

**Where an image is applied.** wimlib on Linux has two ways to write it (docs/wim.md measures them):

* **NTFS mode** (``ntfs_volume=True``): the target is the unmounted partition itself, and wimlib writes
  the volume through libntfs-3g. Every piece of Windows metadata is kept: security descriptors, named
  streams, reparse points, short names, object ids, attributes, creation times. It needs the volume
  unmounted (it does not check: peagent.files.ntfs does) and only *creates* names: a top-level name that
  already exists stops it half way, so :func:`apply` checks the volume's root first. This is the mode
  for a Windows system volume.
* **directory mode**: the target is a directory, say an ntfs-3g mount. Only file contents, directories,
  hard links, symlinks and junctions (as Linux symlinks) and times arrive; security descriptors, named
  streams, short names, object ids, attributes and other reparse points are dropped, with wimlib's
  warnings returned in :class:`Applied`. Existing files are overwritten, existing directories merged.
  Fine for data, not for a Windows that must boot.

**Progress.** The tools print ``Extracting file data: 812 MiB of 4329 MiB (18%) done`` (``Archiving file
data`` when capturing, ``Splitting WIM`` when splitting) in units chosen by size (bytes, KiB from 10 kB,
MiB from 10 MB, GiB from 10 GB), so the byte counts given to ``progress(done, total)`` are as fine as
one unit or one percent, whichever is finer; :func:`feed` hands them to a peagent.progress.Progress
for rate and ETA.

The tools are Debian's ``wimtools`` (wimlib 1.13 in bookworm); a PE without them gets an ImageError
naming the package.
"""

from __future__ import annotations

import codecs
import glob
import os
import re
import stat
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from peagent.disk.tools import NOT_INSTALLED, Runner, ToolResult, run_tool
from peagent.errors import FilesystemError, ImageError, PeagentError, UsageError
from peagent.files import ntfs
from peagent.progress import Progress

PACKAGE = "wimtools"  # the Debian package of wimapply, wimcapture, wiminfo, wimsplit, wimdir
REMEDY = "build the PE with PEAGENT_PE_WINDOWS=1 (buildroot/pe-packages-windows.list)"
INFO_TIMEOUT = 600  # seconds: wiminfo and wimdir read only metadata, even of a large image
COMPRESSIONS = ("none", "XPRESS", "LZX", "LZMS")
PROPERTY_BASE_NAME = "PEAGENT/DELTA_BASE_NAME"
PROPERTY_BASE_GUID = "PEAGENT/DELTA_BASE_GUID"

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in all) of the current operation


# --- what wiminfo says -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaBase:
    """The WIM a delta image was captured against, as :func:`capture` recorded it."""

    name: str  # its file name then
    guid: str  # 32 lowercase hex digits


@dataclass(frozen=True)
class WimImage:
    index: int
    name: str
    description: str
    directories: int
    files: int
    total_bytes: int  # of its files' contents, counting each hard link once
    delta_base: DeltaBase | None = None


@dataclass(frozen=True)
class WimInfo:
    path: Path
    guid: str  # 32 lowercase hex digits; shared by the parts of a split WIM
    part: int  # 1-based part number
    parts: int  # 1 unless a split WIM
    image_count: int
    compression: str
    size: int  # bytes, as wiminfo reports it
    images: tuple[WimImage, ...]

    @property
    def split(self) -> bool:
        return self.parts > 1

    def image(self, index: int) -> WimImage:
        for image in self.images:
            if image.index == index:
                return image
        listed = "; ".join(f"{i.index}: {i.name!r}" for i in self.images) or "none"
        raise ImageError(f"{self.path.name} has no image {index}: it holds {self.image_count} "
                         f"({listed}); give one of those indexes")


def _fields(block: str) -> dict[str, str]:
    fields = {}
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith((" ", "-")):
            fields.setdefault(key.strip(), value.strip())
    return fields


def _int(fields: dict[str, str], key: str, where: str) -> int:
    value = fields.get(key, "").split(" ")[0]
    if not value.isdigit():
        raise ImageError(f"{where}: wiminfo gave no number for {key!r} (found {fields.get(key)!r}): "
                         "is this a WIM file, and wimtools the version the PE ships?")
    return int(value)


def parse_info(text: str, path: Path, properties: dict[int, dict[str, str]] | None = None) -> WimInfo:
    """A WimInfo from ``wiminfo WIM``'s output (and the images' XML properties, by image index)."""
    head, _, rest = text.partition("Available Images:")
    fields = _fields(head)
    where = str(path)
    guid = fields.get("GUID", "").lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{32}", guid):
        raise ImageError(f"{where}: wiminfo gave no GUID (found {fields.get('GUID')!r}): is this a WIM file?")
    part, _, parts = fields.get("Part Number", "").partition("/")
    if not (part.isdigit() and parts.isdigit()):
        raise ImageError(f"{where}: wiminfo gave no part number (found {fields.get('Part Number')!r})")
    props = properties or {}
    images = []
    for block in re.split(r"\n(?=Index:)", rest):
        image = _fields(block)
        if "Index" not in image:
            continue
        index = _int(image, "Index", where)
        base = props.get(index, {})
        delta = DeltaBase(base[PROPERTY_BASE_NAME], base[PROPERTY_BASE_GUID].lower()) \
            if PROPERTY_BASE_NAME in base and PROPERTY_BASE_GUID in base else None
        images.append(WimImage(index=index, name=image.get("Name", ""), description=image.get("Description", ""),
                               directories=_int(image, "Directory Count", where),
                               files=_int(image, "File Count", where),
                               total_bytes=_int(image, "Total Bytes", where), delta_base=delta))
    return WimInfo(path=path, guid=guid, part=int(part), parts=int(parts),
                   image_count=_int(fields, "Image Count", where), compression=fields.get("Compression", ""),
                   size=_int(fields, "Size", where), images=tuple(images))


def parse_properties(xml_text: str) -> dict[int, dict[str, str]]:
    """The PEAGENT/* properties of each image in a WIM's XML document (``wiminfo --extract-xml``)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ImageError(f"the WIM's XML document is malformed: {exc}") from exc
    found: dict[int, dict[str, str]] = {}
    for image in root.iter("IMAGE"):
        index = image.get("INDEX", "")
        ours = image.find("PEAGENT")
        if ours is None or not index.isdigit():
            continue
        found[int(index)] = {f"PEAGENT/{child.tag}": (child.text or "").strip() for child in ours}
    return found


def info(wim: Path, runner: Runner = run_tool) -> WimInfo:
    """What ``wiminfo`` says about ``wim``: GUID, part, images (with the delta base peagent recorded)."""
    if not wim.is_file():
        raise ImageError(f"{wim}: no such WIM file")
    result = runner(["wiminfo", str(wim)], timeout=INFO_TIMEOUT)
    _raise_for(result, f"reading {wim}")
    with tempfile.TemporaryDirectory(prefix="peagent-wim-") as scratch:
        out = Path(scratch) / "wim.xml"
        xml = runner(["wiminfo", str(wim), f"--extract-xml={out}"], timeout=INFO_TIMEOUT)
        _raise_for(xml, f"reading the XML document of {wim}")
        # wimlib writes the document in UTF-16LE, as WIM files store it.
        properties = parse_properties(out.read_bytes().decode("utf-16")) if out.exists() else {}
    return parse_info(result.stdout, wim, properties)


def top_level_names(wim: Path, index: int, runner: Runner = run_tool) -> set[str]:
    """The names at the root of image ``index`` (``wimdir``), to check a volume for clashes."""
    result = runner(["wimdir", str(wim), str(index)], timeout=INFO_TIMEOUT)
    _raise_for(result, f"listing image {index} of {wim}")
    return {line[1:].split("/", 1)[0] for line in result.stdout.splitlines() if line.startswith("/") and line != "/"}


# --- completeness: split parts and delta bases -----------------------------------------------------------


def part_path(first: Path, number: int) -> Path:
    """wimsplit's name for part ``number`` of the split WIM whose first part is ``first``."""
    return first if number == 1 else first.with_name(f"{first.stem}{number}{first.suffix}")


def check_complete(wim: WimInfo, index: int, refs: Sequence[WimInfo]) -> WimImage:
    """The image to apply, once it is certain every blob it needs is in ``wim`` or ``refs``: every part
    of each split WIM given, the base of a delta given (by GUID). ImageError naming what is missing."""
    if wim.part != 1:
        raise ImageError(f"{wim.path.name} is part {wim.part} of {wim.parts} of a split WIM: apply its first part "
                         f"(part 1) and give the others as refs")
    image = wim.image(index)
    given = [wim, *refs]
    for guid in dict.fromkeys(w.guid for w in given):
        group = [w for w in given if w.guid == guid]
        total = max(w.parts for w in group)
        missing = sorted(set(range(1, total + 1)) - {w.part for w in group})
        if missing:
            first = next((w.path for w in group if w.part == 1), None)
            named = ", ".join(f"part {n}" + (f" ({part_path(first, n).name})" if first else "") for n in missing)
            whose = f"the split WIM {first.name}" if first else f"a split WIM (GUID {guid})"
            raise ImageError(f"{whose} has {total} parts, but {named} {'is' if len(missing) == 1 else 'are'} "
                             "not among the files given: pass every part as a ref")
    base = image.delta_base
    if base is not None and all(r.guid != base.guid for r in refs):
        namesake = next((r for r in refs if r.path.name == base.name), None)
        if namesake is not None:
            raise ImageError(f"{wim.path.name} (image {index}) is a delta of {base.name} with GUID {base.guid}, but "
                             f"the {namesake.path} given has GUID {namesake.guid}: that is another WIM of the same "
                             "name (recaptured since?), and the delta cannot be applied over it")
        given_names = ", ".join(r.path.name for r in refs) or "none"
        raise ImageError(f"{wim.path.name} (image {index}) is a delta WIM: it holds only what its base {base.name} "
                         f"(GUID {base.guid}) lacks, and that base is missing (refs given: {given_names}); "
                         f"pass {base.name} as a ref")
    return image


# --- progress ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressLine:
    phase: str  # "Extracting file data", "Archiving file data", "Splitting WIM", "Writing"
    done: int  # bytes
    total: int  # bytes
    percent: int


_UNITS = {"bytes": 0, "KiB": 10, "MiB": 20, "GiB": 30}
_PROGRESS = re.compile(r"(?:(?P<phase>[A-Za-z][A-Za-z ]*): )?(?P<done>\d+) (?P<unit>bytes|KiB|MiB|GiB) of "
                       r"(?P<total>\d+) (?P=unit)(?: \(uncompressed\))?(?: written)? \((?P<percent>\d+)%")


def parse_progress(line: str) -> ProgressLine | None:
    """One of wimlib-imagex's progress lines in bytes, or None for any other line.

    The counts are printed shifted down to the unit, so a count is worth the larger of the unit count
    and the percentage of the total; 100% is the whole total.
    """
    m = _PROGRESS.match(line.strip())
    if m is None:
        return None
    shift = _UNITS[m["unit"]]
    total = int(m["total"]) << shift
    percent = int(m["percent"])
    done = total if percent >= 100 else min(max(int(m["done"]) << shift, total * percent // 100), total)
    return ProgressLine(m["phase"] or "Writing", done, total, percent)


def feed(progress: Progress) -> ProgressCallback:
    """A ``progress(done, total)`` callback that drives a peagent.progress.Progress (rate and ETA)."""

    def update(done: int, total: int) -> None:
        progress.total = total
        if done > progress.done:
            progress.add(done - progress.done)

    return update


class _Output:
    """Reads a tool's output piece by piece: progress to the callback, errors and warnings kept."""

    def __init__(self, phases: frozenset[str], progress: ProgressCallback | None) -> None:
        self.phases = phases
        self.progress = progress
        self.done = 0
        self.total = 0
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.tail: deque[str] = deque(maxlen=5)
        self._last: list[str] | None = None

    def __call__(self, piece: str) -> None:
        p = parse_progress(piece)
        if p is not None:
            if p.phase in self.phases:
                self._report(p.done, p.total)
            return
        text = piece.strip()
        if not text:
            return
        self.tail.append(text)
        if text.startswith(("ERROR", "[ERROR]")):
            self._last = self.errors
        elif text.startswith(("WARNING", "[WARNING]")):
            self._last = self.warnings if len(self.warnings) < 100 else None
        elif not piece[:1].isspace():
            self._last = None  # continuation lines are indented
            return
        if self._last is not None:
            self._last.append(re.sub(r"^(\[?(ERROR|WARNING)\]?:? )", "", text))

    def _report(self, done: int, total: int) -> None:
        if total != self.total:  # a new count (wimlib restarts one per pass): take it as it is
            self.total, self.done = total, done
        elif done > self.done:
            self.done = done
        else:
            return
        if self.progress is not None:
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.total and self.done < self.total:
            self._report(self.total, self.total)

    def says(self) -> str:
        said = [e for e in self.errors if not e.startswith("Exiting with error code")] or list(self.tail)
        text = " ".join(said) or "no message"
        return text if len(text) <= 500 else text[:497] + "..."


class Streamer(Protocol):
    def __call__(self, argv: Sequence[str], on_text: Callable[[str], None]) -> ToolResult: ...


def stream_tool(argv: Sequence[str], on_text: Callable[[str], None]) -> ToolResult:
    """Run a command, handing each piece of its output (ended by CR or LF, stderr merged) to ``on_text``
    as it comes: the progress lines end in CR and must be read while the command runs."""
    args = tuple(argv)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        return ToolResult(args, NOT_INSTALLED, "", f"{args[0]}: command not found")
    assert proc.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    with proc:
        try:
            while chunk := proc.stdout.read1(1 << 16):
                *pieces, pending = re.split(r"[\r\n]", pending + decoder.decode(chunk))
                for piece in pieces:
                    on_text(piece)
            on_text(pending + decoder.decode(b"", final=True))
        except BaseException:
            proc.kill()  # a failing progress callback must not leave wimlib writing on
            raise
    return ToolResult(args, proc.returncode)


# --- errors --------------------------------------------------------------------------------------------

# wimlib's error codes (wimlib.h), which wimlib-imagex exits with.
RESOURCE_NOT_FOUND = 55
METADATA_NOT_FOUND = 36
UNUSABLE_WIM = {
    21: "its image metadata is corrupt",
    25: "its part number is invalid",
    26: "it is a corrupt pipable WIM",
    28: "some file data does not match its SHA-1 (corrupt)",
    43: "it is not a WIM file",
    62: "it is part of an invalid split WIM",
    65: "it is truncated",
    67: "it is of an unknown WIM version",
    73: "its XML document is corrupt",
    74: "it is encrypted",
    84: "it is incomplete (a capture did not finish)",
}
TARGET_FAILED = {35, 37, 46, 52, 57, 58, 59, 60, 61, 72, 78, 91}  # link, mkdir, NTFS-3G, rename, set..., write, mknod


def _raise_for(result: ToolResult, doing: str) -> None:
    """ImageError for a failed metadata command (wiminfo, wimdir)."""
    if result.ok:
        return
    if result.returncode == NOT_INSTALLED:
        raise ImageError(f"{doing}: {result.argv[0]} is not installed in this PE (Debian package {PACKAGE}): "
                         f"{REMEDY}")
    reason = UNUSABLE_WIM.get(result.returncode)
    raise ImageError(f"{doing} failed{': ' + reason if reason else ''} ({result.why()})")


def apply_error(returncode: int, said: str, wim: Path, index: int, target: str, refs: Sequence[Path],
                ntfs_volume: bool) -> PeagentError:
    """The typed error for a failed wimapply, from its exit status and what it printed."""
    doing = f"applying image {index} of {wim.name} to {target}"
    if returncode == NOT_INSTALLED:
        return ImageError(f"{doing}: wimapply is not installed in this PE (Debian package {PACKAGE}): "
                          f"{REMEDY}")
    if returncode == RESOURCE_NOT_FOUND:
        given = ", ".join(r.name for r in refs) or "none"
        return ImageError(f"{doing}: file data it needs is in none of the WIMs given (refs: {given}). It is a delta "
                          "WIM whose base is missing, or a split WIM with a part missing: pass the base it was "
                          f"captured against (or every part) as refs. Nothing was written. (wimlib: {said})")
    if returncode == METADATA_NOT_FOUND:
        return ImageError(f"{doing}: {wim.name} holds no image metadata: it is not the first part of a split WIM; "
                          f"apply the first part and give the others as refs (wimlib: {said})")
    if returncode in UNUSABLE_WIM:
        return ImageError(f"{doing}: {UNUSABLE_WIM[returncode]} (wimlib: {said})")
    if returncode in TARGET_FAILED:
        where = "the NTFS volume" if ntfs_volume else "the target directory"
        return FilesystemError(f"{doing}: writing {where} failed, and it is now partly written (wimlib: {said})")
    return ImageError(f"{doing} failed (wimapply status {returncode}; wimlib: {said})")


# --- the operations ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    wim: Path
    index: int
    name: str
    target: str
    ntfs_volume: bool
    data_bytes: int  # file data written, as wimlib counted it (unit-rounded)
    warnings: tuple[str, ...]  # what wimlib could not keep (directory mode drops Windows metadata)


def apply_command(wim: Path, index: int, target: str, refs: Sequence[Path] = (), *,
                  unix_data: bool = False) -> list[str]:
    # --ref takes a glob: escape it, so that a name with [ or * means only itself.
    argv = ["wimapply", str(wim), str(index), target, *(f"--ref={glob.escape(str(r))}" for r in refs)]
    return [*argv, "--unix-data"] if unix_data else argv


def apply(wim: Path, index: int, target: str | Path, *, refs: Sequence[Path] = (), ntfs_volume: bool = False,
          unix_data: bool = False, progress: ProgressCallback | None = None, runner: Runner = run_tool,
          streamer: Streamer = stream_tool) -> Applied:
    """Apply image ``index`` of ``wim`` (with the split parts or delta bases ``refs``) to ``target``.

    With ``ntfs_volume``, ``target`` is the unmounted partition of an NTFS volume whose root holds none
    of the image's top-level names (NTFS mode: all Windows metadata kept); otherwise an existing
    directory (directory mode: Windows metadata dropped, see the module's doc). Everything that can be
    checked is checked before wimlib runs: the WIMs, every part and base, the index, the target.
    """
    target = str(target)
    for ref in refs:
        if not ref.is_file():
            raise ImageError(f"{ref}: no such WIM file (given as a ref of {wim.name})")
    image = check_complete(info(wim, runner), index, [info(r, runner) for r in refs])
    if ntfs_volume:
        ntfs.check_unused(target)
        ntfs.probe(target, runner)
        ntfs.check_fresh(target, top_level_names(wim, index, runner), runner)
    elif not Path(target).is_dir():
        raise FilesystemError(f"{target} is not a directory: a WIM image is applied into a mounted filesystem, or "
                              "onto an unmounted NTFS partition with ntfs_volume")
    out = _Output(frozenset({"Extracting file data"}), progress)
    result = streamer(apply_command(wim, index, target, refs, unix_data=unix_data), out)
    if not result.ok:
        raise apply_error(result.returncode, out.says(), wim, index, target, refs, ntfs_volume)
    out.finish()
    return Applied(wim, index, image.name, target, ntfs_volume, out.total, tuple(out.warnings))


def capture_command(source: str, wim: Path, name: str, *, description: str | None = None,
                    delta_from: WimInfo | None = None, compress: str | None = None,
                    unix_data: bool = False) -> list[str]:
    argv = ["wimcapture", source, str(wim), name]
    if description is not None:
        argv.append(description)
    if compress is not None:
        argv.append(f"--compress={compress}")
    if unix_data:
        argv.append("--unix-data")
    if delta_from is not None:
        argv += [f"--delta-from={delta_from.path}",
                 f"--image-property={PROPERTY_BASE_NAME}={delta_from.path.name}",
                 f"--image-property={PROPERTY_BASE_GUID}={delta_from.guid}"]
    return argv


def capture(source: str | Path, wim: Path, name: str, *, description: str | None = None,
            delta_from: Path | None = None, compress: str | None = None, unix_data: bool = False,
            progress: ProgressCallback | None = None, runner: Runner = run_tool,
            streamer: Streamer = stream_tool) -> WimInfo:
    """Capture ``source`` as the single image ``name`` of the new WIM ``wim``; its info afterwards.

    ``source`` is a directory, or the unmounted partition of an NTFS volume (wimlib's NTFS capture mode:
    every piece of Windows metadata kept, as when applying). With ``delta_from``, only the file data that
    WIM lacks is stored (a .dwm), and the base's name and GUID are recorded in the new image so that
    applying it without its base names the base. ``unix_data`` keeps Linux owners, modes and xattrs.
    """
    if wim.exists():
        raise UsageError(f"{wim} exists: a capture writes a new WIM (a delta based on the old one would break if "
                         "it were overwritten); remove it or choose another name")
    if compress is not None and compress.casefold() not in {c.casefold() for c in COMPRESSIONS}:
        raise UsageError(f"compression: expected one of {', '.join(COMPRESSIONS)}, found {compress!r}")
    src = str(source)
    if not os.path.exists(src):
        raise ImageError(f"{src}: no such directory or device to capture")
    if stat.S_ISBLK(os.stat(src).st_mode):
        ntfs.check_unused(src)  # libntfs-3g reading a mounted volume sees it mid-change
    elif not os.path.isdir(src):
        raise ImageError(f"{src} is neither a directory nor a block device: nothing to capture")
    base = None
    if delta_from is not None:
        base = info(delta_from, runner)
        if base.split:
            raise ImageError(f"{delta_from} is part of a split WIM: a delta is captured against a whole WIM "
                             "(join the parts with wimjoin first)")
    out = _Output(frozenset({"Archiving file data", "Writing"}), progress)
    argv = capture_command(src, wim, name, description=description, delta_from=base, compress=compress,
                           unix_data=unix_data)
    result = streamer(argv, out)
    if not result.ok:
        wim.unlink(missing_ok=True)  # an unfinished WIM must not pass for an image
        if result.returncode == NOT_INSTALLED:
            raise ImageError(f"capturing {src}: wimcapture is not installed (Debian package {PACKAGE})")
        raise ImageError(f"capturing {src} into {wim} failed (wimcapture status {result.returncode}; wimlib: "
                         f"{out.says()})")
    out.finish()
    return info(wim, runner)


def split(wim: Path, first_part: Path, part_mib: int, *, progress: ProgressCallback | None = None,
          runner: Runner = run_tool, streamer: Streamer = stream_tool) -> list[Path]:
    """Split ``wim`` into parts of at most ``part_mib`` MiB (a file larger than that gets a part of its
    own), the first named ``first_part`` (``x.swm``: then ``x2.swm``, ``x3.swm``...); their paths."""
    if part_mib < 1:
        raise UsageError(f"part size: expected at least 1 MiB, found {part_mib}")
    whole = info(wim, runner)
    if whole.split:
        raise ImageError(f"{wim} is already part {whole.part} of a split WIM")
    out = _Output(frozenset({"Splitting WIM"}), progress)
    result = streamer(["wimsplit", str(wim), str(first_part), str(part_mib)], out)
    if not result.ok:
        if result.returncode == NOT_INSTALLED:
            raise ImageError(f"splitting {wim}: wimsplit is not installed (Debian package {PACKAGE})")
        raise ImageError(f"splitting {wim} failed (wimsplit status {result.returncode}; wimlib: {out.says()})")
    out.finish()
    first = info(first_part, runner)
    return [part_path(first_part, n) for n in range(1, first.parts + 1)]
