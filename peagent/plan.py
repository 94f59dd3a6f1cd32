"""The Plan: everything a deploy will do, computed from its inputs alone before anything happens.

``make_plan(task, inventory, boot_dps)`` checks that the task is meant for this machine, picks
the target disk (peagent.target), checks that it supports the erase asked for
(peagent.disk.erase), lays out its partitions (peagent.disk.layout), checks that
the image fits, resolves where the image comes from, and decides whether data would be
destroyed: a whole-disk image or a fresh partition table destroys everything on the disk, a
layout that keeps partitions only what it deletes. Destroying data needs the task's
``target.allow_overwrite``. An in-place re-image (``target.inplace``) instead names the
partitions that may hold the OS to replace: which one does is found by looking into them, the
first thing the deploy does (peagent.inplace). It touches no device and no network, so ``peagent plan`` can show
it, tests can assert it, and a deploy refuses before its first write when any of it fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from peagent.disk.erase import EraseSpec, check_erase
from peagent.disk.layout import LayoutPlan, plan_layout
from peagent.errors import ImageError, InplaceError, TargetError, TaskError, WrongMachineError
from peagent.fetch import candidate_urls
from peagent.image.job import FilesSource, ImageSource, ManifestSource, WimSource
from peagent.image.thirdparty import StreamSource
from peagent.inplace.detect import OS_FILESYSTEMS
from peagent.inplace.policy import LINUX_KEEP, WINDOWS_DELETE
from peagent.inplace.spec import InplaceSpec
from peagent.inventory import Disk, Inventory, Partition
from peagent.state.merge import resolve
from peagent.state.model import REDACTED, DomainJoin, Interface, MachineState
from peagent.state.spec import StateSpec
from peagent.state.template import Identity
from peagent.target import Selection, select_target
from peagent.task import BootSpec, DriversSpec, MachineMatch, Task


@dataclass(frozen=True)
class Plan:
    deployment_id: str
    target: Selection
    erase: EraseSpec | None
    erase_steps: tuple[str, ...]  # what the erase does and verifies, from check_erase
    layout: LayoutPlan | None
    image: ImageSource | FilesSource | WimSource | None
    image_urls: tuple[str, ...]
    destroys: tuple[str, ...]  # the data this deploy overwrites, as found on the disk
    after: str
    inplace: InplaceSpec | None = None
    candidates: tuple[Partition, ...] = ()  # in place: the partitions to look into for the OS
    state_spec: StateSpec | None = None
    state: MachineState | None = None  # the task's state for this machine (templates filled)
    warnings: tuple[str, ...] = ()
    skip_if_deployed: bool = False
    boot: BootSpec = field(default_factory=BootSpec)
    drivers: DriversSpec | None = None

    def steps(self) -> list[str]:
        disk = self.target.disk
        steps = []
        if self.drivers is not None:
            trust = f"its pinned sha256 {self.drivers.index_sha256}" if self.drivers.index_sha256 else \
                "a trusted key's signature"
            steps.append(f"load the driver store's index {self.drivers.index}, trusted by {trust}; refuse before "
                         "anything is written")
        if self.skip_if_deployed:
            steps.append(f"read the deployment records on {disk.path} (read-only); stop here, changing nothing, if "
                         "one shows this very image")
        if self.state_spec is not None and self.state_spec.migrate:
            where = "the partition re-imaged in place" if self.inplace is not None else f"{disk.path}'s partitions"
            steps.append(f"capture the old OS's state from {where} (mounted read-only) before anything is "
                         f"written: {', '.join(self.state_spec.migrate)}; refuse if more than one OS is found")
        if self.erase is not None:
            steps += [f"erase {disk.path} ({self.erase.mode}): {line}" for line in self.erase_steps]
        if self.layout is not None:
            steps += [f"partition {disk.path}: {line}" for line in self.layout.render()]
        if isinstance(self.image, FilesSource | WimSource):
            steps += self._inplace_steps(self.image)
        elif isinstance(self.image, ManifestSource):
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
        if self.image is not None:
            steps += self._state_steps()
        after = {"reboot": "reboot", "poweroff": "power off", "kexec": "kexec into the new OS's kernel",
                 "none": "stay up"}
        steps.append(after[self.after])
        return steps

    def _state_steps(self) -> list[str]:
        given = []
        if self.state is not None:
            given = [f"{name} {_shown(getattr(self.state, name))}" for name in self.state.set_fields()]
        migrate = self.state_spec.migrate if self.state_spec is not None else ()
        given += [f"from the old OS: {', '.join(migrate)}"] if migrate else []
        first = ("find the one OS the image holds and give it " + (f"its state ({'; '.join(given)}), " if given else "")
                 + "a deployment record and a first-boot unit that reports completion under this deployment id")
        if self.state is None:
            first += " (an image without an OS is left as written)"
        if self.drivers is not None:
            need = "every device must get one" if self.drivers.required else "devices without one are reported"
            first = (f"match this machine's devices against the driver index (make/model group first, then Windows' "
                     f"ranking or Linux modaliases; {need}); fetch only the matched packages, every file verified; "
                     "inject them into the new OS (Windows: Drivers folder, DevicePath, pnputil at first boot, "
                     "boot-critical storage registered offline; Linux: modules into updates/, firmware, depmod, the "
                     "initramfs for storage); then " + first)
        entry = repr(self.boot.label) if self.boot.label else "named after the image"
        how = "as a one-time boot (BootNext)" if self.boot.once else "first in BootOrder"
        return [first, f"UEFI: a boot entry {entry} for its loader {how}, the old OS's entries on "
                f"{self.target.disk.path} removed; BIOS: check the disk's boot code"]

    def _inplace_steps(self, image: FilesSource | WimSource) -> list[str]:
        assert self.inplace is not None
        disk = self.target.disk
        parts = ", ".join(f"{p.number} ({p.fstype})" for p in self.candidates)
        pick = ("it holds Linux or Windows" + (", or anything (forced)" if self.inplace.force else "")
                if self.inplace.partition else "exactly one holds an OS (Linux or Windows)")
        keeps = ", ".join((*LINUX_KEEP, *self.inplace.keep))
        if isinstance(image, WimSource):
            wims = " + ".join(w.url for w in image.all)
            return [
                f"fetch {wims} into the PE's memory, every byte verified against its sha256; check that image "
                f"{image.index} and every part and base it needs are there; refuse before anything is deleted",
                f"look into partition {parts} of {disk.path}, mounted read-only; refuse unless {pick}",
                "check that free space plus what the deletion frees holds the new OS with headroom; else refuse",
                f"mark the partition (a rerun resumes), then delete the old Windows ({', '.join(WINDOWS_DELETE[:4])}, "
                "...: docs/inplace.md) and move what stays (Users, ...) aside into peagent.kept",
                f"apply image {image.index} of {image.wim.url} with wimlib in NTFS mode (all Windows metadata kept)",
                "move the kept data back beside the new OS's (the new OS's own entries win)",
            ]
        stack = " + ".join(s.manifest for s in image.all)
        return [
            f"look into partition {parts} of {disk.path}, mounted read-only; refuse unless {pick}",
            f"load the file images {stack} (each a file image trusted by its pin or a signature; layers over the "
            "base's tree); refuse before anything is deleted",
            "check that free space plus what the deletion frees holds the new OS with headroom; else refuse",
            "mark the partition (a rerun resumes), then delete the old OS: Linux everything but "
            f"{keeps}; Windows {', '.join(WINDOWS_DELETE[:4])}, ... (docs/inplace.md)",
            f"apply {stack} into it, frame by frame verified, kept paths untouched",
            "rewrite etc/fstab for this partition, carrying the old OS's swap and mounts of kept data",
        ]

    def render(self) -> str:
        disk = self.target.disk
        lines = [f"deployment {self.deployment_id}", f"target: {disk.summary()}"]
        lines += [f"  because: {r}" for r in self.target.reasons]
        lines += [f"  not {path}: {why}" for path, why in self.target.excluded]
        if self.destroys:
            lines.append(f"overwrites (allowed by the task): {', '.join(self.destroys)}")
        if self.image_urls:
            lines.append("image sources: " + ", ".join(self.image_urls))
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append("steps:")
        lines += [f"  {i}. {step}" for i, step in enumerate(self.steps(), 1)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        image = None
        if self.image is not None:
            image = {**asdict(self.image), "sources": list(self.image_urls)}
        inplace = None
        if self.inplace is not None:
            inplace = {**asdict(self.inplace), "candidates": [p.number for p in self.candidates]}
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
            "inplace": inplace,
            "state": None if self.state is None else self.state.public(),
            "migrate": list(self.state_spec.migrate) if self.state_spec is not None else [],
            "warnings": list(self.warnings),
            "drivers": None if self.drivers is None else asdict(self.drivers),
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
        if isinstance(task.image, FilesSource):
            refs = [(f"image.layers[{i - 1}].manifest" if i else "image.manifest", s.manifest)
                    for i, s in enumerate(task.image.all)]
        elif isinstance(task.image, WimSource):
            refs = [(f"image.refs[{i - 1}].wim" if i else "image.wim", w.url) for i, w in enumerate(task.image.all)]
        elif isinstance(task.image, ManifestSource):
            refs = [("image.manifest", task.image.manifest)]
        else:
            refs = [("image.url", task.image.url)]
        for field, ref in refs:
            found = candidate_urls(ref, task.dps or boot_dps)
            if not found:
                raise TaskError(field, "an absolute URL, or DPs (the task's dps or the PE's peagent.dp)",
                                f"the relative path {ref!r} and no DPs")
            urls += found[:1] if len(refs) > 1 else found
    candidates: tuple[Partition, ...] = ()
    if task.target.inplace is not None:
        candidates = inplace_candidates(task.target.inplace, disk)
        destroys: tuple[str, ...] = ()  # the OS goes, by design; what stays is the policy's (peagent.inplace)
    else:
        destroys = tuple(_destroyed(disk.data_found(), layout, task.target.erase is not None))
    if destroys and not task.target.allow_overwrite:
        raise TargetError(f"{disk.summary()} holds data this deploy would destroy ({', '.join(destroys)}); "
                          "set target.allow_overwrite to true to overwrite it")
    state, warnings = None, []
    if task.state is not None:
        if task.image is None:
            raise TaskError("state", "no state without an image (the state is given to the OS an image writes)",
                            "a state section")
        os_name = task.state.os or ("windows" if isinstance(task.image, WimSource) else None)
        state, warnings = resolve(task.state, Identity.of(inventory), os_name)
    return Plan(deployment_id=task.deployment_id, target=selection, erase=task.target.erase,
                erase_steps=tuple(erase_steps), layout=layout, image=task.image, image_urls=tuple(urls),
                destroys=destroys, after=task.after, inplace=task.target.inplace, candidates=candidates,
                state_spec=task.state, state=state, warnings=tuple(warnings),
                skip_if_deployed=task.skip_if_deployed, boot=task.boot, drivers=task.drivers)


def _shown(value: object) -> str:
    """A state value for the plan: secrets as a placeholder, interfaces by MAC and addresses."""
    if isinstance(value, tuple):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, Interface):
        if not value.addresses:
            return f"{value.mac} DHCP"
        via = f" via {value.gateway}" if value.gateway else ""
        dns = f" dns {' '.join(value.dns)}" if value.dns else ""
        return f"{value.mac} {' '.join(value.addresses)}{via}{dns}"
    if isinstance(value, DomainJoin):
        return f"{value.domain} as {value.username} (password {REDACTED})" + (f" in {value.ou}" if value.ou else "")
    return str(value)


def inplace_candidates(spec: InplaceSpec, disk: Disk) -> tuple[Partition, ...]:
    """The partitions of ``disk`` an in-place re-image looks into: the one named, else every one whose
    filesystem an OS lives on."""
    found = ", ".join(f"{p.number} ({p.fstype or 'no filesystem'})" for p in disk.partitions) or "none"
    if spec.partition is not None:
        named = tuple(p for p in disk.partitions if spec.partition.matches(p))
        if not named:
            raise TaskError("target.inplace.partition", f"a partition of {disk.path} (partitions: {found})",
                            f"{spec.partition.key} {spec.partition.value!r}, which it does not have")
        if named[0].fstype not in OS_FILESYSTEMS:
            held = named[0].fstype or "no filesystem"
            raise InplaceError(f"partition {named[0].number} of {disk.path} holds {held}: an OS to re-image in "
                               f"place lives on {', '.join(OS_FILESYSTEMS)}")
        return named[:1]
    candidates = tuple(p for p in disk.partitions if p.fstype in OS_FILESYSTEMS)
    if not candidates:
        raise InplaceError(f"{disk.path} has no partition an OS could live on ({', '.join(OS_FILESYSTEMS)}); "
                           f"partitions: {found}. Nothing to re-image in place")
    return candidates


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
