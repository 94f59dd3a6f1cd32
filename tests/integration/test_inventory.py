"""The inventory against real block devices: loop devices are virtual (listed only when asked),
and a mounted one is in use, so no deploy can pick it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from peagent.inventory import collect

pytestmark = pytest.mark.root


def test_loop_devices_are_virtual_and_a_mounted_one_is_in_use(loop, tmp_path: Path) -> None:
    device = loop(64 << 20)
    name = os.path.basename(device)
    assert name not in [d.name for d in collect().disks]
    subprocess.run(["mkfs.ext4", "-q", "-L", "INUSE", device], check=True)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    subprocess.run(["mount", device, str(mountpoint)], check=True)
    try:
        disk = next(d for d in collect(include_virtual=True).disks if d.name == name)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    # Signatures come from udev's database, which this host's tests cannot count on (no udev
    # daemon here); the VM tests cover them. Sizes, virtual and in-use come from sysfs and the kernel.
    assert disk.virtual and disk.size == 64 << 20
    assert disk.in_use == (f"{device} is mounted on {mountpoint}",)
