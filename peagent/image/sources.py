"""What an image is built from: a file, a disk, a compressed or a virtual-disk file, as one raw stream.

The builder reads its source once, front to back (peagent.image.build). :func:`open_source`
turns whatever the user names into such a stream of the raw image's bytes, with the raw size
when it is known (for progress and ETA):

* a raw file (sparse or not) or ``-`` for standard input;
* a block device: a golden machine's disk, captured by the host or by the PE itself. It is opened
  read-only and exclusively (``O_EXCL``), which the kernel refuses while the disk or one of its
  partitions is mounted or held (LVM, MD, swap), and which keeps anyone from mounting it during the
  capture. A disk in use is refused: a filesystem that changes while it is read is captured torn.
  ``allow_mounted`` overrides that (for a disk mounted read-only, or a capture one accepts as
  crash-consistent);
* a compressed raw file: gzip, xz, zstd or bzip2, decompressed on the fly by
  peagent.image.compression: several concatenated members or streams (pigz, ``xz -T``, pbzip2,
  ``zstd -T``) are one image, and a file cut short is an error, never a shorter image;
* a virtual disk (qcow2, and VMDK, VDI, VHD, VHDX): converted by ``qemu-img``, which the build
  host has (the PE has not).

Formats are told by their magic bytes, never by the file name's suffix. A file that starts like a
format that cannot be read here (lz4, zip, WIM, ...) is refused, naming it; a file with no magic
is a raw image, since a disk image may start with anything.

Virtual disks and the trade-off made for them: ``qemu-img`` cannot write to a pipe (its raw
output must be a regular file: it seeks and resizes), so it converts into a sparse temporary file
in ``work_dir`` (next to the output, which the caller chooses), and the builder then reads that
file. That costs free space for the image's allocated data and one extra pass over it, where a
true stream would cost none; the alternatives (an NBD client speaking to ``qemu-nbd``, or reading
qcow2 clusters ourselves) would stream, at the price of much more code, for a build-host-only
path. The temporary file is unlinked as soon as it is open, so nothing is left behind, whatever
happens. (The conversion itself reports no progress; the build after it does.)

A directory tree (:class:`TreeSource`, a file image) is a source too: :func:`open_tree` runs
peagent.files' tar writer in a thread, into a pipe the builder reads from, so the tar stream is
made as it is consumed and never lands on disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from peagent.errors import DeviceError, ImageError, PeagentError, UsageError
from peagent.image.compression import identify, open_decompressed
from peagent.image.readers import Counter, Peekable, Readable, read_exactly

log = logging.getLogger(__name__)

SNIFF = 512  # enough bytes for every magic below (VDI's is at offset 64)

COMPRESSED = ("gzip", "xz", "zstd", "bzip2")  # told and decompressed by peagent.image.compression
# Formats qemu-img converts, by magic (offset, bytes).
VIRTUAL = {  # qemu-img's format names
    "qcow2": (0, b"QFI\xfb"),
    "vmdk": (0, b"KDMV"),
    "vdi": (64, b"\x7f\x10\xda\xbe"),
    "vhdx": (0, b"vhdxfile"),
    "vpc": (0, b"conectix"),  # a dynamic VHD; a fixed VHD is raw data with a footer, read as raw
}
# Formats recognised only to refuse them by name (a raw image never starts like these by chance).
REFUSED = {
    "lz4": (0, b"\x04\x22\x4d\x18"),
    "lzop": (0, b"\x89LZO\x00\r\n\x1a\n"),
    "compress (.Z)": (0, b"\x1f\x9d"),
    "lzip": (0, b"LZIP"),
    "zip": (0, b"PK\x03\x04"),
    "7-zip": (0, b"7z\xbc\xaf\x27\x1c"),
    "WIM (a file image: see the files kind)": (0, b"MSWIM\x00\x00\x00"),
    "QED": (0, b"QEMU\x00"),
    "a VMDK descriptor (give its extent file, or convert it)": (0, b"# Disk DescriptorFile"),
}
SUPPORTED = "raw (a file, a block device, or - for stdin), gzip, xz, zstd, bzip2, qcow2, vmdk, vdi, vhd, vhdx"


def sniff(head: bytes) -> str:
    """The format whose magic ``head`` starts with: one of COMPRESSED, a key of VIRTUAL or REFUSED, or "raw"."""
    compressed = identify(head)
    if compressed in COMPRESSED:
        return compressed
    for name, (offset, magic) in VIRTUAL.items():
        if head[offset:offset + len(magic)] == magic:
            return name
    for name, (offset, magic) in REFUSED.items():
        if head[offset:offset + len(magic)] == magic:
            return name
    return "raw"


@dataclass
class Source:
    """The raw image's bytes as a stream, and what is known about them."""

    name: str  # as the user gave it, for the manifest's "source"
    format: str  # raw, block device, gzip, xz, zstd, bzip2, qcow2, ...
    stream: Readable  # the raw bytes, front to back
    size: int | None  # raw bytes, when known
    input_size: int | None = None  # bytes of the file read, when compressed (the progress measure then)
    _counted: Counter | None = field(default=None, repr=False)

    @property
    def progress_total(self) -> int | None:
        """What progress counts to: raw bytes when their number is known, else compressed bytes read."""
        return self.size if self.size is not None or self._counted is None else self.input_size

    def track(self, progress: Callable[[int], None]) -> Callable[[int], None]:
        """Wrap a progress callback fed raw byte counts so that it counts toward :attr:`progress_total`.

        A compressed file's raw size is not known before it is all read (gzip keeps it modulo 4
        GiB, bzip2 not at all), but how much of the file was read is, and it gives an ETA as good.
        """
        counted = self._counted
        if self.size is not None or counted is None:
            return progress
        last = 0

        def on_raw(n: int) -> None:
            nonlocal last
            now = counted.count
            progress(now - last)
            last = now

        return on_raw


@contextlib.contextmanager
def open_source(name: str, *, allow_mounted: bool = False, work_dir: Path | None = None,
                qemu_img: str = "qemu-img") -> Iterator[Source]:
    """Open the build source ``name`` (a path, a block device, or ``-``) as a raw stream.

    ``work_dir`` holds the temporary raw file of a virtual disk (default: the system's temporary
    directory); pass the output directory's filesystem when /tmp is small or in RAM.
    """
    with contextlib.ExitStack() as stack:
        if name == "-":
            inner: Readable = Peekable(sys.stdin.buffer)
            head = inner.peek(SNIFF)  # type: ignore[attr-defined]
            size, kind = None, "raw"
        else:
            raw, size, kind = _open_path(name, allow_mounted)
            stack.callback(raw.close)
            head = read_exactly(raw, SNIFF)
            raw.seek(0)
            inner = raw
        found = sniff(head)
        if found in REFUSED:
            raise ImageError(f"{name} is {found}, which cannot be built from; supported: {SUPPORTED}")
        if found in VIRTUAL:
            if name == "-":
                raise ImageError(f"standard input is {found}, which qemu-img reads only from a file; give the file")
            stack.close()
            yield from _virtual(name, found, work_dir, qemu_img)
            return
        if found in COMPRESSED:
            counted = Counter(inner)
            stream = Peekable(open_decompressed(counted, found))
            inside = sniff(stream.peek(SNIFF))
            if inside != "raw":
                raise ImageError(f"{name} is {found} holding {inside}: decompress it first, then build from the "
                                 f"{inside} file")
            yield Source(name, found, stream, None, size, counted)
            return
        yield Source(name, kind, inner, size)


def _open_path(name: str, allow_mounted: bool) -> tuple[BinaryIO, int, str]:
    try:
        st = os.stat(name)
    except OSError as exc:
        raise UsageError(f"cannot read the source {name}: {exc.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        fd = _open_device(name, allow_mounted)
        f = os.fdopen(fd, "rb", buffering=0)
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):  # a hint only
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return f, size, "block device"
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"the source {name} is neither a file nor a block device")
    try:
        f = open(name, "rb", buffering=0)  # noqa: SIM115 (closed by the caller's ExitStack)
    except OSError as exc:
        raise UsageError(f"cannot read the source {name}: {exc.strerror}") from None
    return f, st.st_size, "raw"


def _open_device(path: str, allow_mounted: bool) -> int:
    """Open a block device read-only; exclusively unless ``allow_mounted``, refusing it while in use."""
    try:
        return os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise DeviceError(f"cannot open {path}: {exc.strerror}") from None
    users = device_users(path)
    what = "; ".join(users) or "held by the kernel (mounted, swap, LVM, MD or dm-crypt)"
    if not allow_mounted:
        raise DeviceError(f"{path} is in use ({what}): a disk that changes while it is read is captured torn. "
                          "Capture it from the PE or unmount it; or, for a read-only mount or a "
                          "crash-consistent capture, allow it (--allow-mounted)")
    log.warning("capturing %s while in use (%s): the image is only as consistent as the disk is still", path, what)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DeviceError(f"cannot open {path}: {exc.strerror}") from None


def device_users(path: str, mountinfo: str | None = None, sys_block: Path = Path("/sys/class/block")) -> list[str]:
    """Why a block device is busy, as far as the kernel tells: its own and its partitions' mounts and holders."""
    name = os.path.basename(os.path.realpath(path))
    names = [name]
    sys_dir = sys_block / name
    if sys_dir.is_dir():
        names += sorted(e.name for e in sys_dir.iterdir() if (e / "partition").is_file())
    numbers: dict[str, str] = {}
    for n in names:
        with contextlib.suppress(OSError):
            numbers[(sys_block / n / "dev").read_text().strip()] = n
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
    users = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] in numbers:
            users.append(f"/dev/{numbers[fields[2]]} is mounted on {fields[4]}")
    for n in names:
        holders = sys_block / n / "holders"
        if holders.is_dir():
            users += [f"/dev/{n} is held by {h.name}" for h in sorted(holders.iterdir())]
    return users


def _virtual(name: str, fmt: str, work_dir: Path | None, qemu_img: str) -> Iterator[Source]:
    """Convert a virtual disk into a sparse temporary raw file (unlinked once open) and stream that."""
    if shutil.which(qemu_img) is None:
        raise ImageError(f"{name} is {fmt}, which needs qemu-img (Debian: qemu-utils) to convert; "
                         "install it, or convert the image to raw first")
    directory = work_dir or Path(tempfile.gettempdir())
    fd, tmp = tempfile.mkstemp(prefix=".peagent-raw-", suffix=".img", dir=directory)
    os.close(fd)
    try:
        # -n would keep our empty file, but without it qemu-img makes the file itself, sparse,
        # and skips zero clusters: the usual way, and the fastest.
        result = subprocess.run([qemu_img, "convert", "-q", "-f", fmt, "-O", "raw", name, tmp],
                                capture_output=True, text=True)
        if result.returncode:
            raise ImageError(f"qemu-img could not convert {name} ({fmt}) to raw in {directory}: "
                             f"{result.stderr.strip() or f'exit status {result.returncode}'}")
        f = open(tmp, "rb", buffering=0)  # noqa: SIM115 (closed below)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with f:
        size = os.fstat(f.fileno()).st_size
        yield Source(name, fmt, f, size)


@dataclass(frozen=True)
class TreeSource:
    """A directory tree to build a file image from: the whole tree, or with ``base_tree`` the layer that turns
    that tree into this one (peagent.files.layers); ``capture`` leaves out what a captured Linux root must
    not carry (peagent.files.tree.CAPTURE_LINUX)."""

    root: str
    base_tree: str | None = None
    capture: bool = False


class _TreeStream:
    """The reading end of the pipe a tree's tar stream comes through.

    Its end is reported only once the writer has finished without error: a tree that could not be read
    to its end fails the build, never ends the image early.
    """

    def __init__(self, fd: int) -> None:
        self.pipe = os.fdopen(fd, "rb", buffering=0)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        data = self.pipe.read(size)
        if data or self.thread is None:
            return data
        self.thread.join()
        if isinstance(self.error, PeagentError):
            raise self.error
        if isinstance(self.error, OSError):
            raise DeviceError(f"reading the tree failed: {self.error}") from self.error
        if self.error is not None:
            raise self.error
        return b""


@contextlib.contextmanager
def open_tree(tree: TreeSource) -> Iterator[Source]:
    """The pax tar stream of ``tree`` (or of its layer), written by a thread while the caller reads it."""
    from peagent.files.layers import write_layer
    from peagent.files.tree import CAPTURE_LINUX, NO_EXCLUSIONS, Tree, write_tree

    exclusions = CAPTURE_LINUX if tree.capture else NO_EXCLUSIONS
    for root in (tree.root, tree.base_tree):
        if root is not None:
            Tree(Path(root))  # a missing or unreadable directory is refused here, not from the thread
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # a larger pipe: fewer switches between the two threads
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    stream = _TreeStream(read_fd)

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=1 << 16) as out:
                if tree.base_tree is None:
                    write_tree(Path(tree.root), out, exclusions=exclusions)
                else:
                    write_layer(Path(tree.base_tree), Path(tree.root), out, exclusions=exclusions)
        except BaseException as exc:  # handed to the reader, which raises it at the stream's end
            stream.error = exc

    stream.thread = threading.Thread(target=produce, name="peagent-tree", daemon=True)
    stream.thread.start()
    try:
        yield Source(tree.root, "layer" if tree.base_tree else "tree", stream, None)
    finally:
        stream.pipe.close()  # a writer still at work gets EPIPE and stops
        stream.thread.join()
