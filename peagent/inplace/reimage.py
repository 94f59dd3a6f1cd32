"""The destructive half of an in-place re-image: mark, delete the old OS, apply the new one, fix fstab.

Called with the partition :func:`peagent.inplace.detect.choose` picked and the image stack
already loaded and checked, so everything that can refuse has refused. Then, on the partition
mounted read-write:

1. the deletion is decided (peagent.inplace.policy) and the room checked
   (peagent.inplace.space); a shortfall stops here, nothing deleted;
2. the marker (``.peagent-inplace.json``: deployment id, the old OS, its fstab) is written and
   synced before the first deletion, so a rerun of the same deployment after a power cut finds
   it and resumes (deleting what is left, applying again) instead of refusing a half-deleted OS;
3. the old OS is deleted, path by path, through descriptors (never following a symlink, so an
   old OS's ``lib -> /usr/lib`` takes nothing else with it);
4. the images are applied with the kept paths protected (the user's files win);
5. ``etc/fstab`` is merged (peagent.inplace.fstab) and written atomically; the marker goes last.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peagent.disk.mount import mounted
from peagent.errors import DeviceError, InplaceError
from peagent.files.confined import Blocked, Confined
from peagent.files.stack import Applied, apply_loaded
from peagent.image.load import LoadedImage
from peagent.image.ranges import FetchOptions
from peagent.inplace.detect import MARKER, FoundOS, Surveyed, read_small
from peagent.inplace.fstab import merge
from peagent.inplace.policy import Deletion, plan_deletion
from peagent.inplace.space import Room, check_room, measure
from peagent.inplace.spec import InplaceSpec

log = logging.getLogger(__name__)


@dataclass
class InplaceReport:
    partition: str
    os: FoundOS
    deletion: Deletion
    room: Room | None = None  # None when resumed (it was checked before the first deletion)
    resumed: bool = False
    applied: list[Applied] = field(default_factory=list)
    fstab: list[str] = field(default_factory=list)  # what the fstab merge changed, carried or dropped


def reimage(chosen: Surveyed, spec: InplaceSpec, images: Sequence[LoadedImage], deployment_id: str, *,
            fetch: FetchOptions | None = None, allow_devices: bool = False, mount_parent: Path | None = None,
            emit: Callable[[str, str], None] = lambda phase, message: None,
            progress: Callable[[int], None] = lambda n: None) -> InplaceReport:
    """Re-image ``chosen`` in place with ``images`` (a base, then layers); see the module's docstring."""
    part, found = chosen.partition, chosen.os
    assert found is not None and part.fstype is not None
    if found.kind == "windows":
        raise InplaceError(f"partition {part.number} holds {found.describe()}: Windows is re-imaged in place from "
                           "a WIM (image.wim: docs/inplace.md), not from a peagent file image (a Linux tree); "
                           "nothing was changed")
    with mounted(part.path, part.fstype, readonly=False, parent=mount_parent) as root:
        state = read_marker(root)
        resumed = state is not None and state.get("deployment_id") == deployment_id
        check_keeps(root, spec.keep, part.number)
        deletion = plan_deletion(found.kind, spec.keep, lambda rel: listdir(root, rel))
        report = InplaceReport(partition=part.path, os=found, deletion=deletion, resumed=resumed)
        old_fstab = state.get("fstab") if state is not None else None  # the etc/fstab may be gone already
        if resumed:
            emit("inplace", f"resuming the re-image of partition {part.number} begun by this deployment")
        else:
            if state is None:
                old = read_small(root, "etc/fstab")
                old_fstab = old.decode("utf-8", "replace") if old is not None else None
            report.room = measure(root, deletion.delete, sum(i.manifest.size for i in images), spec.headroom)
            emit("inplace", report.room.render())
            check_room(report.room, f"partition {part.number} ({part.path})")
            write_marker(root, {"deployment_id": deployment_id, "fstab": old_fstab,
                                 "os": {"kind": found.kind, "name": found.name, "evidence": found.evidence}})
        emit("delete", f"{part.path}: {'; '.join(deletion.render())}")
        delete_paths(root, deletion.delete)
        emit("apply", f"{part.path}: {', '.join(i.label for i in images)}")
        report.applied = apply_loaded(images, root, fetch=fetch, allow_devices=allow_devices, keep=deletion.keep,
                                      progress=progress)
        new = read_small(root, "etc/fstab")
        source = f"UUID={part.uuid}" if part.uuid else f"PARTUUID={part.part_uuid}" if part.part_uuid else part.path
        text, report.fstab = merge(new.decode("utf-8", "replace") if new is not None else None, old_fstab, source,
                                   part.fstype, deletion.keep)
        write_file(root, "etc/fstab", text.encode())
        for note in report.fstab:
            emit("fstab", note)
        os.unlink(root / MARKER)
        os.sync()
    return report


def read_marker(root: Path) -> dict | None:
    data = read_small(root, MARKER)
    if data is None:
        return None
    try:
        state = json.loads(data)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def write_marker(root: Path, state: dict) -> None:
    write_file(root, MARKER, json.dumps(state, indent=1).encode())


def write_file(root: Path, rel: str, data: bytes) -> None:
    """Writes ``rel`` under ``root`` atomically and durably (temp file, fsync, rename, fsync the directory)."""
    target = Confined(root)
    try:
        parts = tuple(os.fsencode(p) for p in rel.split("/"))
        fd = target.parent(parts[:-1], create=True)
        assert fd is not None
        temp = target.temp_name()
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            os.write(out, data)
            os.fsync(out)
        finally:
            os.close(out)
        os.rename(temp, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
    except OSError as exc:
        raise DeviceError(f"writing {rel} on {root} failed: {exc}") from None
    finally:
        target.close()


def check_keeps(root: Path, keeps: Sequence[str], number: int) -> None:
    """A kept path must be reached through real directories: through a symlink the kept data lies
    elsewhere (and may be deleted with the OS); through a file it names nothing."""
    for keep in keeps:
        here = root
        names = keep.split("/")
        for i, name in enumerate(names[:-1]):
            here = here / name
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                break  # nothing kept there: harmless
            if not stat.S_ISDIR(st.st_mode):
                what = f"a symlink to {os.readlink(here)!r}" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise InplaceError(f"target.inplace.keep {keep!r}: on partition {number}, "
                                   f"{'/'.join(names[:i + 1])} is {what}; keep the path the data really lives "
                                   "at. Nothing was deleted")


def listdir(root: Path, rel: str) -> list[str]:
    """The names in the directory ``rel``; none when it is a symlink or a file (never followed)."""
    path = root / rel
    return os.listdir(path) if stat.S_ISDIR(os.lstat(path).st_mode) else []


def delete_paths(root: Path, paths: Sequence[str]) -> None:
    target = Confined(root)
    rel = ""
    try:
        for rel in paths:
            parts = tuple(os.fsencode(p) for p in rel.split("/"))
            fd = target.parent(parts[:-1], create=False)
            if fd is not None:
                target.remove(fd, parts[:-1], parts[-1])
    except Blocked as blocked:  # the tree changed under us since the deletion was planned
        raise InplaceError(f"deleting the old OS from {root}: {rel!r} is now reached through "
                           f"{blocked.where.decode(errors='replace')!r}, which is {blocked.what}") from None
    except OSError as exc:
        raise DeviceError(f"deleting the old OS from {root} failed at {rel}: {exc}") from None
    finally:
        target.close()
