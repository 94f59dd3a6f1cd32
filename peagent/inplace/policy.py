"""What an in-place re-image deletes and what it keeps: a documented policy, decided before any deletion.

===========  ==================================================================================
OS           policy
===========  ==================================================================================
Linux        delete everything at the filesystem's root except ``home``, ``srv``, ``lost+found``
             (the filesystem's own) and the task's keeps; the OS is all the rest (``usr``, ``etc``,
             ``var``, ``boot``, ``opt``, ...). Also used for a forced unknown OS.
Windows      delete ``Windows``, ``Program Files``, ``Program Files (x86)``, ``ProgramData``, the
             boot files (``Boot``, ``bootmgr``, ``BOOTNXT``, ``BOOTSECT.BAK``), ``pagefile.sys``,
             ``hiberfil.sys``, ``swapfile.sys``, ``Recovery``, ``PerfLogs``, the
             ``Documents and Settings`` junction and upgrade leftovers (``$WINDOWS.~BT``,
             ``$WINDOWS.~WS``, ``$SysReset``); keep everything else (``Users``, data folders at the
             root, ``$Recycle.Bin``, ``Windows.old``). Names match without regard to case.
===========  ==================================================================================

A keep inside something the policy deletes (``var/lib/pgsql`` on Linux, ``ProgramData/Vendor`` on
Windows) is honoured: that directory is emptied of everything but the way to the keep, instead of
being deleted whole. :func:`plan_deletion` is pure: it sees the tree only through ``listdir``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peagent.inplace.detect import MARKER

LINUX_KEEP = ("home", "srv", "lost+found")
WINDOWS_DELETE = (
    "Windows", "Program Files", "Program Files (x86)", "ProgramData", "Boot", "bootmgr", "BOOTNXT", "BOOTSECT.BAK",
    "pagefile.sys", "hiberfil.sys", "swapfile.sys", "Recovery", "PerfLogs", "Documents and Settings",
    "$WINDOWS.~BT", "$WINDOWS.~WS", "$SysReset",
)


@dataclass(frozen=True)
class Deletion:
    os_kind: str  # the policy used: "linux" or "windows"
    delete: tuple[str, ...]  # paths relative to the root, each removed with all it holds
    keep: tuple[str, ...]  # what stays and what applying the new OS must not touch

    def render(self) -> list[str]:
        return [f"delete ({self.os_kind} policy): {', '.join(self.delete) or 'nothing'}",
                f"keep: {', '.join(self.keep)}"]


def plan_deletion(os_kind: str, keeps: Sequence[str], listdir: Callable[[str], list[str]]) -> Deletion:
    """The paths to delete from a root holding ``os_kind`` ("linux", "windows"; else Linux's policy),
    keeping ``keeps`` (relative paths); ``listdir(rel)`` lists a directory ("" is the root)."""
    windows = os_kind == "windows"
    kept = (*LINUX_KEEP, *keeps) if not windows else tuple(keeps)
    kept = tuple(dict.fromkeys((*kept, MARKER)))
    folded = (lambda s: s.lower()) if windows else (lambda s: s)
    kept_parts = [tuple(folded(p) for p in k.split("/")) for k in kept]
    doomed_top = {folded(n) for n in WINDOWS_DELETE} if windows else None
    delete: list[str] = []

    def walk(rel: str, parts: tuple[str, ...], everything: bool) -> None:
        for name in sorted(listdir(rel)):
            here = (*parts, folded(name))
            path = f"{rel}/{name}" if rel else name
            if any(here[:len(k)] == k for k in kept_parts):
                continue  # kept, with all below it
            leads = any(k[:len(here)] == here and len(k) > len(here) for k in kept_parts)
            doomed = everything or doomed_top is None or folded(name) in doomed_top
            if leads:
                if doomed:
                    walk(path, here, everything=True)
                continue
            if doomed:
                delete.append(path)

    walk("", (), everything=False)
    return Deletion(os_kind="windows" if windows else "linux", delete=tuple(delete),
                    keep=tuple(k for k in kept if k != MARKER))
