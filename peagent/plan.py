"""The Plan: everything a deploy will do, computed from its inputs alone before anything happens.

``make_plan(task, inventory, boot_dps)`` checks that the task is meant for this machine, picks
the target disk (peagent.target), checks that the image fits, and resolves where the image
comes from. It touches no device and no network, so ``peagent plan`` can show it, tests can
assert it, and a deploy refuses before its first write when any of it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peagent.errors import ImageError, TaskError, WrongMachineError
from peagent.fetch import candidate_urls
from peagent.inventory import Inventory
from peagent.target import Selection, select_target
from peagent.task import ImageSpec, MachineMatch, Task


@dataclass(frozen=True)
class Plan:
    deployment_id: str
    target: Selection
    image: ImageSpec
    image_urls: tuple[str, ...]
    after: str

    def steps(self) -> list[str]:
        disk = self.target.disk
        size = f"{self.image.size} bytes" if self.image.size else "size known once streaming"
        return [
            f"stream {self.image.url} ({self.image.compression}, {size}) onto {disk.path}",
            f"verify sha256 {self.image.sha256} over every byte written",
            {"reboot": "reboot", "poweroff": "power off", "none": "stay up"}[self.after],
        ]

    def render(self) -> str:
        disk = self.target.disk
        lines = [f"deployment {self.deployment_id}", f"target: {disk.summary()}"]
        lines += [f"  because: {r}" for r in self.target.reasons]
        lines += [f"  not {path}: {why}" for path, why in self.target.excluded]
        lines.append("image sources: " + ", ".join(self.image_urls))
        lines.append("steps:")
        lines += [f"  {i}. {step}" for i, step in enumerate(self.steps(), 1)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "target": {
                "path": self.target.disk.path,
                "serial": self.target.disk.serial,
                "size": self.target.disk.size,
                "reasons": list(self.target.reasons),
                "excluded": [{"path": p, "reason": r} for p, r in self.target.excluded],
            },
            "image": {
                "url": self.image.url,
                "sources": list(self.image_urls),
                "sha256": self.image.sha256,
                "size": self.image.size,
                "compression": self.image.compression,
            },
            "steps": self.steps(),
            "after": self.after,
        }


def make_plan(task: Task, inventory: Inventory, boot_dps: tuple[str, ...] = ()) -> Plan:
    check_machine(task.machine, inventory)
    selection = select_target(inventory, task.target)
    disk = selection.disk
    if task.image.size is not None and task.image.size > disk.size:
        raise ImageError(f"the image ({task.image.size} bytes) is larger than the target "
                         f"{disk.path} ({disk.size} bytes)")
    dps = task.dps or boot_dps
    urls = candidate_urls(task.image.url, dps)
    if not urls:
        raise TaskError("image.url", "an absolute URL, or DPs (the task's dps or the PE's peagent.dp)",
                        f"the relative path {task.image.url!r} and no DPs")
    return Plan(deployment_id=task.deployment_id, target=selection, image=task.image,
                image_urls=tuple(urls), after=task.after)


def check_machine(want: MachineMatch, inventory: Inventory) -> None:
    """Refuse a task meant for another machine; every identity the task gives must match."""
    dmi = inventory.dmi
    if want.mac is not None and want.mac not in inventory.macs():
        raise WrongMachineError(f"the task is for MAC {want.mac}; this machine has "
                                f"{', '.join(inventory.macs()) or 'no network interfaces'}")
    if want.uuid is not None and want.uuid != (dmi.product_uuid or "").lower():
        raise WrongMachineError(f"the task is for SMBIOS UUID {want.uuid}; this machine is "
                                f"{dmi.product_uuid or 'without one'}")
    if want.serial is not None and want.serial != dmi.product_serial:
        raise WrongMachineError(f"the task is for serial {want.serial}; this machine is "
                                f"{dmi.product_serial or 'without one'}")
