"""The new OS's ``etc/fstab`` after an in-place re-image: its own mounts, on this machine's partitions.

The image's fstab names the filesystems of the machine it was built on. After an in-place
re-image the root is the partition that held the old OS, and the old OS's fstab knows this
machine: :func:`merge` (pure) takes the image's fstab and

* points ``/`` at the re-imaged partition (``UUID=``), keeping the image's type and options;
* points every other mount point both fstabs have (``/boot/efi``, ...) at the old OS's source
  for it, which is this machine's partition;
* drops the image's swap (the build machine's) and carries over the old OS's swap, and its mounts
  at or under kept paths (``/home`` on its own
  partition, ``/srv/data``): the user's data stays reachable;
* drops the old OS's other mounts (a separate ``/var`` or ``/boot`` belonged to the old OS and
  would hide the new one's files), saying so in the returned notes.

Lines are split on whitespace as mount(8) does; comments and blank lines of the image's fstab stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    source: str
    mountpoint: str
    fstype: str
    options: str = "defaults"
    dump: str = "0"
    passno: str = "0"

    def line(self) -> str:
        return "\t".join((self.source, self.mountpoint, self.fstype, self.options, self.dump, self.passno))


def parse(text: str) -> list[Entry | str]:
    """Entries, and the other lines (comments, blanks, malformed) as they were."""
    out: list[Entry | str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 3:
            out.append(line)
            continue
        out.append(Entry(*fields[:6]))
    return out


def merge(image_fstab: str | None, old_fstab: str | None, root_source: str, root_fstype: str,
          keep: Sequence[str]) -> tuple[str, list[str]]:
    """The new fstab's text, and notes on what was changed, carried or dropped."""
    new = parse(image_fstab or "")
    old = [e for e in parse(old_fstab or "") if isinstance(e, Entry)]
    old_by_mount = {e.mountpoint: e for e in old}
    notes: list[str] = []
    out: list[str] = []
    mounts: set[str] = set()
    for item in new:
        if isinstance(item, str):
            out.append(item)
            continue
        if item.fstype == "swap":
            notes.append(f"swap {item.source}: the image's (its build machine's) dropped")
            continue
        mounts.add(item.mountpoint)
        if item.mountpoint == "/":
            item = Entry(root_source, "/", item.fstype, item.options, item.dump, item.passno)
        elif item.mountpoint in old_by_mount:
            item = Entry(old_by_mount[item.mountpoint].source, *_tail(item))
            notes.append(f"{item.mountpoint}: this machine's {item.source}")
        out.append(item.line())
    if "/" not in mounts:
        out.append(Entry(root_source, "/", root_fstype, "defaults", "0", "1").line())
        notes.append(f"/: added, {root_source} (the image's fstab had no root entry)")
    carried = []
    for entry in old:
        if entry.fstype != "swap" and (entry.mountpoint in mounts or entry.mountpoint == "/"):
            continue
        if entry.fstype == "swap" or _kept(entry.mountpoint, keep):
            carried.append(entry.line())
            notes.append(f"{entry.mountpoint}: carried over from the old OS ({entry.source})")
        else:
            notes.append(f"{entry.mountpoint}: the old OS's mount of {entry.source} dropped (not kept data)")
    if carried:
        out += ["# carried over from the OS this one replaced in place (peagent)", *carried]
    return "\n".join(out) + "\n", notes


def _tail(e: Entry) -> tuple[str, str, str, str, str]:
    return e.mountpoint, e.fstype, e.options, e.dump, e.passno


def _kept(mountpoint: str, keep: Sequence[str]) -> bool:
    rel = mountpoint.strip("/")
    return any(rel == k or rel.startswith(k + "/") for k in keep)
