"""Choosing the disk to deploy to, safely, from an inventory and the task's target spec.

Writing to the wrong disk is the worst thing an imaging tool can do, so selection is a pure
function that either returns exactly one disk, with the reasons, or refuses and says why for
every disk it saw. The rules, in order:

1. never the PE's own medium (its USB stick or ISO), a read-only disk, or a disk in use;
2. a removable or USB disk only when the task's hints match it (it was named on purpose);
3. the hints, when given, must match; with no hints, every remaining disk is a candidate;
4. exactly one candidate must remain: none or several is an error listing them. With no hints
   this means the default choice is *the only* eligible disk, never a guess among several
   (unlike "the smallest disk" or "the first one listed").

Whether the chosen disk's data may be destroyed is the plan's decision (peagent.plan), because
only the plan knows what a deploy destroys: everything, or only the partitions a layout drops.
"""

from __future__ import annotations

from dataclasses import dataclass

from peagent.errors import TargetError
from peagent.inventory import Disk, Inventory
from peagent.task import TargetSpec


@dataclass(frozen=True)
class Selection:
    disk: Disk
    reasons: tuple[str, ...]  # why this disk, for the printed plan
    excluded: tuple[tuple[str, str], ...]  # (disk path, why not) for every other disk


def select_target(inventory: Inventory, spec: TargetSpec) -> Selection:
    excluded: list[tuple[str, str]] = []
    candidates: list[Disk] = []
    for disk in inventory.disks:
        why_not = _exclusion(disk, spec)
        if why_not:
            excluded.append((disk.path, why_not))
        else:
            candidates.append(disk)

    hints = spec.hints.describe()
    if not candidates:
        seen = "; ".join(f"{path}: {why}" for path, why in excluded) or "no disks at all"
        raise TargetError(f"no disk is eligible as the target ({hints}). Disks seen: {seen}")
    if len(candidates) > 1:
        listed = "; ".join(d.summary() for d in candidates)
        advice = "narrow the hints" if spec.hints else "add target.hints (e.g. serial) to name one"
        raise TargetError(f"{len(candidates)} disks are eligible ({hints}), refusing to guess: "
                          f"{listed}. {advice}")

    disk = candidates[0]
    reasons = [f"matches {hints}" if spec.hints else "the only eligible disk (no hints given)"]
    found = disk.data_found()
    reasons.append(f"holds data ({', '.join(found)})" if found else
                   "looks blank (no partition table or filesystem)")
    return Selection(disk=disk, reasons=tuple(reasons), excluded=tuple(excluded))


def _exclusion(disk: Disk, spec: TargetSpec) -> str | None:
    """Why this disk cannot be the target, or None."""
    if disk.pe_medium:
        return "the PE's boot medium"
    if disk.read_only:
        return "read-only"
    if disk.in_use:
        return "in use: " + "; ".join(disk.in_use)
    if spec.hints and not spec.hints.matches(disk):
        return f"does not match {spec.hints.describe()}"
    if (disk.removable or disk.transport == "usb") and not spec.hints:
        return "removable or USB (name it in target.hints to use it)"
    return None
