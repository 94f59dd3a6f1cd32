"""Deciding what to change in the firmware's boot entries so that the new OS boots.

The inputs are the boot state read before any change (peagent.boot.efivars), where the new OS's
loader is (disk, ESP partition number and its partition GUID, loader path) and the partition
GUIDs the target disk had before the wipe. The decisions, each with a reason for the plan and the
status events:

* **Our entry.** An entry that already points at our partition GUID and loader is reused (a
  redeploy of an image that keeps its GUIDs, or a second run of the same step): creating another
  would only add a duplicate. Otherwise a new one is created. A reused entry that is inactive
  (no ``*``) is activated, as the firmware skips inactive entries.
* **Stale entries.** An entry is deleted only if it points at a partition that was on *this*
  disk before the wipe (its GUID is in ``old_partuuids``, and not ours: it is gone), or if it is
  a duplicate of ours (our label, our partition). Entries on other disks, network and firmware
  entries, and the firmware's own device entries are never touched: they belong to someone else
  (another OS, the PXE setup that booted the PE) and the firmware may recreate them anyway.
* **Order.** ``once=False``: ours first in ``BootOrder``, the others after it in their old
  relative order (numbers that name no entry are dropped: efibootmgr refuses to write them), and
  a pending ``BootNext`` for another entry is cleared, as it would win on the next boot.
  ``once=True``: ``BootNext`` is set to ours and ``BootOrder`` stays as it is, so that the machine
  boots the new OS once and then returns to its usual order (e.g. PXE first).

The plan is data; peagent.boot.efi carries it out with efibootmgr.
"""

from __future__ import annotations

from dataclasses import dataclass

from peagent.boot.efivars import BootEntry, BootVars, hexnum

NEW = "new entry"  # how lines name the entry the plan creates: its number is known only once created


@dataclass(frozen=True)
class BootStep:
    """One change: ``action`` is delete, create, reuse, activate, order, next or clear-next.

    ``num`` is the entry acted on (None: the entry this plan creates); ``order`` (for "order")
    are the entries that follow ours in the new BootOrder.
    """

    action: str
    reason: str
    num: int | None = None
    order: tuple[int, ...] = ()

    def line(self, ours: str = NEW) -> str:
        target = f"Boot{hexnum(self.num)}" if self.num is not None else ours
        if self.action == "order":
            what = f"BootOrder := {','.join([ours, *(hexnum(n) for n in self.order)])}"
        elif self.action == "next":
            what = f"BootNext := {ours}"
        elif self.action == "clear-next":
            what = "BootNext cleared"
        else:
            what = f"{self.action} {target}"
        return f"{what}: {self.reason}"


@dataclass(frozen=True)
class BootPlan:
    """What to do, in order: deletions first (they free entry numbers and cannot hit ours),
    then creating or reusing our entry, then BootOrder or BootNext."""

    label: str
    disk: str
    partition: int
    partuuid: str
    loader: str
    once: bool
    reuse: int | None  # the existing entry that is ours; None: create one
    steps: tuple[BootStep, ...]
    existing: frozenset[int]  # entry numbers left after the deletions (to tell the created one)

    @property
    def ours(self) -> str:
        return f"Boot{hexnum(self.reuse)}" if self.reuse is not None else NEW

    def lines(self) -> list[str]:
        head = (f'boot entry "{self.label}": {self.disk} partition {self.partition} ({self.partuuid}) '
                f"{self.loader}, {'next boot only (BootNext)' if self.once else 'first in BootOrder'}")
        return [head, *(f"  {step.line(self.ours)}" for step in self.steps)]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def same_loader(a: str | None, b: str | None) -> bool:
    """Loader paths compared as the firmware does on FAT: case-insensitive, either slash."""
    if a is None or b is None:
        return False

    def norm(p: str) -> str:
        return "\\" + p.replace("/", "\\").strip("\\").casefold()

    return norm(a) == norm(b)


def _stale_reason(entry: BootEntry, label: str, partuuid: str, old: set[str]) -> str | None:
    if entry.partuuid is None:
        return None  # network, firmware and device entries are never ours to delete
    if entry.partuuid in old and entry.partuuid != partuuid:
        return "its partition was on this disk before the wipe and is gone"
    if entry.partuuid == partuuid and entry.label.strip() == label:
        return f'a duplicate of ours (label "{label}", our partition)'
    return None


def plan_boot(vars: BootVars, *, label: str, disk: str, partition: int, partuuid: str, loader: str,
              old_partuuids: set[str], once: bool) -> BootPlan:
    """The steps that make the firmware boot ``loader`` on ``partuuid`` (see the module docstring)."""
    partuuid = partuuid.lower()
    old = {p.lower() for p in old_partuuids}
    label = label.strip()
    loader = "\\" + loader.replace("/", "\\").lstrip("\\")  # firmware paths use backslashes
    identical = [e for e in vars.entries if e.partuuid == partuuid and same_loader(e.loader, loader)]
    # Of several identical entries, keep the one the firmware tries first, preferring an active one.
    rank = {n: i for i, n in enumerate(vars.order)}
    identical.sort(key=lambda e: (not e.active, rank.get(e.num, len(rank)), e.num))
    mine = identical[0] if identical else None

    steps: list[BootStep] = []
    deleted: set[int] = set()
    for entry in vars.entries:
        if mine is not None and entry.num == mine.num:
            continue
        if mine is not None and entry.partuuid == partuuid and same_loader(entry.loader, loader):
            reason: str | None = f"a duplicate of {mine.name} (same partition and loader)"
        else:
            reason = _stale_reason(entry, label, partuuid, old)
        if reason is not None:
            steps.append(BootStep("delete", f"{entry.where()}: {reason}", entry.num))
            deleted.add(entry.num)

    if mine is None:
        steps.append(BootStep("create", f'"{label}" for {loader} on {disk} partition {partition} ({partuuid})'))
    else:
        steps.append(BootStep("reuse", f"{mine.describe()} already boots this loader on this partition", mine.num))
        if not mine.active:
            steps.append(BootStep("activate", "the firmware skips inactive entries", mine.num))

    ours = mine.num if mine is not None else None
    known = {e.num for e in vars.entries} - deleted
    if once:
        steps.append(BootStep("next", "boot the new OS once; BootOrder is left as it is", ours))
    else:
        rest = tuple(dict.fromkeys(n for n in vars.order if n != ours and n in known))
        dropped = [hexnum(n) for n in vars.order if n not in known and n not in deleted]
        reason = "ours first, the others after it in their order"
        if dropped:
            reason += f"; {', '.join(dropped)} dropped (no such entry)"
        unchanged = ours is not None and vars.order == (ours, *rest)
        if not unchanged:
            steps.append(BootStep("order", reason, ours, rest))
        if vars.next is not None and vars.next != ours:
            fate = "which is deleted" if vars.next in deleted else "which would boot once instead of ours"
            steps.append(BootStep("clear-next", f"BootNext names Boot{hexnum(vars.next)}, {fate}"))
    return BootPlan(label, disk, partition, partuuid, loader, once, ours, tuple(steps), frozenset(known))
