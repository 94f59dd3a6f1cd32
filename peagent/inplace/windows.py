"""Windows in place: the old Windows deleted, the users' data moved aside, the new one applied by wimlib.

A Windows that boots needs its metadata (security descriptors, short names, attributes, reparse
points), which only wimlib's NTFS mode writes, onto an *unmounted* volume and only *creating*
names (docs/wim.md measures both). So, on the partition peagent.inplace.detect chose:

1. mounted with ntfs-3g: the deletion decided by the Windows policy (peagent.inplace.policy) and
   the room checked (the image's file bytes, margin, headroom); the marker written (phase
   ``delete``); the old OS deleted; everything left at the root (``Users``, data folders, ...)
   moved into ``peagent.kept`` with ntfs.rename, which keeps every piece of its metadata and costs
   no space; the marker's phase becomes ``apply``;
2. unmounted, and the WIM image applied in NTFS mode (parts and bases as refs);
3. mounted again (phase ``restore``): the kept entries moved back, merged into the new tree, the
   new OS's own entries winning where both have one (``Users\\Public``: the image's); then
   ``peagent.kept`` and the marker removed.

A rerun of the same deployment resumes from the marker's phase: in ``apply``, whatever a cut
apply left at the root (all of it the new OS's: the kept data is in ``peagent.kept``) is
removed and the image applied again; in ``restore``, the restore goes on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from peagent.disk.mount import mounted
from peagent.files import ntfs, wim
from peagent.inplace.detect import MARKER, Surveyed
from peagent.inplace.policy import plan_deletion
from peagent.inplace.reimage import InplaceReport, check_keeps, delete_paths, listdir, read_marker, write_marker
from peagent.inplace.space import check_room, measure
from peagent.inplace.spec import InplaceSpec

KEPT = "peagent.kept"  # where the kept data waits while the new OS is applied


def reimage_windows(chosen: Surveyed, spec: InplaceSpec, image: Path, content: wim.WimImage, refs: Sequence[Path],
                    deployment_id: str, *, mount_parent: Path | None = None,
                    emit: Callable[[str, str], None] = lambda phase, message: None,
                    progress: Callable[[int, int], None] | None = None) -> InplaceReport:
    """Re-image the NTFS partition ``chosen`` in place with the image ``content`` of the WIM ``image``
    (as wim.check_complete found it, with its parts and bases ``refs``)."""
    part, found = chosen.partition, chosen.os
    assert found is not None
    with mounted(part.path, "ntfs", readonly=False, parent=mount_parent) as root:
        state = read_marker(root)
        resumed = state is not None and state.get("deployment_id") == deployment_id
        phase = str(state.get("phase", "delete")) if resumed and state is not None else "delete"
        check_keeps(root, spec.keep, part.number)
        deletion = plan_deletion("windows", spec.keep, lambda rel: listdir(root, rel))
        report = InplaceReport(partition=part.path, os=found, deletion=deletion, resumed=resumed)
        if resumed:
            emit("inplace", f"resuming the re-image of partition {part.number} begun by this deployment "
                 f"(at: {phase})")
        else:
            report.room = measure(root, deletion.delete, content.total_bytes, spec.headroom)
            emit("inplace", report.room.render())
            check_room(report.room, f"partition {part.number} ({part.path})")
        state = {"deployment_id": deployment_id, "os": {"kind": found.kind, "name": found.name,
                                                        "evidence": found.evidence}}
        if phase == "delete":
            write_marker(root, {**state, "phase": "delete"})
            emit("delete", f"{part.path}: {'; '.join(deletion.render())}")
            delete_paths(root, deletion.delete)
            _move_aside(root)
            write_marker(root, {**state, "phase": "apply"})
            phase = "apply"
        elif phase == "apply":  # an apply was cut: what is at the root besides ours is its leftovers
            delete_paths(root, [n for n in os.listdir(root) if n not in (MARKER, KEPT)])
    if phase == "apply":
        emit("apply", f"{part.path}: {image.name} image {content.index} ({content.name}), NTFS mode")
        applied = wim.apply(image, content.index, part.path, refs=refs, ntfs_volume=True, progress=progress)
        for warning in applied.warnings:
            emit("apply", f"wimlib: {warning}")
    with mounted(part.path, "ntfs", readonly=False, parent=mount_parent) as root:
        write_marker(root, {**state, "phase": "restore"})
        if (root / KEPT).exists():  # else a rerun comes after the restore, before the marker went
            _restore(root / KEPT, root, emit)
            os.rmdir(root / KEPT)
        os.unlink(root / MARKER)
    return report


def _move_aside(root: Path) -> None:
    """Everything the deletion left at the root (the kept data) into KEPT, metadata and all."""
    (root / KEPT).mkdir(exist_ok=True)
    for name in os.listdir(root):
        if name not in (MARKER, KEPT):
            ntfs.rename(root / name, root / KEPT / name)


def _restore(kept: Path, into: Path, emit: Callable[[str, str], None], rel: str = "") -> None:
    """Moves what ``kept`` holds into ``into``: an entry the new OS lacks is moved whole; a directory
    both have is merged; anything else of the new OS's wins and the kept one is dropped (reported)."""
    for name in os.listdir(kept):
        src, dst, path = kept / name, into / name, f"{rel}{name}"
        try:
            there = os.lstat(dst)
        except FileNotFoundError:
            ntfs.rename(src, dst)
            continue
        if stat.S_ISDIR(there.st_mode) and stat.S_ISDIR(os.lstat(src).st_mode):
            _restore(src, dst, emit, f"{path}/")
            os.rmdir(src)
        else:
            emit("apply", f"kept {path}: the new OS has its own, which wins; the kept one is dropped")
            _remove(src)


def _remove(path: Path) -> None:
    if stat.S_ISDIR(os.lstat(path).st_mode):
        delete_paths(path.parent, [path.name])
    else:
        os.unlink(path)
