"""The journal of a write: which frames are done, so that a rerun continues instead of starting over.

A small text file, appended to as the write proceeds::

    peagent-write-journal 1
    image <sha256 of the manifest>
    target <identity: path, size, serial; or path and inode>
    boot <the kernel's boot id>
    W 0-15              frames 0 to 15 were written (and verified before)
    W 16-31
    S                   everything above is durable: fdatasync returned
    W 32-47

What a rerun may trust depends on what happened in between, and the boot id tells which:

* **The process died** (killed, crashed; same boot): every ``W`` line counts. What ``pwrite``
  returned is in the page cache or on the device, and a later read sees it.
* **The machine went down** (power loss, reset; another boot): only ``W`` lines before the last
  ``S`` count: the rest may have been lost with the page cache or the disk's volatile cache. In
  the PE the journal lives in RAM (/run), so it is lost too; the in-place check
  (peagent.image.inplace) then finds what reached the disk.

A journal for another image or another target is ignored (and replaced), as is a torn last line.
Lines are appended after the data they record was written, never before, so a journal never
claims more than was done. The file is removed once the write is complete and verified.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = "peagent-write-journal 1"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def replay(text: str, image: str, target: str, boot: str) -> tuple[set[int], set[int]]:
    """The frames a journal's text says are done, for this image, target and boot (pure): those known
    durable, and those written but maybe not durable (empty unless in the same boot)."""
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # a torn last line
    header = [MAGIC, f"image {image}", f"target {target}"]
    if lines[:3] != header or len(lines) < 4 or not lines[3].startswith("boot "):
        return set(), set()
    same_boot = lines[3] == f"boot {boot}"
    done: set[int] = set()
    pending: set[int] = set()
    for line in lines[4:]:
        if line == "S":
            done |= pending
            pending = set()
        elif line.startswith("W "):
            try:
                first, _, last = line[2:].partition("-")
                pending.update(range(int(first), int(last or first) + 1))
            except ValueError:
                break
    return done, pending - done if same_boot else set()


class Journal:
    """An open journal; ``done`` holds the frames a rerun may skip."""

    def __init__(self, path: Path | None, image: str, target: str, frame_count: int) -> None:
        self.path = path
        self.done: set[int] = set()
        self._file = None
        if path is None:
            return
        boot = boot_id()
        durable: set[int] = set()
        written: set[int] = set()
        with contextlib.suppress(FileNotFoundError):
            durable, written = replay(path.read_text(errors="replace"), image, target, boot)
        durable = {j for j in durable if j < frame_count}
        written = {j for j in written if j < frame_count}
        self.done = durable | written
        if self.done:
            log.info("journal %s: %d frames done by an earlier run", path, len(self.done))
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name(path.name + ".new")
        with fresh.open("w") as f:  # rewritten compactly, for this boot, claiming no more than before
            f.write(f"{MAGIC}\nimage {image}\ntarget {target}\nboot {boot}\n")
            f.writelines(f"W {first}-{last}\n" for first, last in runs(sorted(durable)))
            f.write("S\n")
            f.writelines(f"W {first}-{last}\n" for first, last in runs(sorted(written)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(fresh, path)
        self._file = path.open("a", buffering=1)  # line buffered: each line is one write()

    def written(self, first: int, last: int) -> None:
        if self._file is not None:
            self._file.write(f"W {first}-{last}\n")

    def synced(self) -> None:
        if self._file is not None:
            self._file.write("S\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def runs(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frame numbers as (first, last) runs."""
    out: list[tuple[int, int]] = []
    for j in frames:
        if out and out[-1][1] == j - 1:
            out[-1] = (out[-1][0], j)
        else:
            out.append((j, j))
    return out
