"""The Plan: everything a deploy will do, computed from its inputs alone before anything happens.

``make_plan(task, inventory, boot_dps)`` checks that the task is meant for this machine, picks
the target disk (peagent.target), checks that it supports the erase asked for
(peagent.disk.erase), lays out its partitions (peagent.disk.layout), checks that
the image fits, resolves where the image comes from, and decides whether data would be
destroyed: a whole-disk image or a fresh partition table destroys everything on the disk, a
layout that keeps partitions only what it deletes. Destroying data needs the task's
``target.allow_overwrite``. It touches no device and no network, so ``peagent plan`` can show
it, tests can assert it, and a deploy refuses before its first write when any of it fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from peagent.disk.erase import EraseSpec, check_erase
from peagent.disk.layout import LayoutPlan, plan_layout
from peagent.errors import ImageError, TargetError, TaskError, WrongMachineError
from peagent.fetch import candidate_urls
from peagent.image.job import ImageSource, ManifestSource
from peagent.image.thirdparty import StreamSource
from peagent.inventory import Inventory
from peagent.target import Selection, select_target
from peagent.task import MachineMatch, Task


@dataclass(frozen=True)
class Plan:
    deployment_id: str
    target: Selection
    erase: EraseSpec | None
    erase_steps: tuple[str, ...]  # what the erase does and verifies, from check_erase
    layout: LayoutPlan | None
    image: ImageSource | None
    image_urls: tuple[str, ...]
    destroys: tuple[str, ...]  # the data this deploy overwrites, as found on the disk
    after: str

    def steps(self) -> list[str]:
        disk = self.target.disk
        steps = []
        if self.erase is not None:
            steps += [f"erase {disk.path} ({self.erase.mode}): {line}" for line in self.erase_steps]
        if self.layout is not None:
            steps += [f"partition {disk.path}: {line}" for line in self.layout.render()]
        if isinstance(self.image, ManifestSource):
            trust = f"its pinned sha256 {self.image.pin}" if self.image.pin else "a trusted key's signature"
            steps += [f"load the peagent image {self.image.manifest}, trusted by {trust}; refuse it larger than "
                      f"{disk.path}",
                      f"write it onto {disk.path} frame by frame, each frame's sha256 verified before it is "
                      "written, keeping what the disk already holds"]
        elif self.image is not None:
            size = f"{self.image.size} bytes" if self.image.size else "size known once streaming"
            proofs = [f"sha256 {self.image.sha256}" if self.image.sha256 else "",
                      f"the checksum file {self.image.checksum_url}" if self.image.checksum_url else "",
                      "the bmap's range checksums" if self.image.bmap not in (None, "auto") else ""]
            steps += [f"stream {self.image.url} ({self.image.compression}, {size}) onto {disk.path}",
                      f"verify {' and '.join(p for p in proofs if p)} over every byte written"]
        steps.append({"reboot": "reboot", "poweroff": "power off", "none": "stay up"}[self.after])
        return steps

    def render(self) -> str:
        disk = self.target.disk
        lines = [f"deployment {self.deployment_id}", f"target: {disk.summary()}"]
        lines += [f"  because: {r}" for r in self.target.reasons]
        lines += [f"  not {path}: {why}" for path, why in self.target.excluded]
        if self.destroys:
            lines.append(f"overwrites (allowed by the task): {', '.join(self.destroys)}")
        if self.image_urls:
            lines.append("image sources: " + ", ".join(self.image_urls))
        lines.append("steps:")
        lines += [f"  {i}. {step}" for i, step in enumerate(self.steps(), 1)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        image = None
        if self.image is not None:
            image = {**asdict(self.image), "sources": list(self.image_urls)}
        return {
            "deployment_id": self.deployment_id,
            "target": {
                "path": self.target.disk.path,
                "serial": self.target.disk.serial,
                "size": self.target.disk.size,
                "reasons": list(self.target.reasons),
                "excluded": [{"path": p, "reason": r} for p, r in self.target.excluded],
            },
            "destroys": list(self.destroys),
            "erase": None if self.erase is None else {"mode": self.erase.mode, "method": self.erase.method,
                                                      "samples": self.erase.samples},
            "partitions": None if self.layout is None else self.layout.to_dict(),
            "image": image,
            "steps": self.steps(),
            "after": self.after,
        }


def make_plan(task: Task, inventory: Inventory, boot_dps: tuple[str, ...] = ()) -> Plan:
    check_machine(task.machine, inventory)
    selection = select_target(inventory, task.target)
    disk = selection.disk
    erase_steps: list[str] = []
    if task.target.erase is not None:
        if disk.erase_caps is None:
            raise TargetError(f"{disk.path}: the inventory has no erase capabilities for it (an inventory "
                              "from an older agent?); cannot plan an erase")
        erase_steps = check_erase(task.target.erase, disk.erase_caps)
    layout = plan_layout(task.target.partitions, disk) if task.target.partitions else None
    urls: list[str] = []
    if task.image is not None:
        if isinstance(task.image, StreamSource) and task.image.size is not None and task.image.size > disk.size:
            raise ImageError(f"the image ({task.image.size} bytes) is larger than the target "
                             f"{disk.path} ({disk.size} bytes)")
        field, ref = (("image.manifest", task.image.manifest) if isinstance(task.image, ManifestSource)
                      else ("image.url", task.image.url))
        urls = candidate_urls(ref, task.dps or boot_dps)
        if not urls:
            raise TaskError(field, "an absolute URL, or DPs (the task's dps or the PE's peagent.dp)",
                            f"the relative path {ref!r} and no DPs")
    destroys = tuple(_destroyed(disk.data_found(), layout, task.target.erase is not None))
    if destroys and not task.target.allow_overwrite:
        raise TargetError(f"{disk.summary()} holds data this deploy would destroy ({', '.join(destroys)}); "
                          "set target.allow_overwrite to true to overwrite it")
    return Plan(deployment_id=task.deployment_id, target=selection, erase=task.target.erase,
                erase_steps=tuple(erase_steps), layout=layout, image=task.image, image_urls=tuple(urls),
                destroys=destroys, after=task.after)


def _destroyed(found: list[str], layout: LayoutPlan | None, erase: bool) -> list[str]:
    """What of the data found on the disk the deploy overwrites."""
    if erase or layout is None or layout.fresh:
        return found
    return [f"{p.fstype} on partition {p.number}" for p in layout.deleted if p.fstype]


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
