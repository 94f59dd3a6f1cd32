"""The deploy's steps around the image that concern the OS, not the disk: before the first write,
the deployment record check and the capture of the old OS's state; after the verified write, the
new OS's state, its deployment record and first-boot report, and its boot entry.

Each step reports what it did as status events and never shows a secret. The order is the
safety argument of peagent.deploy: the record check and the capture only read (partitions
mounted read-only) and may refuse; the state and boot steps come only after the image is
verified, and write only to the new OS's own partitions and the firmware's boot variables.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from peagent.boot.bios import bios_check
from peagent.boot.efi import apply_boot, efi_available, find_loader, read_vars
from peagent.boot.kexec import find_kernel, kexec_load
from peagent.boot.plan import plan_boot
from peagent.disk.mount import mounted
from peagent.drivers import step as drivers_step
from peagent.drivers.step import Loaded
from peagent.errors import StateError, TaskError
from peagent.inventory import Disk, Inventory, Partition
from peagent.plan import Plan
from peagent.state import document
from peagent.state.apply import capture, find_new_os, give_state, reread_partitions
from peagent.state.merge import merge
from peagent.state.model import Captured, MachineState, Secret
from peagent.state.record import ImageIdentity, already_deployed, find_records, new_record
from peagent.state.spec import StateSpec
from peagent.state.template import check_computer_name
from peagent.status import Reporter

log = logging.getLogger("peagent")
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"


@dataclass(frozen=True)
class Context:
    plan: Plan
    reporter: Reporter
    macs: tuple[str, ...]
    status_url: str | None
    work_dir: Path | None  # the PE's /run/peagent: mounts and the saved capture go there
    firmware: bool = False  # this machine's firmware is the target's (in the PE): set boot entries, kexec
    inventory: Inventory | None = None  # this machine's devices, for the drivers
    drivers: Loaded | None = None  # the driver store's index, loaded and trusted before anything was written
    status_token: Secret | None = None  # the task's status.token: the first boot's report carries it

    @property
    def mount_parent(self) -> Path | None:
        return self.work_dir / "mnt" if self.work_dir is not None else None


def skip_if_deployed(ctx: Context, image: ImageIdentity | None) -> bool:
    """True when the disk already runs this very image (its deployment record says so)."""
    if not ctx.plan.skip_if_deployed:
        return False
    if image is None:
        ctx.reporter.emit("record", "skip_if_deployed: this image has no digest to compare records with "
                          "(give image.sha256); deploying")
        return False
    found = find_records(ctx.plan.target.disk.partitions, ctx.mount_parent)
    for f in found:
        if f.record is None:
            ctx.reporter.emit("record", f"{f.partition.path}: unreadable deployment record ({f.problem})")
    hit = already_deployed(found, image)
    if hit is None:
        seen = ", ".join(f"{f.partition.path}: {f.record.image.describe()}" for f in found if f.record) or "none"
        ctx.reporter.emit("record", f"records on the disk: {seen}; {image.describe()} is not deployed there")
        return False
    assert hit.record is not None
    ctx.reporter.emit("skipped", f"{hit.partition.path} already runs {image.describe()} (deployment "
                      f"{hit.record.deployment_id}, {hit.record.deployed_at}); nothing was changed")
    return True


def capture_old(ctx: Context, partitions: Sequence[Partition]) -> Captured | None:
    """The old OS's state (or the one an earlier run of this deployment saved), before any write."""
    spec = ctx.plan.state_spec
    if spec is None or not spec.migrate:
        return None
    saved_at = _saved_capture(ctx)
    try:
        captured = document.restore(saved_at) if saved_at is not None else None
    except ValueError as exc:
        raise StateError(f"the capture an earlier run saved is unreadable: {exc}; delete it to capture again "
                         "(if the old OS is still there)") from None
    if captured is not None:
        ctx.reporter.emit("capture", f"using the state captured earlier by this deployment from {captured.source}")
        return captured
    captured = capture(partitions, keep_ssh_keys=spec.ssh_host_keys == "keep",
                       keep_root_password="admin_password" in spec.migrate, parent=ctx.mount_parent)
    if captured is None:
        ctx.reporter.emit("capture", "no old OS found on the target: nothing to migrate")
        return None
    if saved_at is not None:
        document.save(captured, saved_at)
    ctx.reporter.emit("capture", f"captured {', '.join(captured.state.set_fields()) or 'nothing'} from "
                      f"{captured.source}", data=captured.state.public())
    return captured


def _saved_capture(ctx: Context) -> Path | None:
    return ctx.work_dir / f"captured-{ctx.plan.deployment_id}.json" if ctx.work_dir is not None else None


def finish(ctx: Context, disk: Disk, image: ImageIdentity, captured: Captured | None, after: str, *,
           partitions: Sequence[Partition] | None = None, os_partitions: Sequence[Partition] | None = None) -> None:
    """State, record and boot entry for the OS now on ``disk``. ``partitions`` are the disk's (None: read
    again, as a whole-disk image brings its own table); the OS is looked for in ``os_partitions`` (in place:
    the one re-imaged), by default all of them. Without a state in the task, an image that holds no OS is
    fine: it gets nothing."""
    plan = ctx.plan
    try:
        if partitions is None:
            partitions = reread_partitions(disk)
        partition, kind, name = find_new_os(partitions if os_partitions is None else os_partitions,
                                            ctx.mount_parent)
    except StateError as exc:
        if plan.state is not None or after == "kexec":
            raise
        ctx.reporter.emit("state", f"no state, record or boot entry: {exc}")
        return
    ctx.reporter.emit("state", f"the new OS: {name} on {partition.path}")
    given = plan.state or MachineState()
    if kind == "windows" and given.computer_name is not None:
        check_computer_name(given.computer_name, "windows", "state.computer_name")
    if after == "kexec" and kind != "linux":
        raise TaskError("after", "kexec only into a Linux OS", f"kexec, and the new OS is {name}")
    merged = merge(given, plan.state_spec or StateSpec(MachineState()), captured, ctx.macs)
    for line in merged.lines():
        ctx.reporter.emit("state", line)
    state = merged.state
    commands = _inject_drivers(ctx, partition, kind)
    if commands:  # Windows finishes installing its drivers at the first boot, before the task's own commands
        state = state.but(first_boot_commands=(*commands, *state.first_boot_commands))
    # The record carries the deployment's events up to now: the machine keeps its own history.
    record = new_record(plan.deployment_id, image, status_url=ctx.status_url, state=state.public(),
                        events=ctx.reporter.events())
    for line in give_state(partition, kind, state, record, status_url=ctx.status_url, token=ctx.status_token,
                           parent=ctx.mount_parent):
        ctx.reporter.emit("state", line)
    saved = _saved_capture(ctx)
    if saved is not None:
        saved.unlink(missing_ok=True)  # the new OS has it now; its secrets need not stay in the PE
    if not ctx.firmware:
        ctx.reporter.emit("boot", "boot entries left alone: not running in the PE (the firmware here is not the "
                          "target's)")
        return
    _boot_entry(ctx, disk, partitions, image, name)
    if after == "kexec":
        with mounted(partition.path, partition.fstype or "", readonly=True, parent=ctx.mount_parent) as root:
            target = find_kernel(root)
            if target is None:
                raise StateError(f"after kexec: no kernel and initrd found in {name}'s /boot")
            # Loaded now, while the root is mounted; PID 1 (/init) executes it after the agent exits.
            kexec_load(target)
        ctx.reporter.emit("boot", f"kexec: {target.kernel} loaded; /init starts it")


def _inject_drivers(ctx: Context, partition: Partition, kind: str) -> list[str]:
    spec = ctx.plan.drivers
    if spec is None or ctx.drivers is None or ctx.inventory is None:
        return []
    work = (ctx.work_dir or Path(tempfile.gettempdir())) / "drivers"
    with mounted(partition.path, partition.fstype or "", readonly=False, parent=ctx.mount_parent) as root:
        return drivers_step.inject(root, kind, ctx.drivers, ctx.inventory, spec, work, ctx.reporter.emit)


def _boot_entry(ctx: Context, disk: Disk, partitions: Sequence[Partition], image: ImageIdentity,
                os_name: str) -> None:
    if not efi_available():
        for line in bios_check(disk.path):
            ctx.reporter.emit("boot", line)
        return
    esps = [p for p in partitions if (p.type_guid or "").lower() == ESP_TYPE]
    if len(esps) != 1 or not esps[0].part_uuid:
        ctx.reporter.emit("boot", f"UEFI: {len(esps)} EFI system partitions on {disk.path}: no boot entry set; the "
                          "firmware's own search decides")
        return
    esp = esps[0]
    with mounted(esp.path, "vfat", readonly=True, parent=ctx.mount_parent) as root:
        loader = find_loader(root)
    if loader is None:
        ctx.reporter.emit("boot", f"UEFI: no boot loader on {esp.path}: no boot entry set")
        return
    old = {p.part_uuid.lower() for p in disk.partitions if p.part_uuid}
    now = {p.part_uuid.lower() for p in partitions if p.part_uuid}
    boot = plan_boot(read_vars(), label=ctx.plan.boot.label or image.name or os_name, disk=disk.path,
                     partition=esp.number, partuuid=esp.part_uuid.lower(), loader=loader,
                     old_partuuids=old - now, once=ctx.plan.boot.once)
    for line in apply_boot(boot):
        ctx.reporter.emit("boot", line)
