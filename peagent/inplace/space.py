"""Is there room for the new OS once the old one is gone? Answered before anything is deleted.

The new OS needs the bytes of its images' tar streams (headers and padding included, which
over-counts a little and makes up for the last block of each file) times ``1 + MARGIN`` plus
the task's headroom (``target.inplace.headroom``, 256 MiB by default). It has the filesystem's
free space (``statvfs``: what an unprivileged user may use, so the root reserve stays untouched)
plus what deleting the old OS frees: the blocks of every file to be deleted, a file with several
links counted once and only when all its links go (a hard link into kept data frees nothing).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from peagent.errors import NoSpaceError

MARGIN = 0.05


@dataclass(frozen=True)
class Room:
    free: int  # bytes free now
    freed: int  # bytes the deletion frees
    need: int  # bytes the new OS needs, margin and headroom included
    headroom: int

    @property
    def fits(self) -> bool:
        return self.free + self.freed >= self.need

    def render(self) -> str:
        mib = 1 << 20
        return (f"room: {self.free // mib} MiB free + {self.freed // mib} MiB freed by the deletion; the new OS "
                f"needs {self.need // mib} MiB (with {MARGIN:.0%} margin and {self.headroom // mib} MiB headroom)")


def need_for(image_bytes: int, headroom: int) -> int:
    return int(image_bytes * (1 + MARGIN)) + headroom


def check_room(room: Room, where: str) -> None:
    if not room.fits:
        raise NoSpaceError(f"{where}: the new OS does not fit, so nothing was deleted. {room.render()}; "
                           f"short by {(room.need - room.free - room.freed + (1 << 20) - 1) >> 20} MiB. Free space "
                           "on the partition (or keep less), or re-image the whole disk")


def measure(root: Path, delete: Iterable[str], image_bytes: int, headroom: int) -> Room:
    """The room on the filesystem mounted at ``root`` if ``delete`` (paths relative to it) went."""
    st = os.statvfs(root)
    links: dict[tuple[int, int], list[int]] = {}  # inode -> [links seen, links it has, blocks]
    freed = 0
    for rel in delete:
        for entry in _walk(root / rel):
            if entry.st_nlink > 1 and not stat.S_ISDIR(entry.st_mode):
                seen = links.setdefault((entry.st_dev, entry.st_ino), [0, entry.st_nlink, entry.st_blocks])
                seen[0] += 1
                continue
            freed += entry.st_blocks * 512
    freed += sum(blocks * 512 for seen, nlink, blocks in links.values() if seen >= nlink)
    return Room(free=st.f_bavail * st.f_frsize, freed=freed, need=need_for(image_bytes, headroom), headroom=headroom)


def _walk(top: Path) -> Iterable[os.stat_result]:
    """lstat of ``top`` and of everything under it, symlinks not followed."""
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    yield st
    if not stat.S_ISDIR(st.st_mode):
        return
    pending = [os.fspath(top)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                est = entry.stat(follow_symlinks=False)
                yield est
                if stat.S_ISDIR(est.st_mode):
                    pending.append(entry.path)
