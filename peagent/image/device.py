"""The target of a write: a block device or a file, with large aligned writes and cheap zeros.

**Opening.** A block device is opened with O_EXCL, which the kernel refuses while it is mounted,
swapped on or held (LVM, MD): a disk in use is never written. A file is created when missing,
extended (sparse) to the image's size, and locked (``flock``) against a second writer. An image
larger than a block device is refused before anything is written.

**Writes.** Data goes through a second descriptor opened with O_DIRECT where that works: no page
cache to fill the PE's RAM, and what a write returned is on the device (the device's own volatile
cache is flushed by the periodic ``fdatasync``). O_DIRECT needs aligned buffers (the writer uses
mmap-allocated ones), aligned offsets and lengths: the image's last, shorter block goes through the
buffered descriptor. When the open or the first direct write fails with EINVAL (a filesystem
without O_DIRECT), writes fall back to the buffered descriptor for good.

**Zeros** (the image's holes), cheapest first (:func:`hole_method`):

* ``skip``: the target is known to read as zeros there (a new sparse file, the part of a file
  past its old end, a disk the caller has just erased with a zeroing erase);
* ``punch``: a file: ``fallocate(PUNCH_HOLE)`` gives the blocks back, and they read as zeros;
* ``discard``: a block device that guarantees zeros after discard (NVMe DLFEAT, ATA "deterministic
  read zeros after TRIM", a loop device: peagent.disk.capabilities): BLKDISCARD over the part
  aligned to the discard granularity, BLKZEROOUT for the edges;
* ``zeroout``: any other block device: BLKZEROOUT (offloaded when the device can, else the
  kernel writes zero pages).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat
import struct
from pathlib import Path

from peagent.disk.capabilities import probe
from peagent.disk.erase import zero_range
from peagent.disk.erase.wipe import BLKDISCARD
from peagent.errors import DeviceError, ImageError

ALIGN = 4096  # O_DIRECT offsets and lengths: the largest logical block size in use
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_ZEROS = bytes(1 << 20)


def hole_method(*, known_zero: bool, is_file: bool, discard_zeroes: bool | None) -> str:
    """How to make a hole read as zeros: skip, punch, discard or zeroout (see the module's docstring)."""
    if known_zero:
        return "skip"
    if is_file:
        return "punch"
    if discard_zeroes:
        return "discard"
    return "zeroout"


def discard_zeroes_of(device: str) -> tuple[bool | None, int]:
    """Whether discarded blocks of ``device`` read as zeros, and its discard granularity."""
    sys_dir = Path("/sys/class/block") / os.path.basename(os.path.realpath(device))
    disk_dir, node = sys_dir, device
    if (sys_dir / "partition").exists():  # a partition: the disk has the queue and answers identify
        disk_dir = sys_dir.resolve().parent
        node = "/dev/" + disk_dir.name
    try:
        caps = probe(node, str(disk_dir))
    except (OSError, ValueError):
        return None, 0
    return caps.discard_zeroes, caps.discard_granularity


def _libc_fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Target:
    """An open target; see the module's docstring. Use as a context manager."""

    def __init__(self, path: str, size: int, *, direct: bool = True, zeroed: bool = False,
                 discard_zeroes: bool | None = None) -> None:
        """Open ``path`` for an image of ``size`` bytes. ``zeroed``: the caller knows a block device
        reads as zeros (just erased); ``discard_zeroes``: None probes the device."""
        self.path = path
        self.image_size = size
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = 0
        except OSError as exc:
            raise DeviceError(f"cannot stat {path}: {exc.strerror}") from None
        self.is_block = stat.S_ISBLK(mode)
        if mode and not (self.is_block or stat.S_ISREG(mode)):
            raise DeviceError(f"{path} is neither a block device nor a regular file")
        self.fd = self._open_claim(mode)
        self.wfd = self.fd
        self.discard_granularity = 0
        try:
            if self.is_block:
                self.capacity = os.lseek(self.fd, 0, os.SEEK_END)
                if size > self.capacity:
                    raise ImageError(f"the image ({size} bytes) is larger than {path} ({self.capacity} bytes)")
                self.zero_from = 0 if zeroed else self.capacity
                if discard_zeroes is None and not zeroed:
                    discard_zeroes, self.discard_granularity = discard_zeroes_of(path)
                self.method = hole_method(known_zero=zeroed, is_file=False, discard_zeroes=discard_zeroes)
            else:
                old = os.fstat(self.fd).st_size
                self.zero_from = 0 if old == 0 or not _has_data(self.fd) else old
                if old < size:
                    os.ftruncate(self.fd, size)  # sparse: the new part reads as zeros
                self.capacity = max(old, size)
                self.method = hole_method(known_zero=self.zero_from == 0, is_file=True, discard_zeroes=None)
            self.direct = False
            if direct:
                self._open_direct()
        except BaseException:
            self.close()
            raise
        self.identity = self._identity()

    def _open_claim(self, mode: int) -> int:
        flags = os.O_RDWR | os.O_CLOEXEC
        flags |= os.O_EXCL if self.is_block else os.O_CREAT
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            hint = " (mounted, or held by LVM/MD/swap?)" if exc.errno == errno.EBUSY else ""
            raise DeviceError(f"cannot open {self.path} for writing: {exc.strerror}{hint}") from None
        if not self.is_block:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise DeviceError(f"{self.path} is being written by another process (it holds its lock)") from None
        return fd

    def _open_direct(self) -> None:
        try:
            self.wfd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_DIRECT)
            self.direct = True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise DeviceError(f"cannot open {self.path} for direct I/O: {exc.strerror}") from None

    def _no_direct(self) -> None:
        if self.wfd != self.fd:
            os.close(self.wfd)
        self.wfd = self.fd
        self.direct = False

    def _identity(self) -> str:
        st = os.fstat(self.fd)
        real = os.path.realpath(self.path)
        if not self.is_block:
            return f"file {real} inode {st.st_dev}:{st.st_ino}"
        serial = ""
        sys_dir = Path("/sys/class/block") / os.path.basename(real)
        for where in (sys_dir, sys_dir.resolve().parent):
            for name in ("device/wwid", "device/serial", "wwid", "serial"):
                with contextlib.suppress(OSError):
                    serial = serial or (where / name).read_text().strip()
        return f"block {real} {self.capacity} bytes {serial or 'no-serial'}"

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in {getattr(self, "wfd", -1), getattr(self, "fd", -1)} - {-1}:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fd = self.wfd = -1

    def write(self, offset: int, data: memoryview | bytes) -> None:
        """Write ``data`` at ``offset``; with O_DIRECT, ``data`` must be page-aligned memory. A last
        piece shorter than ALIGN (the image's end) goes through the page cache."""
        view = memoryview(data)
        if self.direct and offset % ALIGN == 0 and len(view) >= ALIGN:
            head = len(view) // ALIGN * ALIGN
            try:
                self._pwrite_all(self.wfd, view[:head], offset)
                view, offset = view[head:], offset + head
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise DeviceError(f"writing {self.path} at byte {offset}: {exc.strerror}") from None
                self._no_direct()  # the filesystem refuses direct I/O after all: buffered from now on
        if view:
            try:
                self._pwrite_all(self.fd, view, offset)
            except OSError as exc:
                raise DeviceError(f"writing {self.path} at byte {offset}: {exc.strerror}") from None

    @staticmethod
    def _pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            if n <= 0:
                raise OSError(errno.ENOSPC, "the device is full")
            view, offset = view[n:], offset + n

    def read(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            raise DeviceError(f"reading {self.path} at byte {offset}: {exc.strerror}") from None

    def zero(self, offset: int, length: int) -> str:
        """Make [offset, offset + length) read as zeros; returns how it was done."""
        if offset >= self.zero_from or length <= 0:
            return "skip"
        try:
            if self.method == "punch":
                try:
                    _libc_fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
                    return "punch"
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
                    self._write_zeros(offset, length)
                    return "write"
            if self.method == "discard" and self._discard(offset, length):
                return "discard"
            return zero_range(self.fd, offset, length, device=self.path).lower()
        except OSError as exc:
            raise DeviceError(f"zeroing {self.path} at byte {offset}: {exc.strerror}") from None

    def _discard(self, offset: int, length: int) -> bool:
        unit = max(self.discard_granularity, ALIGN)
        start, end = -(-offset // unit) * unit, (offset + length) // unit * unit
        if end <= start:
            return False
        try:
            fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("QQ", start, end - start))
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                self.method = "zeroout"
                return False
            raise
        for a, b in ((offset, start), (end, offset + length)):  # the unaligned edges
            if b > a:
                zero_range(self.fd, a, b - a, device=self.path)
        return True

    def _write_zeros(self, offset: int, length: int) -> None:
        end = offset + length
        while offset < end:
            n = min(len(_ZEROS), end - offset)
            self._pwrite_all(self.fd, _ZEROS[:n], offset)
            offset += n

    def sync(self) -> None:
        try:
            for fd in {self.fd, self.wfd}:
                os.fdatasync(fd)
        except OSError as exc:
            raise DeviceError(f"flushing {self.path}: {exc.strerror}") from None

    def finish(self) -> None:
        """A file ends where the image ends; then everything is flushed to the device."""
        if not self.is_block and os.fstat(self.fd).st_size != self.image_size:
            os.ftruncate(self.fd, self.image_size)
        self.sync()


def _has_data(fd: int) -> bool:
    """Whether a file holds any data extent (a file of holes only reads as zeros)."""
    try:
        os.lseek(fd, 0, os.SEEK_DATA)
        return True
    except OSError as exc:
        return exc.errno != errno.ENXIO
