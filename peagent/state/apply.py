"""Machine state around a deployment: capture before the wipe, give the new OS its state after.

Two edges of a deploy touch machine state, both mounting partitions of the target disk only:

1. :func:`capture` (before anything is destroyed): each partition that could hold an OS is
   mounted read-only and looked into (peagent.inplace.detect); the one OS found is captured
   (Windows through its registry hives, Linux through its files). Two OSes are ambiguous and
   refused, naming both, while nothing has been written yet. The capture is saved at once
   (peagent.state.document), so a rerun after a crash still has it once the old OS is gone.
2. :func:`give_state` (after the image is written and verified): the partition table is read
   again, the one OS on the disk is found, mounted read-write, and given its state, record and
   first-boot report by the writer for its kind (peagent.state.linux_target, windows_target).
   The boot step (peagent.boot) then needs the partitions, so they are returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from peagent.disk.mount import mounted
from peagent.disk.tools import Runner, run_tool
from peagent.errors import FilesystemError, ImageError, StateError
from peagent.inplace.detect import identify, look_into
from peagent.inventory import Disk, Partition
from peagent.inventory.disks import disks
from peagent.state.capture_linux import capture_linux
from peagent.state.capture_windows import capture_windows
from peagent.state.linux_target import describe_linux, place_linux
from peagent.state.model import Captured, MachineState, Secret
from peagent.state.record import DeploymentRecord
from peagent.state.windows_target import describe_windows, firstboot_powershell, place_windows

log = logging.getLogger("peagent")
REREAD_TRIES = 8


def capture(partitions: Sequence[Partition], *, keep_ssh_keys: bool, keep_root_password: bool,
            parent: Path | None = None) -> Captured | None:
    """The state of the one OS on these partitions; None when there is none; StateError if several."""
    def look(p: Partition, root: Path) -> Captured | None:
        os_found = identify(root)
        try:
            return capture_tree(root, os_found.kind, f"{os_found.name} on {p.path}", keep_ssh_keys=keep_ssh_keys,
                                keep_root_password=keep_root_password)
        except ImageError as exc:
            raise StateError(f"capturing the old OS on {p.path} failed: {exc}; nothing was written") from None

    found: list[Captured] = []
    for p, captured, problem in look_into(partitions, look, parent):
        if problem:
            log.info("capture: %s not looked into: %s", p.path, problem)
        elif captured is not None:
            found.append(captured)
    if len(found) > 1:
        raise StateError("state.migrate: more than one OS to capture from ("
                         + "; ".join(c.source for c in found) + "); nothing was written. Capture from one: "
                         "deploy in place naming its partition (target.inplace.partition), or drop state.migrate")
    return found[0] if found else None


def capture_tree(root: Path, kind: str, source: str, *, keep_ssh_keys: bool,
                 keep_root_password: bool) -> Captured | None:
    """The state of the OS of ``kind`` (peagent.inplace.detect's) mounted at ``root``; None for other kinds."""
    if kind == "linux":
        return capture_linux(root, source, keep_ssh_keys=keep_ssh_keys, keep_root_password=keep_root_password)
    if kind == "windows":
        return capture_windows(root, source)
    return None


def reread_partitions(disk: Disk, runner: Runner = run_tool) -> tuple[Partition, ...]:
    """The disk's partitions as the image just written has them (the kernel told, udev settled)."""
    # Closing a written disk makes udev probe it, and while its probe holds the device the kernel refuses
    # to re-read the table (EBUSY): settle, then retry a few times.
    for attempt in range(REREAD_TRIES):
        runner(["udevadm", "settle", "--timeout=30"], timeout=40)
        result = runner(["blockdev", "--rereadpt", disk.path], timeout=60)
        if result.ok:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        raise StateError(f"the kernel could not read the new partition table of {disk.path}: {result.why()}")
    runner(["udevadm", "settle", "--timeout=30"], timeout=40)
    for d in disks(include_virtual=disk.virtual):
        if d.path == disk.path:
            return d.partitions
    raise StateError(f"{disk.path} is gone after writing the image")


def find_new_os(partitions: Sequence[Partition], parent: Path | None = None) -> tuple[Partition, str, str]:
    """The one partition that holds the new OS: (partition, kind, name); StateError otherwise."""
    oses = [(p, found.kind, found.name) for p, found, _ in look_into(partitions, lambda _, root: identify(root), parent)
            if found is not None and found.kind in ("linux", "windows")]
    if len(oses) != 1:
        what = "; ".join(f"{p.path}: {name}" for p, _, name in oses) or "none"
        raise StateError(f"the written image must hold exactly one OS to give its state to; found {what}")
    return oses[0]


def give_state(partition: Partition, kind: str, state: MachineState, record: DeploymentRecord, *,
               status_url: str | None, token: Secret | None, parent: Path | None = None) -> list[str]:
    """Mount the new OS read-write and write its state, record and first-boot report."""
    try:
        with mounted(partition.path, partition.fstype or "", readonly=False, parent=parent) as root:
            return write_state(root, kind, state, record, status_url=status_url, token=token)
    except FilesystemError as exc:
        raise StateError(f"cannot write the new OS's state on {partition.path}: {exc}") from None


def write_state(root: Path, kind: str, state: MachineState, record: DeploymentRecord, *,
                status_url: str | None, token: Secret | None) -> list[str]:
    """The writers for the OS at ``root`` (mounted read-write); their report lines."""
    try:
        if kind == "windows":
            image = describe_windows(root)
            script = firstboot_powershell(status_url, record.deployment_id, token)
            return place_windows(root, image, state, complete_script=script, record=record.to_json())
        env = {"DEPLOYMENT_ID": record.deployment_id, "STATUS_URL": status_url or ""}
        if token is not None:
            env["TOKEN"] = token.reveal()
        return place_linux(root, describe_linux(root), state, deployment_id=record.deployment_id,
                           record=record.to_json(), firstboot_env=env)
    except ValueError as exc:
        # The writers refuse what the image cannot take (a zone it lacks, static addresses
        # without a network stack): say so as the state step's failure.
        raise StateError(f"the new OS cannot take this state: {exc}") from None
